"""What the cluster says about its nodes, as seen from this host (admin.conf on
the master, the kubelet's own kubeconfig on a worker)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from frakti_install.constants import ADMIN_CONF, KUBELET_CONF
from frakti_install.engine import Action
from frakti_install.errors import VerifyFailed
from frakti_install.polling import poll_until

if TYPE_CHECKING:
    from frakti_install.context import Context

# A subnet picked by hand is published here, so other nodes route to it.
SUBNET_ANNOTATION = "frakti-install/pod-subnet"

Node = Dict[str, Any]


def kubeconfig(ctx: Context) -> str:
    return ADMIN_CONF if ctx.host.exists(ADMIN_CONF) else KUBELET_CONF


def nodes(ctx: Context) -> Optional[List[Node]]:
    return ctx.facts.nodes(kubeconfig(ctx))


def node_name(ctx: Context) -> str:
    return ctx.facts.hostname().lower()


def this_node(ctx: Context) -> Optional[Node]:
    name = node_name(ctx)
    for node in nodes(ctx) or []:
        if node.get("metadata", {}).get("name") == name:
            return node
    return None


def pod_subnet(node: Node) -> Optional[str]:
    """The subnet the node's pods use: a hand-picked one, else the allocated podCIDR."""
    annotations = node.get("metadata", {}).get("annotations") or {}
    value = annotations.get(SUBNET_ANNOTATION) or node.get("spec", {}).get("podCIDR")
    return str(value) if value else None


def internal_ip(node: Node) -> Optional[str]:
    for address in node.get("status", {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return str(address.get("address"))
    return None


def is_ready(node: Node) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in node.get("status", {}).get("conditions", [])
    )


CONDITIONS = {
    "registered": lambda node: True,
    "Ready": is_ready,
    "given a pod subnet": lambda node: pod_subnet(node) is not None,
}


@dataclass(frozen=True)
class WaitForNode(Action):
    name: str
    timeout: float
    until: str = "registered"
    then: str = ""  # what the step does once the wait is over, for the plan

    def describe(self) -> str:
        text = f"wait up to {self.timeout:.0f} s for node {self.name} to be {self.until}"
        return f"{text}, then {self.then}" if self.then else text

    def apply(self, ctx: Context) -> None:
        condition = CONDITIONS[self.until]

        def met() -> bool:
            node = this_node(ctx)
            return node is not None and condition(node)

        def timed_out(detail: str) -> VerifyFailed:
            return VerifyFailed(
                f"node {self.name} is not {self.until} after {self.timeout:.0f} s",
                hint="See 'journalctl -u kubelet -u frakti' on this host.",
            )

        poll_until(
            met, timeout=self.timeout, interval=2, what=f"node {self.name} {self.until}",
            on_timeout=timed_out, before_each=ctx.facts.invalidate,
        )  # fmt: skip
