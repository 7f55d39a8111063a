"""docker: runs frakti's privileged pods; its cgroup driver sets everyone's."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from frakti_install.engine import Action, Check, Step
from frakti_install.errors import VerifyFailed
from frakti_install.steps.common import package_actions, service_actions, wait_for

if TYPE_CHECKING:
    from frakti_install.context import Context

UNIT = "docker.service"


class Docker(Step):
    name = "docker"
    title = "Docker engine"

    def check(self, ctx: Context) -> Check:
        actions: List[Action] = package_actions(ctx, ctx.profile.packages["docker"])
        actions += service_actions(ctx, UNIT)
        if not actions:
            return Check.ok(f"docker running, cgroup driver {ctx.facts.docker_cgroup_driver()}")
        return Check(actions)

    def verify(self, ctx: Context) -> None:
        wait_for(
            lambda: ctx.facts.docker_cgroup_driver() is not None,
            "docker does not answer 'docker info'",
            60,
            ctx,
        )
        chosen = ctx.runtime.cgroup_driver(ctx)
        actual = ctx.facts.docker_cgroup_driver()
        if actual != chosen:
            raise VerifyFailed(
                f"docker runs with the {actual} cgroup driver, but {chosen} was asked for",
                hint="Use --cgroup-driver auto, or set native.cgroupdriver in "
                "/etc/docker/daemon.json.",
            )
        super().verify(ctx)
