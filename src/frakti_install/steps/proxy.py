"""HTTP(S)_PROXY for docker, hyperd and kubelet through systemd drop-ins, with
the cluster's own networks in NO_PROXY. Without a proxy, our drop-ins go."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Tuple

from frakti_install.actions import RemoveFile, run
from frakti_install.engine import Action, Check, Step
from frakti_install.render import render
from frakti_install.steps.common import file_actions

if TYPE_CHECKING:
    from frakti_install.config import Settings
    from frakti_install.context import Context

UNITS = ("docker.service", "hyperd.service", "kubelet.service")
MARKER = "# Written by frakti-install"


def drop_in(unit: str) -> str:
    return f"/etc/systemd/system/{unit}.d/http-proxy.conf"


def proxy_environment(settings: Settings) -> List[Tuple[str, str]]:
    if not (settings.http_proxy or settings.https_proxy):
        return []
    no_proxy: List[str] = []
    extra = ["localhost", "127.0.0.1", settings.pod_cidr, settings.service_cidr]
    for item in settings.no_proxy.split(",") + extra:
        if item.strip() and item.strip() not in no_proxy:
            no_proxy.append(item.strip())
    environment = [("HTTP_PROXY", settings.http_proxy), ("HTTPS_PROXY", settings.https_proxy)]
    return [(k, v) for k, v in environment if v] + [("NO_PROXY", ",".join(no_proxy))]


class Proxy(Step):
    name = "proxy"
    title = "Proxy settings for the daemons"
    units: Tuple[str, ...] = UNITS

    def check(self, ctx: Context) -> Check:
        environment = proxy_environment(ctx.settings)
        actions: List[Action] = []
        changed_units = []
        for unit in self.units:
            path = drop_in(unit)
            if environment:
                content = render("http-proxy.conf.j2", environment=environment)
                # 0640: the proxy URL may carry a password
                unit_actions = file_actions(ctx, path, content, 0o640)
            elif (ctx.host.read_text(path) or "").startswith(MARKER):
                unit_actions = [RemoveFile(path)]
            else:
                unit_actions = []
            actions += unit_actions
            if unit_actions:
                changed_units.append(unit)
        if not actions:
            if environment:
                names = ", ".join(unit.split(".")[0] for unit in self.units)
                return Check.ok(f"{names} have the proxy settings")
            return Check.skipped("no proxy configured")
        actions.append(run("systemctl", "daemon-reload", why="reload unit files"))
        for unit, state in ctx.facts.units(changed_units).items():
            if state.active:
                actions.append(
                    run("systemctl", "restart", unit, why=f"restart {unit} (proxy changed)")
                )
        return Check(actions)
