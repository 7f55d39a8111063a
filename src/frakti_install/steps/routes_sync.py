"""A timer that re-runs `frakti-install routes`, so every node routes to the
nodes that joined after it (and stops routing to those that left) without
anyone running it by hand.

The timer's run reads the settings this install recorded (RecordSettings),
so a hand-picked subnet or CIDR given by flag stays what it was. A run that
finds nothing to change leaves no trace in the journal or the log file (see
the `routes` command)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from frakti_install.actions import RemoveFile, Systemctl, run
from frakti_install.config import recorded_file
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import ConfigError
from frakti_install.render import render
from frakti_install.steps.common import file_actions, service_actions

if TYPE_CHECKING:
    from frakti_install.context import Context

SERVICE = "frakti-routes-sync.service"
TIMER = "frakti-routes-sync.timer"
UNIT_DIR = "/etc/systemd/system"
LINK = "/usr/local/bin/frakti-install"  # where bootstrap.py links the tool


def installed_command(ctx: Context) -> Optional[str]:
    """The frakti-install the timer runs: bootstrap.py's link, else the
    console script of the environment this one runs in."""
    if ctx.host.exists(LINK):
        return LINK
    beside = str(Path(sys.executable).parent / "frakti-install")
    return beside if ctx.host.exists(beside) else None


class RoutesSync(Step):
    name = "routes-sync"
    title = "Keep the routes in sync as nodes join and leave"

    def check(self, ctx: Context) -> Check:
        interval = ctx.settings.routes_sync_interval
        if interval == "off":
            return self._removal(ctx)
        command = installed_command(ctx)
        if command is None:
            raise ConfigError(
                f"frakti-install is neither at {LINK} nor beside {sys.executable}, "
                "so a timer cannot run it",
                hint=f"Install it with bootstrap.py (it links {LINK}), "
                "or set routes_sync_interval: off.",
            )
        unit_files = file_actions(
            ctx,
            f"{UNIT_DIR}/{SERVICE}",
            render(
                "frakti-routes-sync.service.j2",
                command=command,
                settings_file=recorded_file(ctx.settings.state_dir),
            ),
        )
        timer_file = file_actions(
            ctx, f"{UNIT_DIR}/{TIMER}", render("frakti-routes-sync.timer.j2", interval=interval)
        )
        actions: List[Action] = list(unit_files)
        actions += service_actions(
            ctx, TIMER, timer_file, unit_files_changed=bool(unit_files or timer_file)
        )
        if not actions:
            return Check.ok(f"{TIMER} runs `frakti-install routes` every {interval}")
        return Check(actions)

    def _removal(self, ctx: Context) -> Check:
        ours = [f"{UNIT_DIR}/{TIMER}", f"{UNIT_DIR}/{SERVICE}"]
        present = [path for path in ours if ctx.host.exists(path)]
        if not present:
            return Check.ok("routes_sync_interval is off: no timer")
        state = ctx.facts.unit(TIMER)
        actions: List[Action] = []
        if state.is_enabled:
            actions.append(Systemctl("disable", TIMER, "routes_sync_interval is off"))
        if state.active:
            actions.append(Systemctl("stop", TIMER, "routes_sync_interval is off"))
        actions += [RemoveFile(path) for path in present]
        actions.append(run("systemctl", "daemon-reload", why="reload unit files"))
        return Check(actions)
