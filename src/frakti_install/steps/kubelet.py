"""kubelet.service, the kubeadm drop-in and the family's env file with the
flags that point kubelet at frakti. Never a sed into 10-kubeadm.conf."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from frakti_install.actions import MarkRestartPending, Systemctl, restart_marker, run
from frakti_install.engine import Action, Check, Step
from frakti_install.steps.cluster import KUBELET_CONF
from frakti_install.steps.common import template_actions

if TYPE_CHECKING:
    from frakti_install.context import Context

UNIT = "kubelet.service"
DROP_IN = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"


def kubelet_args(ctx: Context) -> List[str]:
    args = [
        "--container-runtime=remote",
        f"--container-runtime-endpoint=unix://{ctx.settings.frakti_socket}",
        f"--cgroup-driver={ctx.cgroup_driver()}",
    ]
    if ctx.settings.node_ip:
        args.append(f"--node-ip={ctx.settings.node_ip}")
    if ctx.settings.kubelet_feature_gates:
        args.append(f"--feature-gates={ctx.settings.kubelet_feature_gates}")
    return args


class Kubelet(Step):
    name = "kubelet"
    title = "kubelet service pointed at frakti"

    def check(self, ctx: Context) -> Check:
        env_file = ctx.profile.kubelet_env_file
        unit_files = template_actions(ctx, f"{ctx.profile.unit_dir}/{UNIT}", "kubelet.service.j2")
        unit_files += template_actions(
            ctx,
            DROP_IN,
            "10-kubeadm.conf.j2",
            env_file=env_file,
            kubernetes_version=ctx.versions.kubernetes,
        )
        env = template_actions(ctx, env_file, "kubelet-env.j2", args=kubelet_args(ctx))
        inputs = unit_files + env
        # Before `kubeadm init`/`join` kubelet has no config and only crash-loops;
        # kubeadm starts it. Once joined it must run, with our latest flags.
        joined = ctx.host.exists(KUBELET_CONF)
        actions: List[Action] = [MarkRestartPending(UNIT)] if inputs and joined else []
        actions += inputs
        if unit_files:
            actions.append(run("systemctl", "daemon-reload", why="reload unit files"))
        state = ctx.facts.unit(UNIT)
        if not state.is_enabled:
            actions.append(Systemctl("enable", UNIT, "enable kubelet at boot"))
        if joined and (inputs or restart_marker(ctx, UNIT).exists()):
            actions.append(Systemctl("restart", UNIT, "restart kubelet (its flags changed)"))
        elif joined and not state.active:
            actions.append(Systemctl("start", UNIT, "start kubelet"))
        if not actions:
            return Check.ok(
                f"kubelet uses {ctx.settings.frakti_socket} with the "
                f"{ctx.cgroup_driver()} cgroup driver"
            )
        return Check(actions)
