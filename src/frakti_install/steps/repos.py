"""Package repositories a system needs (signed: gpgcheck=1 with gpgkey)."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from frakti_install.engine import Action, Check, Step
from frakti_install.steps.common import template_actions

if TYPE_CHECKING:
    from frakti_install.context import Context


class Repos(Step):
    name = "repos"
    title = "Package repositories"

    def check(self, ctx: Context) -> Check:
        if not ctx.profile.repos:
            return Check.skipped("the OS's own repositories carry every package")
        actions: List[Action] = []
        for repo in ctx.profile.repos:
            actions += template_actions(
                ctx, repo.path, repo.template, baseurl=repo.baseurl, gpgkey=repo.gpgkey
            )
        if not actions:
            return Check.ok(", ".join(r.name for r in ctx.profile.repos) + " already configured")
        return Check(actions)
