"""After init: the master taint goes (so pods schedule here) and the node
must report Ready."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from frakti_install.actions import run
from frakti_install.constants import ADMIN_CONF
from frakti_install.engine import Action, Check, Step
from frakti_install.steps.cluster import WaitForNode, is_ready, node_name, this_node
from frakti_install.versions import parse

if TYPE_CHECKING:
    from frakti_install.context import Context

MASTER_TAINTS = ("node-role.kubernetes.io/master", "node-role.kubernetes.io/control-plane")


def taints_kubeadm_sets(kubernetes_version: str) -> List[str]:
    """The NoSchedule taints `kubeadm init` puts on its node: `master` before
    1.24, both in 1.24, only `control-plane` from 1.25 on."""
    master, control_plane = MASTER_TAINTS
    minor = parse(kubernetes_version)[:2]
    keys = ([master] if minor < (1, 25) else []) + ([control_plane] if minor >= (1, 24) else [])
    return [f"{key}:NoSchedule" for key in keys]


class Untaint(Step):
    name = "untaint"
    title = "Let pods schedule on the master"

    def check(self, ctx: Context) -> Check:
        name = node_name(ctx)
        node = this_node(ctx)
        actions: List[Action] = []
        if node is None:
            # Not registered yet (a dry run before init): predict kubeadm's taints.
            actions.append(WaitForNode(name, ctx.settings.node_ready_timeout))
            taints = taints_kubeadm_sets(ctx.runtime.kubernetes_version)
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
