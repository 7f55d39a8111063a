"""docker: runs frakti's privileged pods; its cgroup driver sets everyone's.
Held below Docker 29, which refuses the API version frakti's client speaks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from frakti_install.actions import InstallPackages, prepare_package_index
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import VerifyFailed
from frakti_install.steps.common import service_actions, wait_for
from frakti_install.steps.preflight import PreflightCheck

if TYPE_CHECKING:
    from frakti_install.context import Context

UNIT = "docker.service"
# frakti v1.12.0 vendors docker's client at API 1.31 and negotiates only
# downwards (vendor/github.com/docker/docker/api/common.go DefaultVersion,
# client/client.go NegotiateAPIVersionPing); Docker 29 accepts 1.44 and up.
FRAKTI_DOCKER_API = "1.31"
FIRST_REFUSING_MAJOR = 29
# Docker's own package, whichever docker this family installs.
DOCKER_PACKAGES = ("docker-ce",)
MIN_API_FORMAT = "{{.Server.MinAPIVersion}}"

DOCKER_HINT = (
    "Remove that docker (its images and containers stay in /var/lib/docker) and run again: "
    "frakti-install installs a Docker below 29 where the family pins one (EL8/9: "
    "docker-ce-3:28 or older); with the distro's docker.io install a version below 29 and "
    "hold it (apt-mark hold docker.io). Or use --runtime kata, which needs no docker."
)


def _api(version: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def _major(package_version: str) -> Optional[int]:
    """28 of 28.5.2-1.el9, 3:28.5.2-1.el9 or 28.2.2-0ubuntu1~24.04.1."""
    match = re.match(r"(?:\d+:)?(\d+)\.", package_version)
    return int(match.group(1)) if match else None


def docker_names(ctx: Context) -> Tuple[str, ...]:
    names = list(ctx.profile.packages["docker"])
    return tuple(names + [n for n in DOCKER_PACKAGES if n not in names])


def too_new_packages(ctx: Context) -> List[str]:
    installed = ctx.facts.packages(ctx.profile.package_manager, docker_names(ctx))
    return [
        f"{name} {version}"
        for name, version in installed.items()
        if version and (_major(version) or 0) >= FIRST_REFUSING_MAJOR
    ]


def daemon_min_api(ctx: Context) -> Optional[str]:
    """The oldest API the running docker accepts, when it answers."""
    if not ctx.facts.binary("docker"):
        return None
    ok, out = ctx.facts.runs(("docker", "version", "--format", MIN_API_FORMAT))
    return out if ok and re.fullmatch(r"\d+\.\d+", out) else None


def api_problem(ctx: Context) -> Optional[str]:
    """Why frakti could not talk to this host's docker, or None."""
    refuses = f"Docker {FIRST_REFUSING_MAJOR} and later refuse API {FRAKTI_DOCKER_API}, "
    speaks = f"the version frakti {ctx.runtime.version('frakti')} speaks to docker"
    too_new = too_new_packages(ctx)
    if too_new:
        return f"{', '.join(too_new)} installed: {refuses}{speaks}"
    minimum = daemon_min_api(ctx)
    if minimum and _api(minimum) > _api(FRAKTI_DOCKER_API):
        return f"the running docker accepts API {minimum} and up, not {FRAKTI_DOCKER_API}, {speaks}"
    return None


DOCKER_API_CHECK = PreflightCheck("DockerAPI", api_problem, DOCKER_HINT)


@dataclass(frozen=True)
class InstallPinnedPackages(Action):
    """Packages held to a version range (a package manager spec such as
    docker-ce-3:2[0-8].*), journaled by name so reset removes them."""

    specs: Tuple[str, ...]
    names: Tuple[str, ...]

    def describe(self) -> str:
        return "install packages " + " ".join(self.specs)

    def apply(self, ctx: Context) -> None:
        pm = ctx.packages
        prepare_package_index(ctx, self.names)
        ctx.host.run(pm.install_argv(self.specs), env=pm.env, timeout=1800)
        ctx.host.note(event="packages", installed=list(self.names))


def package_actions(ctx: Context) -> List[Action]:
    names = ctx.profile.packages["docker"]
    specs: Dict[str, str] = dict(ctx.profile.extra.get("docker_specs") or {})
    installed = ctx.facts.packages(ctx.profile.package_manager, tuple(names))
    missing = tuple(name for name in names if installed.get(name) is None)
    if not missing:
        return []
    if any(name in specs for name in missing):
        return [InstallPinnedPackages(tuple(specs.get(n, n) for n in missing), missing)]
    return [InstallPackages(missing)]


class Docker(Step):
    name = "docker"
    title = "Docker engine"

    def check(self, ctx: Context) -> Check:
        actions: List[Action] = package_actions(ctx)
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
        problem = api_problem(ctx)
        if problem:
            raise VerifyFailed(f"frakti cannot use this docker: {problem}", hint=DOCKER_HINT)
        chosen = ctx.runtime.cgroup_driver(ctx)
        actual = ctx.facts.docker_cgroup_driver()
        if actual != chosen:
            raise VerifyFailed(
                f"docker runs with the {actual} cgroup driver, but {chosen} was asked for",
                hint="Use --cgroup-driver auto, or set native.cgroupdriver in "
                "/etc/docker/daemon.json.",
            )
        super().verify(ctx)
