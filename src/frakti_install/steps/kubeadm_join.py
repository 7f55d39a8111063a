"""`kubeadm join` for a worker, exactly once; an unfinished join is reset and
redone. The bootstrap token is a secret: never shown in plans or logs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, List

from frakti_install.actions import run
from frakti_install.constants import KUBELET_CONF
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import ConfigError
from frakti_install.steps.cluster import node_name

if TYPE_CHECKING:
    from frakti_install.context import Context

TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
CA_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
LEFTOVERS = ("/etc/kubernetes/bootstrap-kubelet.conf", "/etc/kubernetes/pki/ca.crt")


def check_join_settings(endpoint: str, token: str, ca_hash: str) -> None:
    if not re.match(r"^[A-Za-z0-9.\-\[\]:]+:\d+$", endpoint or ""):
        raise ConfigError(
            f"--join {endpoint!r} is not HOST:PORT", hint="e.g. --join 192.168.56.10:6443"
        )
    if not TOKEN_RE.match(token or ""):
        raise ConfigError(
            "the join token is not a kubeadm bootstrap token ([a-z0-9]{6}.[a-z0-9]{16})",
            hint="Copy the line 'frakti-install join-command' prints on the master.",
        )
    if not CA_HASH_RE.match(ca_hash or ""):
        raise ConfigError(
            "--discovery-token-ca-cert-hash must be sha256:<64 hex digits>",
            hint="Copy the line 'frakti-install join-command' prints on the master.",
        )


@dataclass(frozen=True)
class KubeadmJoin(Action):
    endpoint: str
    token: str
    ca_hash: str
    cri_socket: str
    node: str

    def describe(self) -> str:
        return (
            f"run kubeadm join {self.endpoint} --token <secret> "
            f"--discovery-token-ca-cert-hash {self.ca_hash} --node-name={self.node}"
        )

    def apply(self, ctx: Context) -> None:
        ctx.host.add_secret(self.token)
        ctx.host.run(
            [
                "kubeadm",
                "join",
                self.endpoint,
                f"--token={self.token}",
                f"--discovery-token-ca-cert-hash={self.ca_hash}",
                f"--cri-socket={self.cri_socket}",
                f"--node-name={self.node}",
            ],
            timeout=600,
        )


class KubeadmJoinStep(Step):
    name = "kubeadm-join"
    title = "kubeadm join"

    def check(self, ctx: Context) -> Check:
        if ctx.host.exists(KUBELET_CONF):
            return Check.ok("this node has joined a cluster (kubelet.conf present)")
        settings = ctx.settings
        check_join_settings(settings.join_endpoint, settings.join_token, settings.join_ca_hash)
        actions: List[Action] = []
        if any(ctx.host.exists(path) for path in LEFTOVERS):
            actions.append(run("kubeadm", "reset", "-f", why="clean up an unfinished join"))
        actions.append(
            KubeadmJoin(
                settings.join_endpoint,
                settings.join_token,
                settings.join_ca_hash,
                ctx.runtime.kubeadm_cri_socket,
                node_name(ctx),
            )
        )
        return Check(actions)
