"""br_netfilter and IP forwarding, now and at every boot."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from frakti_install.actions import run
from frakti_install.engine import Action, Check, Step
from frakti_install.steps.common import template_actions

if TYPE_CHECKING:
    from frakti_install.context import Context

MODULES = ("overlay", "br_netfilter")
# Where a module's work shows even when it is built into the kernel (no
# /sys/module entry, no modules directory inside a container).
EVIDENCE = {
    "br_netfilter": "/proc/sys/net/bridge/bridge-nf-call-iptables",
}
MODULES_FILE = "/etc/modules-load.d/frakti-install.conf"
SYSCTL_FILE = "/etc/sysctl.d/90-frakti-install.conf"
SYSCTLS = (
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.ipv4.ip_forward", "1"),
)


def module_present(ctx: Context, module: str) -> bool:
    if ctx.facts.module_loaded(module):
        return True
    if module == "overlay":
        return "overlay" in ctx.facts.filesystems()
    return module in EVIDENCE and ctx.host.exists(EVIDENCE[module])


class Kernel(Step):
    name = "kernel"
    title = "Kernel modules and sysctls for pod networking"

    def check(self, ctx: Context) -> Check:
        actions: List[Action] = []
        actions += template_actions(ctx, MODULES_FILE, "modules-load.conf.j2", modules=MODULES)
        actions += template_actions(ctx, SYSCTL_FILE, "sysctl.conf.j2", settings=SYSCTLS)
        for module in MODULES:
            if not module_present(ctx, module):
                actions.append(run("modprobe", module, why=f"load {module}"))
        if any(ctx.facts.sysctl(key) != value for key, value in SYSCTLS):
            actions.append(run("sysctl", "-q", "-p", SYSCTL_FILE, why="apply sysctls"))
        if not actions:
            return Check.ok("modules loaded and sysctls set, persistently")
        return Check(actions)
