"""`kubeadm init`, exactly once. A half-done init (killed run) is reset and
redone; a cluster made with another pod CIDR is refused, not silently kept."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Tuple

from frakti_install.actions import run
from frakti_install.constants import ADMIN_CONF, KUBELET_CONF, MANIFESTS
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import ConfigError
from frakti_install.render import render
from frakti_install.steps.kubeadm_config import (
    OLD_SCHEMA,
    RemoveLeftoverConfig,
    api_version,
    config_path,
    run_with_config,
)

if TYPE_CHECKING:
    from frakti_install.context import Context

CONTROLLER_MANAGER = f"{MANIFESTS}/kube-controller-manager.yaml"
TOKEN_ALPHABET = string.ascii_lowercase + string.digits
LABELS = {
    "pod_subnet": "pod subnet",
    "service_subnet": "service subnet",
    "kubernetes_version": "Kubernetes",
    "cri_socket": "CRI socket",
    "node_name": "node name",
    "advertise_address": "advertise address",
}


def new_token() -> str:
    """A bootstrap token in kubeadm's format ([a-z0-9]{6}.[a-z0-9]{16})."""
    pick = lambda n: "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


def initialised_cidr(ctx: Context) -> Optional[str]:
    manifest = ctx.host.read_text(CONTROLLER_MANAGER) or ""
    match = re.search(r"--cluster-cidr=(\S+)", manifest)
    return match.group(1) if match else None


def partial_init(ctx: Context) -> bool:
    """Something of an earlier init is there, but no admin.conf: it did not finish."""
    return bool(ctx.host.listdir(MANIFESTS)) or ctx.host.exists(KUBELET_CONF)


@dataclass(frozen=True)
class KubeadmInit(Action):
    """kubeadm init with its settings and a new bootstrap token in --config."""

    path: str
    api_version: str
    values: Tuple[Tuple[str, str], ...]  # what the config file says, but the token

    def describe(self) -> str:
        said = ", ".join(f"{LABELS[key]} {value}" for key, value in self.values if value)
        return (
            f"run kubeadm init --config={self.path} ({self.api_version}: {said}; "
            "a new bootstrap token)"
        )

    def apply(self, ctx: Context) -> None:
        token = new_token()
        ctx.host.add_secret(token)  # kubeadm prints it; keep it out of logs and journal
        content = render(
            "kubeadm-init.yaml.j2",
            api_version=self.api_version,
            endpoint_key="apiEndpoint" if self.api_version == OLD_SCHEMA else "localAPIEndpoint",
            token=token,
            **dict(self.values),
        )
        run_with_config(ctx, ["kubeadm", "init"], self.path, content, timeout=900)


class KubeadmInitStep(Step):
    name = "kubeadm-init"
    title = "kubeadm init"
    creates_cluster = True  # its change is the run that made the cluster (the join line)

    def init(self, ctx: Context) -> KubeadmInit:
        kubernetes = ctx.runtime.kubernetes_version
        values = (
            ("pod_subnet", ctx.settings.pod_cidr),
            ("service_subnet", ctx.settings.service_cidr),
            ("kubernetes_version", kubernetes),
            ("cri_socket", ctx.runtime.kubeadm_cri_socket),
            ("node_name", ctx.facts.hostname().lower()),
            ("advertise_address", ctx.settings.advertise_address or ""),
        )
        return KubeadmInit(config_path(ctx, "init"), api_version(kubernetes), values)

    def check(self, ctx: Context) -> Check:
        init = self.init(ctx)
        leftover: List[Action] = (
            [RemoveLeftoverConfig(init.path)] if ctx.host.exists(init.path) else []
        )
        if ctx.host.exists(ADMIN_CONF):
            cidr = initialised_cidr(ctx)
            if cidr and cidr != ctx.settings.pod_cidr:
                raise ConfigError(
                    f"this cluster was initialised with pod CIDR {cidr}, not "
                    f"{ctx.settings.pod_cidr}",
                    hint="Keep pod_cidr as it was, or run 'kubeadm reset -f' first to "
                    "build a new cluster (this deletes the current one).",
                )
            if cidr is None and ctx.settings.node_subnet == "auto":
                raise ConfigError(
                    "this cluster was initialised without --pod-network-cidr: the controller "
                    "manager allocates no pod subnets, so node_subnet auto cannot work",
                    hint="Give node_subnet by hand (a /24 of pod_cidr), or run 'kubeadm reset "
                    "-f' so that frakti-install initialises the cluster itself.",
                )
            if leftover:
                return Check(leftover)
            return Check.ok(f"cluster already initialised (pod CIDR {cidr or 'unknown'})")
        actions = leftover
        if partial_init(ctx):
            # kubeadm reset also wipes /etc/cni/net.d (upstream #154); the
            # pod-network step, after init, writes it again. Without the
            # runtime's socket kubeadm 1.12 resets dockershim's containers.
            actions.append(
                run(
                    "kubeadm",
                    "reset",
                    "-f",
                    f"--cri-socket={ctx.runtime.kubeadm_cri_socket}",
                    why="clean up an unfinished init",
                )
            )
        actions.append(init)
        return Check(actions)
