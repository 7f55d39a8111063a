"""SELinux permissive on the families that have it (as kubeadm's docs ask)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, List

from frakti_install.actions import run
from frakti_install.engine import Action, Check, Step
from frakti_install.steps.common import file_actions

if TYPE_CHECKING:
    from frakti_install.context import Context

CONFIG = "/etc/selinux/config"


class Selinux(Step):
    name = "selinux"
    title = "SELinux permissive"

    def check(self, ctx: Context) -> Check:
        if not ctx.profile.selinux:
            return Check.skipped(f"{ctx.profile.os.id} does not use SELinux")
        actions: List[Action] = []
        if ctx.facts.selinux_mode() == "enforcing":
            actions.append(run("setenforce", "0", why="switch SELinux to permissive now"))
        current = ctx.host.read_text(CONFIG)
        if current is not None:
            wanted = re.sub(r"(?m)^SELINUX=enforcing$", "SELINUX=permissive", current)
            actions += file_actions(ctx, CONFIG, wanted, 0o644)
        if not actions:
            return Check.ok("SELinux is not enforcing, now or at boot")
        return Check(actions)
