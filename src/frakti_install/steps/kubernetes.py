"""kubeadm, kubelet, kubectl and crictl from the release binaries (verified
against the hash upstream publishes for that release, data/artifacts.yaml),
plus the tools kubeadm's preflight wants."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from frakti_install.actions import ExtractArtifact
from frakti_install.engine import Action, Check, Step
from frakti_install.steps.common import artifact_actions, package_actions

if TYPE_CHECKING:
    from frakti_install.context import Context

BINARIES = ("kubeadm", "kubelet", "kubectl")
BIN_DIR = "/usr/bin"


class Kubernetes(Step):
    name = "kubernetes"
    title = "kubeadm, kubelet, kubectl and crictl"

    def check(self, ctx: Context) -> Check:
        actions: List[Action] = package_actions(ctx, ctx.profile.packages["kube_deps"])
        for binary in BINARIES:
            actions += artifact_actions(ctx, binary, f"{BIN_DIR}/{binary}")
        crictl = ctx.artifacts.get("crictl")
        if not ctx.installed.matches(f"{BIN_DIR}/crictl", crictl):
            actions.append(ExtractArtifact("crictl", BIN_DIR, ("crictl",), crictl.verified_with()))
        if not actions:
            return Check.ok(
                f"Kubernetes {ctx.runtime.kubernetes_version} binaries and crictl "
                f"{ctx.runtime.version('crictl')} installed"
            )
        return Check(actions)
