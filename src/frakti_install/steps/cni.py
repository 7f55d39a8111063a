"""CNI: the plugins (distro package or release tarball) and the two configs
frakti reads. Rewritten whenever missing: kubeadm reset wipes /etc/cni/net.d
(upstream issue #154)."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Tuple

from frakti_install.actions import ExtractArtifact
from frakti_install.engine import Action, Check, Step
from frakti_install.render import render
from frakti_install.steps.common import file_actions, package_actions

if TYPE_CHECKING:
    from frakti_install.context import Context

NET_DIR = "/etc/cni/net.d"
PLUGINS = ("bridge", "host-local", "loopback", "portmap")
BRIDGE = "cni0"


def config_files(ctx: Context) -> List[Tuple[str, str]]:
    return [
        (
            f"{NET_DIR}/10-mynet.conf",
            render("10-mynet.conf.j2", bridge=BRIDGE, subnet=ctx.settings.node_subnet),
        ),
        (f"{NET_DIR}/99-loopback.conf", render("99-loopback.conf.j2")),
    ]


def config_actions(ctx: Context) -> List[Action]:
    actions: List[Action] = []
    for path, content in config_files(ctx):
        actions += file_actions(ctx, path, content)
    return actions


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
    return [ExtractArtifact("cni-plugins", profile.cni_bin_dir, stale)] if stale else []


class Cni(Step):
    name = "cni"
    title = "CNI plugins and network config"

    def check(self, ctx: Context) -> Check:
        actions = plugin_actions(ctx) + config_actions(ctx)
        if not actions:
            return Check.ok(
                f"plugins in {ctx.profile.cni_bin_dir}; bridge {BRIDGE} "
                f"with node subnet {ctx.settings.node_subnet}"
            )
        return Check(actions)
