"""The line a worker runs to join this master. It carries a fresh bootstrap
token: printed for the operator, never logged, put in JSON or on a command
line. kubeadm generates the token (`kubeadm token create` with no token
argument), so it is not on kubeadm's command line either; the join line hands
it to `frakti-install node` in its environment, which only root and the same
user can read (proc(5): /proc/PID/environ), not in its argv."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from frakti_install.constants import ADMIN_CONF
from frakti_install.errors import ConfigError, FraktiInstallError

if TYPE_CHECKING:
    from frakti_install.context import Context

TOKEN_ENV = "FRAKTI_INSTALL_JOIN_TOKEN"
JOIN_RE = re.compile(
    r"kubeadm join (?P<endpoint>\S+) --token (?P<token>[a-z0-9]{6}\.[a-z0-9]{16}) "
    r"--discovery-token-ca-cert-hash (?P<ca_hash>sha256:[0-9a-f]{64})"
)


@dataclass(frozen=True)
class JoinLine:
    endpoint: str
    token: str = field(repr=False)
    ca_hash: str
    runtime: str = "frakti"  # the master's profile: a worker must run the same

    def command(self) -> str:
        """One shell line for a root shell on the worker: the assignment before
        the command puts the token in frakti-install's environment, not its argv."""
        runtime = "" if self.runtime == "frakti" else f" --runtime {self.runtime}"
        return (
            f"{TOKEN_ENV}={self.token} frakti-install node --yes{runtime} "
            f"--join {self.endpoint} --discovery-token-ca-cert-hash {self.ca_hash}"
        )


def create_join_line(ctx: Context, ttl: str = "24h") -> JoinLine:
    if not ctx.host.exists(ADMIN_CONF):
        raise FraktiInstallError(
            "this host is not a master (no /etc/kubernetes/admin.conf)",
            hint="Run join-command on the host where 'frakti-install allinone' ran.",
        )
    # kubeadm makes the token and prints it only on stdout: withheld from the log
    result = ctx.host.run(
        ["kubeadm", "token", "create", "--ttl", ttl, "--print-join-command"],
        timeout=60,
        secret_output=True,
    )
    match = JOIN_RE.search(result.stdout)
    if not match:
        raise FraktiInstallError(
            "kubeadm printed no join command (its output is not shown: it may hold a token)"
        )
    ctx.host.add_secret(match["token"])
    return JoinLine(match["endpoint"], match["token"], match["ca_hash"], ctx.settings.runtime)


def read_token_file(path: Path) -> str:
    """The join token in a file only its owner may read (a secret: like ssh keys)."""
    try:
        st = os.stat(path)
    except OSError as error:
        raise ConfigError(
            f"--token-file {path}: {error.strerror}",
            hint="Give the file that holds the join token (one line).",
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(
            f"--token-file {path} is not a regular file",
            hint="Give the file that holds the join token (one line).",
        )
    if st.st_mode & 0o077:
        raise ConfigError(
            f"--token-file {path} can be read by others (mode {stat.S_IMODE(st.st_mode):04o}): "
            "the join token is a secret",
            hint=f"chmod 600 {path}; if others may have read it, make a new token "
            "with 'frakti-install join-command' on the master.",
        )
    try:
        return path.read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"--token-file {path} cannot be read as a token ({error})",
            hint="Put the token alone on the file's first line.",
        ) from None
