"""`kubeadm join` for a worker, exactly once; an unfinished join is reset and
redone. The bootstrap token is a secret: never shown in plans or logs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List

from frakti_install.actions import run
from frakti_install.constants import KUBELET_CONF
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import ConfigError
from frakti_install.render import render
from frakti_install.steps.cluster import node_name
from frakti_install.steps.kubeadm_config import (
    OLD_SCHEMA,
    RemoveLeftoverConfig,
    api_version,
    config_path,
    run_with_config,
)

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
    token: str = field(repr=False)
    ca_hash: str
    cri_socket: str
    node: str
    path: str
    api_version: str

    def describe(self) -> str:
        return (
            f"run kubeadm join --config={self.path} ({self.api_version}: API server "
            f"{self.endpoint}, the bootstrap token, CA hash {self.ca_hash}, node name "
            f"{self.node}, CRI socket {self.cri_socket})"
        )

    def apply(self, ctx: Context) -> None:
        ctx.host.add_secret(self.token)
        content = render(
            "kubeadm-join.yaml.j2",
            api_version=self.api_version,
            flat=self.api_version == OLD_SCHEMA,
            token=self.token,
            endpoint=self.endpoint,
            ca_hash=self.ca_hash,
            node_name=self.node,
            cri_socket=self.cri_socket,
        )
        run_with_config(ctx, ["kubeadm", "join"], self.path, content, timeout=600)


class KubeadmJoinStep(Step):
    name = "kubeadm-join"
    title = "kubeadm join"

    def check(self, ctx: Context) -> Check:
        path = config_path(ctx, "join")
        actions: List[Action] = [RemoveLeftoverConfig(path)] if ctx.host.exists(path) else []
        if ctx.host.exists(KUBELET_CONF):
            if actions:
                return Check(actions)
            return Check.ok("this node has joined a cluster (kubelet.conf present)")
        settings = ctx.settings
        check_join_settings(settings.join_endpoint, settings.join_token, settings.join_ca_hash)
        if any(ctx.host.exists(leftover) for leftover in LEFTOVERS):
            # without the runtime's socket kubeadm 1.12 resets dockershim's containers
            actions.append(
                run(
                    "kubeadm",
                    "reset",
                    "-f",
                    f"--cri-socket={ctx.runtime.kubeadm_cri_socket}",
                    why="clean up an unfinished join",
                )
            )
        actions.append(
            KubeadmJoin(
                settings.join_endpoint,
                settings.join_token,
                settings.join_ca_hash,
                ctx.runtime.kubeadm_cri_socket,
                node_name(ctx),
                path,
                api_version(ctx.runtime.kubernetes_version),
            )
        )
        return Check(actions)
