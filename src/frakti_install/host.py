"""The one door to the machine: commands, files and their backups.

Every side effect goes through a Host, so logging, redaction of secrets,
backups, the journal and tests hook in at one place. Paths are absolute
paths on the target; `root` lets tests point the host at a scratch tree.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Callable, Dict, FrozenSet, Iterator, List, Mapping, Optional, Sequence, Tuple

from frakti_install import fsio
from frakti_install.errors import CommandFailed
from frakti_install.state import (
    InstallProgress,
    Journal,
    RunLock,
    UndoLog,
    install_progress,
    undo_log,
    wait_for_locks,
)

log = logging.getLogger("frakti_install.host")

REDACTED = "<redacted>"
WITHHELD = "<stdout withheld: it holds a secret>\n"


@dataclass(frozen=True)
class CommandResult:
    argv: List[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# A runner executes one argv; tests swap in a fake one.
Runner = Callable[
    [Sequence[str], Optional[Mapping[str, str]], Optional[str], Optional[float]], CommandResult
]


# After Ctrl-C, how long a command given SIGINT may take to exit before SIGKILL.
INTERRUPT_GRACE = 10.0


def subprocess_runner(
    argv: Sequence[str],
    env: Optional[Mapping[str, str]],
    input: Optional[str],
    timeout: Optional[float],
) -> CommandResult:
    """Run argv in a session of its own, so that a Ctrl-C in the terminal (or
    a signal to our process group) reaches only us: we decide what the child
    gets. On KeyboardInterrupt the child is given SIGINT (as the terminal
    would have), waited for, killed after INTERRUPT_GRACE, and reaped before
    the interrupt goes on: no command outlives the run."""
    full_env = dict(os.environ, LC_ALL="C", **(env or {}))
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            start_new_session=True,
        )
    except FileNotFoundError:
        return CommandResult(list(argv), 127, "", f"{argv[0]}: command not found")
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc, grace=0)
        stdout, stderr = proc.communicate()
        return CommandResult(list(argv), 124, stdout or "", f"timed out after {timeout} s")
    except BaseException:  # KeyboardInterrupt (Ctrl-C, or SIGTERM made one)
        _stop(proc, grace=INTERRUPT_GRACE)
        raise
    return CommandResult(list(argv), proc.returncode, stdout, stderr)


def _stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGINT to the child's process group, SIGKILL after `grace` s; reaped."""
    if grace > 0 and proc.poll() is None:
        _signal_group(proc, signal.SIGINT)
        # a second Ctrl-C ends the polite wait
        with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.wait(timeout=grace)
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # its own session: the group is its pid


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemctl stop, kill) stops a run as Ctrl-C does: a
    KeyboardInterrupt, so its command is waited for and it exits 12."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupts_deferred(what: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM while the block runs (a package manager's
    transaction) is held back until it is over, then raised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: List[int] = []

    def hold(signum: int, frame: Optional[FrameType]) -> None:
        if not caught:
            log.warning(
                "interrupted: waiting for '%s' to finish first (stopped half-way it would "
                "leave packages half-configured)", what,
            )  # fmt: skip
        caught.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt


@dataclass(frozen=True)
class PackageGuard:
    """The package manager's commands: each waits for its locks (held by
    another install) up to `wait` seconds, and is never interrupted half-way."""

    commands: FrozenSet[str]
    lock_files: Tuple[str, ...]  # target paths
    wait: float
    # (the command, the items added at the end of its line; {seconds} is `wait`)
    wait_option: Optional[Tuple[str, Tuple[str, ...]]] = None

    def guards(self, argv: Sequence[str]) -> bool:
        return os.path.basename(argv[0]) in self.commands

    def with_wait_option(self, argv: Sequence[str]) -> List[str]:
        if self.wait_option is None or os.path.basename(argv[0]) != self.wait_option[0]:
            return list(argv)
        return [*argv, *(item.format(seconds=int(self.wait)) for item in self.wait_option[1])]


@dataclass(frozen=True)
class FileChange:
    path: str
    created: bool
    backup: Optional[str]


