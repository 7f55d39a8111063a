"""Building blocks every step uses: files, packages, artifacts, services."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING, Callable, List, Sequence, Tuple

from frakti_install.actions import (
    InstallArtifact,
    InstallPackages,
    MarkRestartPending,
    Systemctl,
    WriteFile,
    restart_marker,
    run,
)
from frakti_install.engine import Action
from frakti_install.polling import poll_until
from frakti_install.render import render

if TYPE_CHECKING:
    from frakti_install.context import Context


def file_actions(ctx: Context, path: str, content: str, mode: int = 0o644) -> List[Action]:
    """Nothing when the file already has this content and mode."""
    current = ctx.host.read_bytes(path)
    if current is None:
        return [WriteFile(path, content, mode, "create")]
    if current != content.encode():
        return [WriteFile(path, content, mode, "update")]
    st = ctx.host.stat(path)
    if st is not None and stat.S_IMODE(st.st_mode) != mode:
        return [WriteFile(path, content, mode, "chmod")]
    return []


def template_actions(
    ctx: Context, path: str, template: str, mode: int = 0o644, **values: object
) -> List[Action]:
    return file_actions(ctx, path, render(template, **values), mode)


def package_actions(ctx: Context, names: Sequence[str]) -> List[Action]:
    installed = ctx.facts.packages(ctx.profile.package_manager, tuple(names))
    missing = tuple(name for name in names if installed.get(name) is None)
    return [InstallPackages(missing)] if missing else []


def outdated_hyper_packages(ctx: Context) -> Tuple[str, ...]:
    """The hyper artifacts (hypercontainer, hyperstart) whose package is missing or
    of another version: the ones an install downloads (hyperd step, preflight)."""
    wanted = ctx.profile.hyper_packages
    installed = ctx.facts.packages(ctx.profile.package_manager, tuple(wanted.values()))
    return tuple(
        artifact
        for artifact, package in wanted.items()
        if not (installed.get(package) or "").startswith(ctx.runtime.version("hyperd"))
    )


def artifact_actions(ctx: Context, artifact: str, path: str, mode: int = 0o755) -> List[Action]:
    resolved = ctx.artifacts.get(artifact)
    if ctx.installed.matches(path, resolved):
        return []
    return [InstallArtifact(artifact, path, mode, resolved.verified_with())]


def service_actions(
    ctx: Context, unit: str, inputs: Sequence[Action] = (), *, unit_files_changed: bool = False
) -> List[Action]:
    """The actions that change what a unit reads (`inputs`), then enable it and
    (re)start it: restarted when its inputs changed, now or in a killed run."""
    actions: List[Action] = []
    if inputs:
        actions.append(MarkRestartPending(unit))
        actions += inputs
    if unit_files_changed:
        actions.append(run("systemctl", "daemon-reload", why="reload unit files"))
    state = ctx.facts.unit(unit)
    if not state.is_enabled:
        actions.append(Systemctl("enable", unit, f"enable {unit} at boot"))
    if inputs or restart_pending(ctx, unit):
        # restart, not start: a package may have started it on its own config meanwhile
        actions.append(Systemctl("restart", unit, f"(re)start {unit} with its new config"))
    elif not state.active:
        actions.append(Systemctl("start", unit, f"start {unit}"))
    return actions


def restart_pending(ctx: Context, unit: str) -> bool:
    """A unit's inputs changed (now or in a killed run) and it has not restarted since."""
    return ctx.host.exists(restart_marker(ctx, unit))


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float, ctx: Context, interval: float = 0.5
) -> None:
    """Poll until condition() holds, re-reading facts each time; else VerifyFailed."""
    poll_until(
        condition, timeout=timeout, interval=interval, what=what, before_each=ctx.facts.invalidate
    )
