"""`reset`: undo what frakti-install did, as recorded in its journal: the
cluster, the services it enabled, the CNI bridge and rules, the files it
wrote (restoring the originals it backed up) and, with --purge, the packages
it installed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List

from frakti_install import datafiles
from frakti_install.actions import RemoveFile, RemoveTree, RestoreFile, Systemctl, run
from frakti_install.constants import ADMIN_CONF, MANIFESTS
from frakti_install.engine import Action, Check, Step
from frakti_install.state import UndoLog

if TYPE_CHECKING:
    from frakti_install.context import Context

CNI_BRIDGE = "cni0"
OUR_CHAINS = ("CNI-", "KUBE-")


def journal_log(ctx: Context) -> UndoLog:
    return ctx.host.undo_log(f"{ctx.settings.state_dir}/journal.jsonl")


class KubeadmReset(Step):
    name = "kubeadm-reset"
    title = "Tear the cluster down"

    def check(self, ctx: Context) -> Check:
        leftovers = ctx.host.exists(ADMIN_CONF) or bool(ctx.host.listdir(MANIFESTS))
        if not leftovers:
            return Check.ok("no cluster on this host")
        if not ctx.facts.binary("kubeadm"):
            return Check.skipped("cluster files exist but kubeadm is gone; remove /etc/kubernetes")
        return Check(
            [
                run(
                    "kubeadm",
                    "reset",
                    "-f",
                    f"--cri-socket={ctx.runtime.kubeadm_cri_socket}",
                    why="tear the cluster down",
                    timeout=600,
                )
            ]
        )


class StopServices(Step):
    name = "services"
    title = "Stop and disable the services frakti-install enabled"

    def check(self, ctx: Context) -> Check:
        units = list(reversed(journal_log(ctx).units))
        actions: List[Action] = []
        for unit, state in ctx.facts.units(units).items():
            if state.is_enabled and state.enabled != "static":
                actions.append(Systemctl("disable", unit, f"disable {unit}"))
            if state.active:
                actions.append(Systemctl("stop", unit, f"stop {unit}"))
        if not actions:
            return Check.ok("no service of ours is enabled or running")
        return Check(actions)


@dataclass(frozen=True)
class RemoveIptablesRules(Action):
    """Drop the CNI-* and KUBE-* chains and the rules that jump to them."""

    def describe(self) -> str:
        return "remove the CNI-* and KUBE-* iptables chains and rules"

    def apply(self, ctx: Context) -> None:
        dump = ctx.facts.iptables_save()
        if dump is not None:
            ctx.host.run(["iptables-restore"], input=without_our_rules(dump.text))


def without_our_rules(rules: str) -> str:
    kept = []
    for line in rules.splitlines():
        if line.startswith(":") and line[1:].startswith(OUR_CHAINS):
            continue
        if line.startswith("-A") and any(chain in line for chain in OUR_CHAINS):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


class NetworkCleanup(Step):
    name = "network"
    title = "Remove the CNI bridge and the iptables rules"

    def check(self, ctx: Context) -> Check:
        actions: List[Action] = []
        if ctx.host.exists(f"/sys/class/net/{CNI_BRIDGE}"):
            actions.append(run("ip", "link", "delete", CNI_BRIDGE, why="remove the pod bridge"))
        dump = ctx.facts.iptables_save()
        if dump is not None and dump.has_chains(OUR_CHAINS):
            actions.append(RemoveIptablesRules())
        if not actions:
            return Check.ok("no pod bridge and no CNI/KUBE iptables rules")
        return Check(actions)


class RestoreFiles(Step):
    name = "files"
    title = "Remove the files frakti-install wrote; restore what it replaced"

    def check(self, ctx: Context) -> Check:
        actions: List[Action] = []
        for path, backup in reversed(list(journal_log(ctx).files.items())):
            if backup is None:
                if ctx.host.exists(path):
                    actions.append(RemoveFile(path))
            elif ctx.host.read_bytes(path) != ctx.host.read_bytes(backup):
                actions.append(RestoreFile(path, backup))
        actions += [RemoveTree(tree) for tree in journal_log(ctx).trees if ctx.host.is_dir(tree)]
        if any("/systemd/" in getattr(a, "path", "") for a in actions):
            actions.append(run("systemctl", "daemon-reload", why="forget removed units"))
        if not actions:
            return Check.ok("every file is as it was before frakti-install")
        return Check(actions)


def data_dirs(ctx: Context, packages: List[str]) -> List[str]:
    """Runtime data of the packages we installed and of what we ran ourselves."""
    tables = datafiles.load("profiles")
    dirs = [d for name in packages for d in tables["package_data_dirs"].get(name, [])]
    dirs += tables["runtime_dirs"]
    return [d for i, d in enumerate(dirs) if d not in dirs[:i] and has_data(ctx, d)]


def has_data(ctx: Context, target: str) -> bool:
    return ctx.host.is_dir(target) and (
        bool(ctx.host.listdir(target)) or not ctx.host.is_mount(target)
    )


class PurgePackages(Step):
    name = "packages"
    title = "Remove the packages frakti-install installed"

    def __init__(self, purge: bool) -> None:
        self.purge = purge

    def check(self, ctx: Context) -> Check:
        wanted = journal_log(ctx).packages
        installed = ctx.facts.packages(ctx.profile.package_manager, tuple(wanted))
        present = [name for name in wanted if installed.get(name)]
        if not self.purge:
            return Check.skipped(
                "packages stay installed (--purge removes " + (", ".join(present) or "none") + ")"
            )
        dirs = data_dirs(ctx, wanted)
        if not (present or dirs):
            return Check.ok("no package of ours is installed, and no runtime data is left")
        pm = ctx.packages
        actions: List[Action] = []
        held = [name for name in present if name in ("kubelet", "kubeadm", "kubectl")]
        if held and ctx.profile.package_manager == "apt":
            actions.append(run("apt-mark", "unhold", *held, why="release the version hold"))
        if present:
            actions.append(run(*pm.remove_argv(present), why="remove packages", env=pm.env))
        actions += [RemoveTree(d) for d in dirs]
        return Check(actions)


@dataclass(frozen=True)
class MarkReset(Action):
    def describe(self) -> str:
        return "mark the journal: everything before this is undone"

    def apply(self, ctx: Context) -> None:
        ctx.host.note(event="reset-done")


class Forget(Step):
    name = "forget"
    title = "Close the undo log"

    def check(self, ctx: Context) -> Check:
        log = journal_log(ctx)
        if not (log.files or log.units or log.packages):
            return Check.ok("nothing recorded to undo")
        return Check([MarkReset()])
