"""CNI: the plugins (distro package or release tarball) and the configs frakti
reads. The pod subnet is the one the cluster allocated to this node (or one
picked by hand, published on the node so other nodes route to it). Configs
are rewritten whenever missing: kubeadm reset wipes /etc/cni/net.d
(upstream issue #154)."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, List, Optional

from frakti_install.actions import ExtractArtifact, run
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import ConfigError
from frakti_install.render import render
from frakti_install.steps.cluster import (
    SUBNET_ANNOTATION,
    WaitForNode,
    kubeconfig,
    node_name,
    nodes,
    pod_subnet,
    this_node,
)
from frakti_install.steps.common import file_actions, package_actions

if TYPE_CHECKING:
    from frakti_install.context import Context

NET_DIR = "/etc/cni/net.d"
MYNET = f"{NET_DIR}/10-mynet.conf"
LOOPBACK = f"{NET_DIR}/99-loopback.conf"
PLUGINS = ("bridge", "host-local", "loopback", "portmap")
BRIDGE = "cni0"


def plugin_actions(ctx: Context) -> List[Action]:
    profile = ctx.profile
    if profile.cni_source == "package":
        return package_actions(ctx, profile.packages["cni"])
    artifact = ctx.artifacts.get("cni-plugins")
    stale = tuple(
        plugin
        for plugin in PLUGINS
        if not ctx.installed.matches(f"{profile.cni_bin_dir}/{plugin}", artifact)
    )
    if not stale:
        return []
    return [ExtractArtifact("cni-plugins", profile.cni_bin_dir, stale, artifact.verified_with())]


class CniPlugins(Step):
    name = "cni"
    title = "CNI plugins"

    def check(self, ctx: Context) -> Check:
        actions = plugin_actions(ctx)
        if not actions:
            return Check.ok(
                f"bridge, host-local, loopback and portmap in {ctx.profile.cni_bin_dir}"
            )
        return Check(actions)


def check_hand_picked(ctx: Context, subnet: str) -> None:
    """A hand-picked subnet must not overlap another node's (config checks the CIDRs)."""
    wanted = ipaddress.IPv4Network(subnet)
    me = node_name(ctx)
    for node in nodes(ctx) or []:
        other = pod_subnet(node)
        name = node.get("metadata", {}).get("name")
        if name != me and other and wanted.overlaps(ipaddress.IPv4Network(other)):
            raise ConfigError(
                f"node_subnet {subnet} overlaps node {name}'s pod subnet {other}",
                hint="Pick another /24 of the pod CIDR, or leave node_subnet as auto.",
            )


class PodNetwork(Step):
    name = "pod-network"
    title = "Pod network config with this node's subnet"
    rounds = 2  # the allocated subnet is known once the node has registered

    def desired_subnet(self, ctx: Context) -> Optional[str]:
        if ctx.settings.node_subnet != "auto":
            return ctx.settings.node_subnet
        node = this_node(ctx)
        return node.get("spec", {}).get("podCIDR") if node else None

    def check(self, ctx: Context) -> Check:
        subnet = self.desired_subnet(ctx)
        if subnet is None:
            wait = WaitForNode(
                node_name(ctx),
                ctx.settings.node_ready_timeout,
                until="given a pod subnet",
                then=f"write {MYNET} and {LOOPBACK} with it",
            )
            return Check([wait])
        actions: List[Action] = []
        if ctx.settings.node_subnet != "auto":
            check_hand_picked(ctx, subnet)
            node = this_node(ctx)
            published = (node or {}).get("metadata", {}).get("annotations") or {}
            if node is not None and published.get(SUBNET_ANNOTATION) != subnet:
                actions.append(
                    run(
                        "kubectl",
                        "--kubeconfig",
                        kubeconfig(ctx),
                        "annotate",
                        "--overwrite",
                        "node",
                        node_name(ctx),
                        f"{SUBNET_ANNOTATION}={subnet}",
                        why="publish the hand-picked pod subnet",
                    )
                )
        content = render("10-mynet.conf.j2", bridge=BRIDGE, subnet=subnet)
        files = file_actions(ctx, MYNET, content)
        files += file_actions(ctx, LOOPBACK, render("99-loopback.conf.j2"))
        actions = files + actions
        if not actions:
            return Check.ok(f"bridge {BRIDGE} with pod subnet {subnet}")
        return Check(actions)
