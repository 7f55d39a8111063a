"""kubelet pointed at the runtime profile's CRI socket: the family's env file
(KUBELET_EXTRA_ARGS), and, when Kubernetes comes as release binaries,
kubelet.service and the kubeadm drop-in (packages bring their own). Never a
sed into 10-kubeadm.conf."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from frakti_install.actions import MarkRestartPending, Systemctl, run
from frakti_install.constants import KUBELET_CONF, KUBELET_UNIT
from frakti_install.engine import Action, Check, Step
from frakti_install.steps.common import restart_pending, template_actions

if TYPE_CHECKING:
    from frakti_install.context import Context

DROP_IN = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"


class Kubelet(Step):
    name = "kubelet"
    title = "kubelet pointed at the runtime"

    def __init__(self, unit_files: bool) -> None:
        self.unit_files = unit_files  # write kubelet.service and the kubeadm drop-in

    def check(self, ctx: Context) -> Check:
        env_file = ctx.profile.kubelet_env_file
        unit_files: List[Action] = []
        if self.unit_files:
            unit_files += template_actions(
                ctx, f"{ctx.profile.unit_dir}/{KUBELET_UNIT}", "kubelet.service.j2"
            )
            unit_files += template_actions(
                ctx,
                DROP_IN,
                "10-kubeadm.conf.j2",
                env_file=env_file,
                kubernetes_version=ctx.runtime.kubernetes_version,
            )
        env = template_actions(
            ctx,
            env_file,
            "kubelet-env.j2",
            cri=ctx.runtime.cri_name,
            args=ctx.runtime.kubelet_args(ctx),
        )
        inputs = unit_files + env
        # Before `kubeadm init`/`join` kubelet has no config and only crash-loops;
        # kubeadm starts it. Once joined it must run, with our latest flags.
        joined = ctx.host.exists(KUBELET_CONF)
        actions: List[Action] = [MarkRestartPending(KUBELET_UNIT)] if inputs and joined else []
        actions += inputs
        if unit_files:
            actions.append(run("systemctl", "daemon-reload", why="reload unit files"))
        state = ctx.facts.unit(KUBELET_UNIT)
        if not state.is_enabled:
            actions.append(Systemctl("enable", KUBELET_UNIT, "enable kubelet at boot"))
        if joined and (inputs or restart_pending(ctx, KUBELET_UNIT)):
            actions.append(
                Systemctl("restart", KUBELET_UNIT, "restart kubelet (its flags changed)")
            )
        elif joined and not state.active:
            actions.append(Systemctl("start", KUBELET_UNIT, "start kubelet"))
        if not actions:
            return Check.ok(
                f"kubelet uses {ctx.runtime.cri_socket} with the "
                f"{ctx.runtime.cgroup_driver(ctx)} cgroup driver"
            )
        return Check(actions)
