"""The line a worker runs to join this master. It carries a fresh bootstrap
token: printed for the operator, never logged or put in JSON."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from frakti_install.constants import ADMIN_CONF
from frakti_install.errors import FraktiInstallError
from frakti_install.steps.kubeadm_init import new_token

if TYPE_CHECKING:
    from frakti_install.context import Context

JOIN_RE = re.compile(
    r"kubeadm join (?P<endpoint>\S+) --token \S+ "
    r"--discovery-token-ca-cert-hash (?P<ca_hash>sha256:[0-9a-f]{64})"
)


@dataclass(frozen=True)
class JoinLine:
    endpoint: str
    token: str
    ca_hash: str
    runtime: str = "frakti"  # the master's profile: a worker must run the same

    def command(self) -> str:
        runtime = "" if self.runtime == "frakti" else f" --runtime {self.runtime}"
        return (
            f"frakti-install node --yes{runtime} --join {self.endpoint} --token {self.token} "
            f"--discovery-token-ca-cert-hash {self.ca_hash}"
        )


def create_join_line(ctx: Context, ttl: str = "24h") -> JoinLine:
    if not ctx.host.exists(ADMIN_CONF):
        raise FraktiInstallError(
            "this host is not a master (no /etc/kubernetes/admin.conf)",
            hint="Run join-command on the host where 'frakti-install allinone' ran.",
        )
    token = new_token()
    ctx.host.add_secret(token)  # before the command runs: its output is logged
    result = ctx.host.run(
        ["kubeadm", "token", "create", token, "--ttl", ttl, "--print-join-command"], timeout=60
    )
    match = JOIN_RE.search(result.stdout)
    if not match:
        raise FraktiInstallError(
            "kubeadm printed no join command: " + ctx.host.redact(result.stdout)
        )
    return JoinLine(match["endpoint"], token, match["ca_hash"], ctx.settings.runtime)
