"""Swap off, now and at boot, when the user asked for it (--disable-swap);
otherwise preflight refuses a host with swap on."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, List

from frakti_install.actions import run
from frakti_install.engine import Action, Check, Step
from frakti_install.steps.common import file_actions

if TYPE_CHECKING:
    from frakti_install.context import Context

FSTAB = "/etc/fstab"
SWAP_LINE = re.compile(r"^(?!\s*#)(\S+\s+\S+\s+swap\s.*)$", re.MULTILINE)


class Swap(Step):
    name = "swap"
    title = "Swap off"

    def check(self, ctx: Context) -> Check:
        fstab = ctx.host.read_text(FSTAB) or ""
        active = ctx.facts.swap_devices()
        at_boot = SWAP_LINE.findall(fstab)
        if not (active or at_boot):
            return Check.ok("no swap, now or at boot")
        if not ctx.settings.disable_swap:
            return Check.skipped(
                "swap left as it is (preflight decides; --disable-swap turns it off)"
            )
        actions: List[Action] = []
        if active:
            actions.append(run("swapoff", "-a", why="turn swap off now"))
        if at_boot:
            commented = SWAP_LINE.sub(r"# disabled by frakti-install: \1", fstab)
            actions += file_actions(ctx, FSTAB, commented, 0o644)
        return Check(actions)
