"""`kubeadm init`, exactly once. A half-done init (killed run) is reset and
redone; a cluster made with another pod CIDR is refused, not silently kept."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional

from frakti_install.actions import run
from frakti_install.constants import ADMIN_CONF, KUBELET_CONF, MANIFESTS
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import ConfigError

if TYPE_CHECKING:
    from frakti_install.context import Context

CONTROLLER_MANAGER = f"{MANIFESTS}/kube-controller-manager.yaml"
TOKEN_ALPHABET = string.ascii_lowercase + string.digits


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
    argv: tuple

    def describe(self) -> str:
        return "run " + " ".join(self.argv) + " --token <generated>"

    def apply(self, ctx: Context) -> None:
        token = new_token()
        ctx.host.add_secret(token)  # kubeadm prints it; keep it out of logs and journal
        ctx.host.run([*self.argv, f"--token={token}"], timeout=900)


class KubeadmInitStep(Step):
    name = "kubeadm-init"
    title = "kubeadm init"
    creates_cluster = True  # its change is the run that made the cluster (the join line)

    def init_argv(self, ctx: Context) -> tuple:
        return (
            "kubeadm",
            "init",
            f"--pod-network-cidr={ctx.settings.pod_cidr}",
            f"--service-cidr={ctx.settings.service_cidr}",
            f"--kubernetes-version={ctx.runtime.kubernetes_version}",
            f"--cri-socket={ctx.runtime.kubeadm_cri_socket}",
            f"--node-name={ctx.facts.hostname().lower()}",
        ) + (
            (f"--apiserver-advertise-address={ctx.settings.advertise_address}",)
            if ctx.settings.advertise_address
            else ()
        )

    def check(self, ctx: Context) -> Check:
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
            return Check.ok(f"cluster already initialised (pod CIDR {cidr or 'unknown'})")
        actions: List[Action] = []
        if partial_init(ctx):
            # kubeadm reset also wipes /etc/cni/net.d (upstream #154); the
            # pod-network step, after init, writes it again.
            actions.append(run("kubeadm", "reset", "-f", why="clean up an unfinished init"))
        actions.append(KubeadmInit(self.init_argv(ctx)))
        return Check(actions)
