"""The one door to the machine: commands, files and their backups.

Every side effect goes through a Host, so logging, redaction of secrets,
backups, the journal and tests hook in at one place. Paths are absolute
paths on the target; `root` lets tests point the host at a scratch tree.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from frakti_install.errors import CommandFailed

log = logging.getLogger("frakti_install.host")

REDACTED = "<redacted>"


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


def subprocess_runner(
    argv: Sequence[str],
    env: Optional[Mapping[str, str]],
    input: Optional[str],
    timeout: Optional[float],
) -> CommandResult:
    full_env = dict(os.environ, LC_ALL="C", **(env or {}))
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return CommandResult(list(argv), 127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return CommandResult(list(argv), 124, out, f"timed out after {timeout} s")
    return CommandResult(list(argv), proc.returncode, proc.stdout, proc.stderr)


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
    on_change: Optional[Callable[[Dict[str, object]], None]] = None
    secrets: List[str] = field(default_factory=list)

    # --- paths -----------------------------------------------------------
    def path(self, target: str) -> Path:
        """The local path of a target path (differs from it only under a test root)."""
        return self.root / target.lstrip("/")

    # --- commands --------------------------------------------------------
    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, REDACTED)
        return text

    def add_secret(self, secret: str) -> None:
        self.secrets.append(secret)

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        env: Optional[Mapping[str, str]] = None,
        input: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> CommandResult:
        shown = self.redact(" ".join(argv))
        started = time.monotonic()
        result = self.runner(argv, env, input, timeout)
        log.debug(
            "$ %s -> %s in %.2fs\n%s%s",
            shown,
            result.returncode,
            time.monotonic() - started,
            self.redact(result.stdout),
            self.redact(result.stderr),
        )
        if check and not result.ok:
            raise CommandFailed(
                [self.redact(a) for a in argv],
                result.returncode,
                self.redact(result.stdout + result.stderr),
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
            if os.access(self.path(candidate), os.X_OK):
                return candidate
        return None

    # --- files -----------------------------------------------------------
    def read_bytes(self, target: str) -> Optional[bytes]:
        try:
            return self.path(target).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_text(self, target: str) -> Optional[str]:
        data = self.read_bytes(target)
        return None if data is None else data.decode("utf-8", errors="replace")

    def stat(self, target: str) -> Optional[os.stat_result]:
        try:
            return self.path(target).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self, target: str) -> bool:
        return os.path.lexists(self.path(target))

    def listdir(self, target: str) -> List[str]:
        try:
            return sorted(os.listdir(self.path(target)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def write_file(self, target: str, content: bytes, mode: int = 0o644) -> FileChange:
        """Atomically put `content` at `target` with `mode`, backing up what it replaces."""
        with tempfile.NamedTemporaryFile(dir=self._parent(target), delete=False) as tmp:
            tmp.write(content)
            tmp.flush()
            os.fsync(tmp.fileno())
        return self._commit(Path(tmp.name), target, mode)

    def install_file(self, source: Path, target: str, mode: int = 0o755) -> FileChange:
        """Atomically copy a local file (a verified download) to `target`."""
        parent = self._parent(target)
        fd, tmp_name = tempfile.mkstemp(dir=parent)
        with os.fdopen(fd, "wb") as tmp, open(source, "rb") as src:
            shutil.copyfileobj(src, tmp, 1 << 20)
            tmp.flush()
            os.fsync(tmp.fileno())
        return self._commit(Path(tmp_name), target, mode)

    def remove(self, target: str) -> Optional[str]:
        """Remove a file, keeping a backup; returns the backup's target path."""
        if not self.exists(target):
            return None
        backup = self._backup(target)
        os.unlink(self.path(target))
        self._notify({"action": "remove", "path": target, "backup": backup})
        return backup

    def remove_tree(self, target: str) -> None:
        """Delete a directory of runtime data (no backup). A mount point is emptied."""
        path = self.path(target)
        if not path.is_dir() or path.is_symlink():
            return
        if os.path.ismount(path):
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        else:
            shutil.rmtree(path)
        self._notify({"action": "remove-tree", "path": target})

    def _parent(self, target: str) -> Path:
        parent = self.path(target).parent
        parent.mkdir(parents=True, exist_ok=True)
        return parent

    def _commit(self, tmp: Path, target: str, mode: int) -> FileChange:
        try:
            os.chmod(tmp, mode)
            created = not self.exists(target)
            backup = None if created else self._backup(target)
            os.replace(tmp, self.path(target))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path(target).parent)
        change = FileChange(target, created, backup)
        self._notify({"action": "write", "path": target, "created": created, "backup": backup})
        return change

    def _backup(self, target: str) -> Optional[str]:
        if self.backup_dir is None or not os.path.isfile(self.path(target)):
            return None
        backup = f"{self.backup_dir.rstrip('/')}/{target.lstrip('/')}"
        destination = self.path(backup)
        destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(self.path(target), destination)
        return backup

    def _notify(self, event: Dict[str, object]) -> None:
        if self.on_change is not None:
            self.on_change(event)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
