"""One exception hierarchy for everything frakti-install reports to a user.

Each class carries its exit code; the CLI translates any FraktiInstallError
into a short message and that code (README.md lists them). Anything else is
a bug: it goes to the log with its traceback and exits with INTERNAL.
"""

from __future__ import annotations

from typing import Sequence


class ExitCode:
    OK = 0
    INTERNAL = 1
    USAGE = 2  # typer/click's own code for a bad command line
    CONFIG = 3
    UNSUPPORTED_OS = 4
    PREFLIGHT = 5
    COMMAND_FAILED = 6
    DOWNLOAD = 7
    CHECKSUM = 8
    VERIFY = 9
    LOCKED = 10
    DRIFT = 11
    ABORTED = 12
    NOT_ROOT = 13
    NOT_INSTALLED = 14
    INCOMPLETE = 15
    ISOLATION = 20  # verify: a node does not (or cannot be shown to) run pods in VMs


class FraktiInstallError(Exception):
    """Base of every error meant for the user: message says what and how to fix."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class ConfigError(FraktiInstallError):
    """A value given by flag, environment or config file is invalid."""

    exit_code = ExitCode.CONFIG


class IncompatibleVersions(ConfigError):
    """The requested versions are not a combination the compatibility table allows."""


class UnsupportedOS(FraktiInstallError):
    exit_code = ExitCode.UNSUPPORTED_OS


class PreflightFailed(FraktiInstallError):
    exit_code = ExitCode.PREFLIGHT


class CommandFailed(FraktiInstallError):
    """A command run on the host exited non-zero (or could not start)."""

    exit_code = ExitCode.COMMAND_FAILED

    def __init__(self, argv: Sequence[str], returncode: int, output: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-15:])
        message = f"command failed (exit {returncode}): {' '.join(self.argv)}"
        if tail:
            message += f"\n--- last lines of its output ---\n{tail}"
        super().__init__(message)


class DownloadError(FraktiInstallError):
    """A download failed after its retries (network, HTTP status, timeout)."""

    exit_code = ExitCode.DOWNLOAD


class ChecksumMismatch(FraktiInstallError):
    exit_code = ExitCode.CHECKSUM

    def __init__(self, url: str, expected: str, actual: str) -> None:
        self.url = url
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"sha256 mismatch for {url}\n  expected {expected}\n  got      {actual}",
            hint="The file was not installed. Check the mirror, or the checksum you gave.",
        )


class MissingChecksum(ConfigError):
    """An artifact has no published checksum and none was given."""


class VerifyFailed(FraktiInstallError):
    """A step applied its changes but the host is still not in the desired state."""

    exit_code = ExitCode.VERIFY


class Drift(FraktiInstallError):
    """`status` found steps whose state differs from the desired one."""

    exit_code = ExitCode.DRIFT


class Locked(FraktiInstallError):
    exit_code = ExitCode.LOCKED


class Aborted(FraktiInstallError):
    exit_code = ExitCode.ABORTED


class IsolationUnproven(FraktiInstallError):
    """`verify` could not show that every node runs pods in VMs."""

    exit_code = ExitCode.ISOLATION


class NotRoot(FraktiInstallError):
    """A command that changes the host (or reads root's files) run by another user."""

    exit_code = ExitCode.NOT_ROOT


class NotInstalled(FraktiInstallError):
    """A command about an install, on a host where none is (or not what it needs)."""

    exit_code = ExitCode.NOT_INSTALLED


class InstallIncomplete(FraktiInstallError):
    """A command about an install, on a host where the install stopped half-way."""

    exit_code = ExitCode.INCOMPLETE

    def __init__(self, message: str, not_done: Sequence[str], *, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.not_done = list(not_done)
