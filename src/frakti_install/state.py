"""The state directory: a lock so runs never overlap, and a journal of what
each run did (one JSON object per line; reset reads it to undo our changes)."""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Union

from frakti_install.errors import Locked
from frakti_install.polling import NotYet, poll_until

log = logging.getLogger(__name__)

LOCK_POLL_INTERVAL = 0.25  # seconds between two tries of a taken lock


class Journal:
    def __init__(self, path: Optional[Path]) -> None:
        self.path = path
        self.run_id = (
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ-")
            + (uuid.uuid4().hex[:6])
        )
        self._handle: Optional[IO[str]] = None

    def record(self, **fields: Any) -> None:
        if self.path is None:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._handle = os.fdopen(fd, "a", encoding="utf-8")
        entry = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "run": self.run_id,
            **fields,
        }
        # One line per write, flushed: a killed run leaves whole lines behind.
        self._handle.write(json.dumps(entry, default=str) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_journal(path: Path) -> Iterator[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # a torn last line from a killed run
    except FileNotFoundError:
        return


@dataclass
class UndoLog:
    """What the runs since the last reset changed, in the order they did it."""

    files: Dict[str, Optional[str]] = field(default_factory=dict)  # path -> first backup
    units: List[str] = field(default_factory=list)  # units we enabled
    packages: List[str] = field(default_factory=list)  # packages we installed
    trees: List[str] = field(default_factory=list)  # directories we made, removed whole


def undo_log(path: Path) -> UndoLog:
    log = UndoLog()
    for entry in read_journal(path):
        event = entry.get("event")
        if event == "reset-done":
            log = UndoLog()
        elif event == "file" and entry.get("action") == "write":
            # the first write tells whether the file was ours (created) or whose
            # original we must put back (its backup)
            log.files.setdefault(str(entry["path"]), entry.get("backup"))
        elif event == "service" and entry.get("unit") not in log.units:
            log.units.append(str(entry["unit"]))
        elif event == "tree" and entry.get("path") not in log.trees:
            log.trees.append(str(entry["path"]))
        elif event == "packages":
            log.packages += [p for p in entry.get("installed", []) if p not in log.packages]
    return log


class RunLock:
    """An exclusive flock on state_dir/lock, held for the whole run. A run
    that finds it taken waits up to `wait` seconds (the routes timer's runs
    are short), then gives up."""

    def __init__(
        self,
        path: Path,
        wait: float = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = path
        self.wait = wait
        self._clock = clock
        self._sleep = sleep
        self._fd: Optional[int] = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        warned = False

        def acquired() -> Union[bool, NotYet]:
            nonlocal warned
            if self._try_lock(fd):
                return True
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            if self.wait > 0 and not warned:
                log.warning("waiting for another frakti-install run (pid %s) to finish", holder)
                warned = True
            return NotYet(holder)

        def locked(holder: str) -> Locked:
            return Locked(
                f"another frakti-install run (pid {holder}) holds {self.path}",
                hint="Wait for it to finish. The lock goes away with its process, "
                "so a killed run never leaves it behind.",
            )

        try:
            poll_until(
                acquired,
                timeout=self.wait,
                interval=LOCK_POLL_INTERVAL,
                what=f"the lock {self.path}",
                on_timeout=locked,
                clock=self._clock,
                sleep=self._sleep,
            )
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    @staticmethod
    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_is_held(path: Path) -> bool:
    """Another process holds an fcntl lock on `path` (as dpkg, apt and rpm
    take theirs). Tested by taking the lock and letting it go at once; a
    missing file is no lock."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return True
            raise
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def wait_for_locks(
    paths: Dict[str, Path],
    wait: float,
    *,
    holder: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait up to `wait` seconds until no other process holds any of the locks
    (shown name -> local path); Locked when one is still held then."""
    warned = False

    def free() -> Union[bool, NotYet]:
        nonlocal warned
        held = [name for name, path in paths.items() if lock_is_held(path)]
        if not held:
            return True
        if not warned:
            log.warning("waiting up to %s s for %s to let go of %s", wait, holder, held[0])
            warned = True
        return NotYet(held[0])

    def locked(name: str) -> Locked:
        return Locked(
            f"{name} was still locked by another process ({holder}) after {wait:g} s",
            hint="Let that install finish (ps -ef shows it), or raise lock_wait; "
            "then run the same command again.",
        )

    poll_until(
        free, timeout=wait, interval=LOCK_POLL_INTERVAL, what=f"{holder}'s lock",
        on_timeout=locked, clock=clock, sleep=sleep,
    )  # fmt: skip


# The first step of every install plan (allinone, node); other plans
# (routes, reset) start otherwise.
INSTALL_FIRST_STEP = "preflight"
DONE_EVENTS = ("ok", "change", "skip")


@dataclass(frozen=True)
class InstallProgress:
    """How far the installs since the last reset got, from the journal."""

    planned: List[str]  # the steps of the last install run
    done: List[str]  # those an install run since the last reset finished

    @property
    def not_done(self) -> List[str]:
        return [step for step in self.planned if step not in self.done]


def install_progress(path: Path) -> Optional[InstallProgress]:
    """None when no install ran since the last reset (or ever)."""
    planned: Optional[List[str]] = None
    done: List[str] = []
    installing = False
    for entry in read_journal(path):
        event = entry.get("event")
        if event == "reset-done":
            planned, done, installing = None, [], False
        elif event == "run-start":
            command = [str(step) for step in entry.get("command") or []]
            installing = command[:1] == [INSTALL_FIRST_STEP]
            if installing:
                planned = command
        elif installing and event in DONE_EVENTS and entry.get("step") not in done:
            done.append(str(entry.get("step")))
    if planned is None:
        return None
    return InstallProgress(planned, done)
