"""After init: the master taint goes (so pods schedule here) and the node
must report Ready."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from frakti_install.actions import run
from frakti_install.context import ADMIN_CONF
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import VerifyFailed

if TYPE_CHECKING:
    from frakti_install.context import Context

MASTER_TAINTS = ("node-role.kubernetes.io/master", "node-role.kubernetes.io/control-plane")


def this_node(ctx: Context) -> Optional[Dict[str, Any]]:
    name = ctx.facts.hostname().lower()
    for node in ctx.facts.nodes(ADMIN_CONF) or []:
        if node.get("metadata", {}).get("name") == name:
            return node
    return None


def is_ready(node: Dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in node.get("status", {}).get("conditions", [])
    )


@dataclass(frozen=True)
class WaitForNode(Action):
    name: str
    timeout: float
    ready: bool = False

    def describe(self) -> str:
        state = "Ready" if self.ready else "registered"
        return f"wait up to {self.timeout:.0f} s for node {self.name} to be {state}"

    def apply(self, ctx: Context) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            ctx.facts.invalidate()
            node = this_node(ctx)
            if node is not None and (not self.ready or is_ready(node)):
                return
            if time.monotonic() >= deadline:
                raise VerifyFailed(
                    f"node {self.name} is not {'Ready' if self.ready else 'registered'} "
                    f"after {self.timeout:.0f} s",
                    hint="See 'journalctl -u kubelet -u frakti' on this host.",
                )
            time.sleep(2)


class Untaint(Step):
    name = "untaint"
    title = "Let pods schedule on the master"

    def check(self, ctx: Context) -> Check:
        name = ctx.facts.hostname().lower()
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
        name = ctx.facts.hostname().lower()
        node = this_node(ctx)
        if node is not None and is_ready(node):
            return Check.ok(f"node {name} is Ready")
        return Check([WaitForNode(name, ctx.settings.node_ready_timeout, ready=True)])
