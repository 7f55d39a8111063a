"""Routes from this node to every other node's pod subnet, via that node's
address: now (ip route) and at boot (a oneshot unit whose ExecStart lines
are also the record of which routes are ours)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Dict, List

from frakti_install.actions import RemoveFile, Systemctl, run
from frakti_install.engine import Action, Check, Step
from frakti_install.render import render
from frakti_install.steps.cluster import internal_ip, node_name, nodes, pod_subnet
from frakti_install.steps.common import file_actions

if TYPE_CHECKING:
    from frakti_install.context import Context

UNIT = "frakti-routes.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
IP = "/sbin/ip"
OUR_ROUTE = re.compile(r"^ExecStart=\S+ route replace (\S+) via (\S+)$", re.MULTILINE)


def wanted_routes(ctx: Context) -> Dict[str, str]:
    """subnet -> next hop, for every other node that has both."""
    me = node_name(ctx)
    routes = {}
    for node in nodes(ctx) or []:
        subnet, address = pod_subnet(node), internal_ip(node)
        if node.get("metadata", {}).get("name") != me and subnet and address:
            routes[subnet] = address
    return routes


def managed_routes(ctx: Context) -> Dict[str, str]:
    """The routes an earlier run set up (read back from our unit)."""
    return dict(OUR_ROUTE.findall(ctx.host.read_text(UNIT_PATH) or ""))


class Routes(Step):
    name = "routes"
    title = "Routes to the other nodes' pod subnets"
    # The target moves while we work: `cluster -f` joins workers in parallel,
    # so a node can register between our check and our verification. Each
    # round re-reads the members; a join is absorbed by the next round.
    rounds = 3

    def check(self, ctx: Context) -> Check:
        if nodes(ctx) is None:
            return Check.skipped("the cluster cannot be asked yet (no kubeconfig on this host)")
        wanted = wanted_routes(ctx)
        current = ctx.facts.ipv4_routes()
        actions: List[Action] = []
        for subnet, via in sorted(wanted.items()):
            if current.get(subnet) != via:
                actions.append(
                    run("ip", "route", "replace", subnet, "via", via, why=f"route to {subnet}")
                )
        for subnet in sorted(set(managed_routes(ctx)) - set(wanted)):
            if subnet in current:
                actions.append(
                    run("ip", "route", "del", subnet, why=f"drop the route to departed {subnet}")
                )
        if wanted:
            content = render("frakti-routes.service.j2", routes=sorted(wanted.items()), ip=IP)
            unit_files = file_actions(ctx, UNIT_PATH, content)
            actions += unit_files
            if unit_files:
                actions.append(run("systemctl", "daemon-reload", why="reload unit files"))
            if not ctx.facts.unit(UNIT).is_enabled:
                actions.append(Systemctl("enable", UNIT, "set the routes again at boot"))
        elif ctx.host.exists(UNIT_PATH):
            actions += [
                Systemctl("disable", UNIT, "no other nodes: no routes at boot"),
                RemoveFile(UNIT_PATH),
            ]
        if not actions:
            if not wanted:
                return Check.ok("no other nodes to route to")
            return Check.ok(
                "routes in place: " + ", ".join(f"{s} via {v}" for s, v in sorted(wanted.items()))
            )
        return Check(actions)
