"""After init: the master taint goes (so pods schedule here) and the node
must report Ready."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from frakti_install.actions import run
from frakti_install.context import ADMIN_CONF
from frakti_install.engine import Action, Check, Step
from frakti_install.steps.cluster import WaitForNode, is_ready, node_name, this_node

if TYPE_CHECKING:
    from frakti_install.context import Context

MASTER_TAINTS = ("node-role.kubernetes.io/master", "node-role.kubernetes.io/control-plane")


class Untaint(Step):
    name = "untaint"
    title = "Let pods schedule on the master"

    def check(self, ctx: Context) -> Check:
        name = node_name(ctx)
        node = this_node(ctx)
        actions: List[Action] = []
        if node is None:
            actions.append(WaitForNode(name, ctx.settings.node_ready_timeout))
            taints = [f"{MASTER_TAINTS[0]}:NoSchedule"]
        else:
            taints = [
                f"{t['key']}:{t['effect']}"
                for t in node.get("spec", {}).get("taints") or []
                if t.get("key") in MASTER_TAINTS
            ]
        for taint in taints:
            actions.append(
                run(
                    "kubectl",
                    "--kubeconfig",
                    ADMIN_CONF,
                    "taint",
                    "nodes",
                    name,
                    f"{taint}-",
                    why="remove the master taint",
                )
            )
        if not actions:
            return Check.ok(f"node {name} has no master taint")
        return Check(actions)


class NodeReady(Step):
    name = "node-ready"
    title = "Node Ready"

    def check(self, ctx: Context) -> Check:
        name = node_name(ctx)
        node = this_node(ctx)
        if node is not None and is_ready(node):
            return Check.ok(f"node {name} is Ready")
        return Check([WaitForNode(name, ctx.settings.node_ready_timeout, until="Ready")])