@dataclass
class Host:
    root: Path = Path("/")
    runner: Runner = subprocess_runner
    backup_dir: Optional[str] = None  # where replaced files are kept (a target path)
    # Told of every change (files written or removed, notes): the journal.
    on_change: Optional[Callable[[Dict[str, object]], None]] = None
    secrets: List[str] = field(default_factory=list)
    package_guard: Optional[PackageGuard] = None

    # --- paths -----------------------------------------------------------
    def _local(self, target: str) -> Path:
        """The local path of a target path (differs from it only under a test root).

        Private: everything outside the Host names target paths only."""
        return self.root / target.lstrip("/")

    # --- commands --------------------------------------------------------
    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, REDACTED)
        return text

    def add_secret(self, secret: str) -> None:
        self.secrets.append(secret)

    def note(self, **event: object) -> None:
        """Tell the journal what was done that is not a file (a service
        enabled, packages installed), so reset can undo it."""
        self._notify(dict(event))

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        env: Optional[Mapping[str, str]] = None,
        input: Optional[str] = None,
        timeout: Optional[float] = None,
        secret_output: bool = False,
    ) -> CommandResult:
        """secret_output: stdout holds a secret not known before the command ran
        (a token kubeadm generates): it is neither logged nor shown on failure."""
        guard = self.package_guard
        guarded = guard is not None and guard.guards(argv)
        if guard is not None and guarded:
            wait_for_locks(
                {path: self._local(path) for path in guard.lock_files}, guard.wait,
                holder="another package manager run (an install, an automatic update)",
            )  # fmt: skip
            argv = guard.with_wait_option(argv)
        shown = self.redact(" ".join(argv))
        started = time.monotonic()
        with interrupts_deferred(shown) if guarded else contextlib.nullcontext():
            result = self.runner(argv, env, input, timeout)
        stdout = WITHHELD if secret_output else result.stdout
        log.debug(
            "$ %s -> %s in %.2fs\n%s%s",
            shown,
            result.returncode,
            time.monotonic() - started,
            self.redact(stdout),
            self.redact(result.stderr),
        )
        if check and not result.ok:
            raise CommandFailed(
                [self.redact(a) for a in argv],
                result.returncode,
                self.redact(stdout + result.stderr),
            )
        return result

    def which(self, name: str) -> Optional[str]:
        for directory in (
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ):
            candidate = f"{directory}/{name}"
            if os.access(self._local(candidate), os.X_OK):
                return candidate
        return None

    # --- files -----------------------------------------------------------
    def read_bytes(self, target: str) -> Optional[bytes]:
        try:
            return self._local(target).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_text(self, target: str) -> Optional[str]:
        data = self.read_bytes(target)
        return None if data is None else data.decode("utf-8", errors="replace")

    def stat(self, target: str) -> Optional[os.stat_result]:
        try:
            return self._local(target).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self, target: str) -> bool:
        """True for anything at target, a dangling link included."""
        return os.path.lexists(self._local(target))

    def sha256(self, target: str) -> str:
        """The sha256 of a file, read in chunks (a 100 MB file costs no memory)."""
        return fsio.sha256_of(self._local(target))

    def lstat(self, target: str) -> Optional[os.stat_result]:
        try:
            return os.lstat(self._local(target))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def is_dir(self, target: str) -> bool:
        """A directory, not a link to one."""
        st = self.lstat(target)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def is_mount(self, target: str) -> bool:
        return os.path.ismount(self._local(target))

    def readlink(self, target: str) -> Optional[str]:
        """What the symlink at target points to; None when target is no symlink."""
        try:
            return os.readlink(self._local(target))
        except (FileNotFoundError, NotADirectoryError, OSError):
            return None

    def access(self, target: str, mode: int) -> bool:
        """os.access for this process (R_OK, W_OK, X_OK)."""
        return os.access(self._local(target), mode)

    def free_bytes(self, target: str) -> int:
        """Free space for root on the filesystem holding target (or its nearest parent)."""
        path = self._local(target)
        while not path.exists() and path != path.parent:
            path = path.parent
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    def mkdir(self, target: str, mode: int = 0o755) -> None:
        """The directory and its parents (existing ones are left as they are)."""
        self._local(target).mkdir(parents=True, exist_ok=True, mode=mode)

    def touch(self, target: str, mode: int = 0o600) -> None:
        """An empty marker file (its parents made 0700); kept as it is if present."""
        path = self._local(target)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=mode)

    def write_secret(self, target: str, content: bytes) -> None:
        """Atomically put a file that holds a secret at target, mode 0600 from its
        creation, its directory made 0700. Neither backed up nor journaled: a
        backup or a journal entry would keep the secret after the file is gone."""
        path = self._local(target)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with fsio.staged(path, 0o600) as out:
            out.write(content)

    def remove_secret(self, target: str) -> None:
        """Remove a file made by write_secret() (no backup, no journal)."""
        self._local(target).unlink(missing_ok=True)

    def unlink_marker(self, target: str) -> None:
        """Remove a marker file made by touch() (no backup, no journal: it is ours)."""
        self._local(target).unlink(missing_ok=True)

    def listdir(self, target: str) -> List[str]:
        try:
            return sorted(os.listdir(self._local(target)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def write_file(self, target: str, content: bytes, mode: int = 0o644) -> FileChange:
        """Atomically put `content` at `target` with `mode`, backing up what it replaces."""
        return self._commit(target, mode, lambda out: out.write(content))

    def install_file(self, source: Path, target: str, mode: int = 0o755) -> FileChange:
        """Atomically copy a local file (a verified download) to `target`."""

        def copy(out: IO[bytes]) -> None:
            with open(source, "rb") as src:
                shutil.copyfileobj(src, out, fsio.CHUNK_SIZE)

        return self._commit(target, mode, copy)

    def write_stream(self, source: IO[bytes], target: str, mode: int = 0o755) -> FileChange:
        """Atomically put what `source` yields (an archive member) at `target`."""
        return self._commit(
            target, mode, lambda out: shutil.copyfileobj(source, out, fsio.CHUNK_SIZE)
        )

    def symlink(self, target: str, points_to: str) -> FileChange:
        """Atomically make target a symlink to points_to (a file in its place is
        backed up and replaced); journaled like a written file."""
        parent = self._parent(target)
        created = not self.exists(target)
        backup = None if created else self._backup(target)
        tmp = parent / f".{os.path.basename(target)}.{os.getpid()}.link"
        tmp.unlink(missing_ok=True)
        os.symlink(points_to, tmp)
        try:
            os.replace(tmp, self._local(target))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(parent)
        self._notify_file("write", target, created=created, backup=backup)
        return FileChange(target, created, backup)

    def replace_dir_with_link(self, target: str, points_to: str, aside: str) -> FileChange:
        """Make the directory `target` a symlink to points_to, the directory moved
        to `aside` (a new name on the same filesystem): the link is made at `aside`,
        then the two names are exchanged in one step where the kernel and filesystem
        can (fsio.exchange), so `target` is never missing; else two renames. Killed
        at any point, what is left at `aside` is the link or the directory.
        Journaled as a link frakti-install created."""
        self._parent(target)
        staged = self._local(aside)
        self._parent(aside)
        os.symlink(points_to, staged)
        if not fsio.exchange(staged, self._local(target)):
            link = staged.with_name(staged.name + ".link")
            os.rename(staged, link)
            os.rename(self._local(target), staged)
            os.replace(link, self._local(target))
        fsio.fsync_dir(self._local(target).parent)
        fsio.fsync_dir(staged.parent)
        self._notify_file("write", target, created=True, backup=None)
        return FileChange(target, True, None)

    def remove(self, target: str) -> Optional[str]:
        """Remove a file, keeping a backup; returns the backup's target path."""
        if not self.exists(target):
            return None
        backup = self._backup(target)
        os.unlink(self._local(target))
        self._notify_file("remove", target, backup=backup)
        return backup

    def remove_tree(self, target: str) -> None:
        """Delete a directory of runtime data (no backup). A mount point is emptied."""
        path = self._local(target)
        if not self.is_dir(target):
            return
        if os.path.ismount(path):
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        else:
            shutil.rmtree(path)
        self._notify_file("remove-tree", target)

    # --- the state directory's own files ------------------------------------
    def run_lock(self, target: str, wait: float) -> RunLock:
        return RunLock(self._local(target), wait)

    def open_journal(self, target: str) -> Journal:
        return Journal(self._local(target))

    def undo_log(self, journal: str) -> UndoLog:
        return undo_log(self._local(journal))

    def install_progress(self, journal: str) -> Optional[InstallProgress]:
        return install_progress(self._local(journal))

    def _parent(self, target: str) -> Path:
        parent = self._local(target).parent
        parent.mkdir(parents=True, exist_ok=True)
        return parent

    def _commit(self, target: str, mode: int, write: Callable[[IO[bytes]], object]) -> FileChange:
        """Write the new content to a temp file beside target (write(out)), back up
        the old file, then rename onto it; on any failure target is unchanged and
        the temp file gone (fsio.staged). The journal hears of it afterwards."""
        self._parent(target)
        with fsio.staged(self._local(target), mode) as out:
            write(out)
            created = not self.exists(target)
            backup = None if created else self._backup(target)
        change = FileChange(target, created, backup)
        self._notify_file("write", target, created=created, backup=backup)
        return change

    def _backup(self, target: str) -> Optional[str]:
        if self.backup_dir is None or not os.path.isfile(self._local(target)):
            return None
        backup = f"{self.backup_dir.rstrip('/')}/{target.lstrip('/')}"
        destination = self._local(backup)
        destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(self._local(target), destination)
        return backup

    def _notify_file(self, action: str, target: str, **details: object) -> None:
        self._notify({"event": "file", "action": action, "path": target, **details})

    def _notify(self, event: Dict[str, object]) -> None:
        if self.on_change is not None:
            self.on_change(event)


_fsync_dir = fsio.fsync_dir  # one helper for every rename (symlink() uses it)
