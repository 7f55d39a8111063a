"""`upgrade`: a node moved to a newer Kubernetes the way kubeadm's "Upgrading
kubeadm clusters" says, one step per stage so that a killed run resumes:
the version skew policy checked, kubeadm's package, `kubeadm upgrade plan`
and `apply` (master) or `kubeadm upgrade node` (worker), the node drained,
kubelet and kubectl, kubelet restarted, the node uncordoned.

Each check reads what is true now (the packages, the API server's and the
node's versions, the static pod manifests); the two things no fact shows
(`kubeadm upgrade node` done, the node drained by us) are marker files in the
state directory, written after the command succeeded."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from frakti_install.actions import MarkRestartPending, Systemctl, run
from frakti_install.constants import ADMIN_CONF, KUBELET_UNIT, MANIFESTS
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import ConfigError, FraktiInstallError, VerifyFailed
from frakti_install.steps.cluster import kubeconfig, node_name, this_node
from frakti_install.steps.common import restart_pending, wait_for
from frakti_install.steps.kube_packages import InstallKubePackages, package_version
from frakti_install.steps.preflight import missing_checksums
from frakti_install.versions import parse

if TYPE_CHECKING:
    from frakti_install.context import Context

log = logging.getLogger(__name__)

CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def target(ctx: Context) -> str:
    """The release this run upgrades to: v1.36.4."""
    return ctx.runtime.kubernetes_version


def is_master(ctx: Context) -> bool:
    return ctx.host.exists(ADMIN_CONF)


def server_version(ctx: Context) -> str:
    version = ctx.facts.server_version(kubeconfig(ctx))
    if version is None:
        raise FraktiInstallError(
            f"the API server does not answer 'kubectl --kubeconfig {kubeconfig(ctx)} version'",
            hint="An upgrade needs a running cluster: see 'journalctl -u kubelet' and "
            "'frakti-install status'.",
        )
    return version


def kubelet_version(ctx: Context) -> Optional[str]:
    """What the node reports (status.nodeInfo.kubeletVersion): the running kubelet's."""
    node = this_node(ctx)
    info = (node or {}).get("status", {}).get("nodeInfo") or {}
    return str(info["kubeletVersion"]) if info.get("kubeletVersion") else None


def minor(version: str) -> Tuple[int, ...]:
    return parse(version)[:2]


def show(version: Tuple[int, ...]) -> str:
    return "v" + ".".join(str(part) for part in version)


# --- the version skew policy, before anything changes ----------------------------
def skew_problem(
    wanted: str, server: str, kubelet: Optional[str], master: bool
) -> Optional[Tuple[str, str]]:
    """Why upgrading this node to `wanted` breaks kubeadm's or Kubernetes' version
    skew policy (message, hint), or None when it is allowed."""
    want, api = parse(wanted), parse(server)
    current = parse(kubelet) if kubelet else api
    if want < current or (master and want < api):
        return (
            f"Kubernetes {wanted} is older than this node's {kubelet or server}: a downgrade",
            "Downgrades are not supported (kubeadm: 'Downgrades are not supported'); give a "
            "newer --kubernetes-version, or leave it out for the next release.",
        )
    if master and minor(wanted)[1] > minor(server)[1] + 1:
        step = show((api[0], api[1] + 1))
        return (
            f"Kubernetes {wanted} is two or more minors above the cluster's {server}: kubeadm "
            "can upgrade only 1 minor version at a time (the API server must not skip a minor)",
            f"Upgrade to {step} first (frakti-install upgrade --kubernetes-version {step}, on the "
            f"master, then every worker), then run it again for {show(minor(wanted))}.",
        )
    if not master and want > api:
        return (
            f"this worker's target {wanted} is newer than the control plane's {server}: a "
            "kubelet must never be newer than the API server",
            f"Upgrade the master first (frakti-install upgrade --kubernetes-version {wanted} "
            "there), then this worker; or leave --kubernetes-version out to follow the master.",
        )
    return None


class UpgradeSkew(Step):
    name = "upgrade-skew"
    title = "The version skew policy allows this upgrade"

    def check(self, ctx: Context) -> Check:
        wanted, server = target(ctx), server_version(ctx)
        kubelet = kubelet_version(ctx)
        problem = skew_problem(wanted, server, kubelet, is_master(ctx)) or drain_problem(ctx)
        if problem:
            raise ConfigError(problem[0], hint=problem[1])
        unsummed = missing_checksums(ctx)
        if unsummed:
            raise ConfigError(
                f"{unsummed}: the upgrade would stop half-way, with the node drained",
                hint="Give it with --checksum NAME=SHA256 (sha256sum of the file), e.g. "
                "--checksum kata=SHA256 for a --kata-version whose sum is not pinned.",
            )
        role = "control plane" if is_master(ctx) else "worker"
        if parse(server) == parse(wanted) and kubelet and parse(kubelet) == parse(wanted):
            return Check.ok(f"{role}: API server and kubelet already at {wanted}")
        return Check.ok(
            f"{role}: API server {server}, kubelet {kubelet or '?'} -> {wanted} is within the "
            "version skew policy"
        )


# --- downloads: all verified before the first change -------------------------------
def not_cached(ctx: Context) -> List[str]:
    """The runtime's downloads for this upgrade that the cache does not hold yet."""
    missing = []
    for name in ctx.runtime.upgrade_downloads(ctx):
        sha256 = ctx.artifacts.sha256(name)
        if not (sha256 and ctx.artifacts.downloader().cached(sha256)):
            missing.append(name)
    return missing


@dataclass(frozen=True)
class FetchArtifact(Action):
    name: str

    def describe(self) -> str:
        return f"download and verify {self.name} into the cache (nothing is installed yet)"

    def apply(self, ctx: Context) -> None:
        ctx.artifacts.fetch(self.name)


class Prefetch(Step):
    """A wrong checksum or an unreachable mirror stops the upgrade here, before
    kubeadm is upgraded or the node drained, not half-way with the node drained."""

    name = "upgrade-downloads"
    title = "What the upgrade installs, downloaded and verified first"

    def check(self, ctx: Context) -> Check:
        missing = not_cached(ctx)
        if not missing:
            return Check.ok("nothing to download, or in the cache already")
        return Check([FetchArtifact(name) for name in missing])


# --- packages: unheld, pinned, held again ------------------------------------------
def package_actions(
    ctx: Context, names: Sequence[str], before: Sequence[Action] = ()
) -> List[Action]:
    """The packages `names` at the target, held: unhold, install, hold (kubeadm's order)."""
    family = ctx.runtime.family(ctx.profile)
    version = package_version(ctx)
    installed = ctx.facts.packages(ctx.profile.package_manager, tuple(names))
    stale = [n for n in names if not (installed.get(n) or "").startswith(version + "-")]
    apt = family["hold"] == "apt-mark"
    actions: List[Action] = []
    if stale:
        actions += before
        if apt:
            actions.append(run("apt-mark", "unhold", *stale, why="let them change"))
        actions.append(
            InstallKubePackages(
                specs=tuple(
                    str(family["package_spec"]).format(name=name, version=version)
                    for name in stale
                ),
                names=tuple(stale),
                options=tuple(family["install_options"]),
            )
        )
    unheld = [n for n in names if n in stale or n not in ctx.facts.apt_holds()] if apt else []
    if unheld:
        actions.append(run("apt-mark", "hold", *unheld, why="hold them at this version"))
    return actions


def held(ctx: Context) -> str:
    family = ctx.runtime.family(ctx.profile)
    if family["hold"] == "apt-mark":
        return "held with apt-mark"
    return f"held by the exclude line of {family['repo']['path']}"


class KubeadmPackage(Step):
    name = "kubeadm-package"
    title = "kubeadm at the new release first"

    def check(self, ctx: Context) -> Check:
        actions = package_actions(ctx, ["kubeadm"])
        if actions:
            return Check(actions)
        return Check.ok(f"kubeadm {package_version(ctx)} installed and {held(ctx)}")

    def verify(self, ctx: Context) -> None:
        super().verify(ctx)
        found = ctx.facts.kubeadm_version()
        if found is None or parse(found) != parse(target(ctx)):
            raise VerifyFailed(
                f"'kubeadm version -o short' says {found or 'nothing'}, not {target(ctx)}",
                hint="Check the Kubernetes package repository (its minor) and run again.",
            )


# --- kubeadm upgrade ----------------------------------------------------------------
def manifest_tags(ctx: Context) -> List[str]:
    """The image tags of the control plane's static pods (one per manifest)."""
    tags = []
    for component in CONTROL_PLANE:
        text = ctx.host.read_text(f"{MANIFESTS}/{component}.yaml") or ""
        found = re.search(rf"image:\s*\S*/{component}:(v[\w.+-]+)", text)
        tags.append(found.group(1) if found else "?")
    return tags


def upgrade_marker(ctx: Context, what: str) -> str:
    return f"{ctx.settings.state_dir}/upgrade/{what}"


@dataclass(frozen=True)
class KubeadmUpgradePlan(Action):
    """`kubeadm upgrade plan VERSION`: kubeadm's own verdict, shown (log and journal);
    a refusal stops the run here with kubeadm's words."""

    version: str

    def describe(self) -> str:
        return f"ask kubeadm for its verdict: kubeadm upgrade plan {self.version}"

    def apply(self, ctx: Context) -> None:
        result = ctx.host.run(["kubeadm", "upgrade", "plan", self.version], timeout=300)
        verdict = [
            line.strip()
            for line in result.stdout.splitlines()
            if line.startswith("[upgrade/versions]") or "kubeadm upgrade apply" in line
        ]
        for line in verdict:
            log.warning("kubeadm upgrade plan: %s", line)
        ctx.host.note(event="kubeadm-upgrade-plan", version=self.version, verdict=verdict)


@dataclass(frozen=True)
class KubeadmUpgradeNode(Action):
    """`kubeadm upgrade node` (a worker: its kubelet configuration), then its marker."""

    marker: str
    version: str

    def describe(self) -> str:
        return "upgrade this node's kubelet configuration: kubeadm upgrade node"

    def apply(self, ctx: Context) -> None:
        ctx.host.run(["kubeadm", "upgrade", "node"], timeout=900)
        ctx.host.write_file(self.marker, (self.version + "\n").encode(), 0o600)


class KubeadmUpgrade(Step):
    name = "kubeadm-upgrade"
    title = "kubeadm upgrade: apply (control plane) or node (worker)"

    def check(self, ctx: Context) -> Check:
        wanted = target(ctx)
        if is_master(ctx):
            server, tags = server_version(ctx), manifest_tags(ctx)
            if parse(server) == parse(wanted) and all(tag == wanted for tag in tags):
                return Check.ok(f"control plane at {wanted} (API server and static pods)")
            return Check(
                [
                    KubeadmUpgradePlan(wanted),
                    run(
                        "kubeadm", "upgrade", "apply", wanted, "--yes",
                        why="upgrade the control plane", timeout=1800,
                    ),  # fmt: skip
                ]
            )
        marker = upgrade_marker(ctx, "node-config")
        if (ctx.host.read_text(marker) or "").strip() == wanted:
            return Check.ok(f"kubeadm upgrade node ran for {wanted}")
        return Check([KubeadmUpgradeNode(marker, wanted)])


# --- drain, kubelet, uncordon --------------------------------------------------------
def drain_kubeconfig(ctx: Context) -> Optional[str]:
    """The kubeconfig that may evict this node's pods: the admin's on the master; on a
    worker the one given for this run (--kubeconfig), as its kubelet's may not."""
    if is_master(ctx):
        return ADMIN_CONF
    return ctx.settings.drain_kubeconfig or None


def drain_problem(ctx: Context) -> Optional[Tuple[str, str]]:
    """Why this node cannot be drained and uncordoned by this run (None: it can, or
    nothing under its pods changes)."""
    if is_master(ctx):
        return None
    if not (node_changes(ctx) or ctx.host.exists(upgrade_marker(ctx, "drained"))):
        return None
    path = ctx.settings.drain_kubeconfig
    how = (
        "Give --kubeconfig FILE: a copy of the master's /etc/kubernetes/admin.conf (mode "
        "0600; remove it afterwards), or run 'frakti-install cluster -f INVENTORY upgrade', "
        "which lends each worker the master's for its upgrade."
    )
    if not path:
        return (
            f"worker {node_name(ctx)} must be drained before its kubelet changes, and its "
            "kubelet's credentials cannot evict pods (the node authorizer): no kubeconfig "
            "to drain it with",
            how,
        )
    if not ctx.host.exists(path):
        return (f"--kubeconfig {path}: no such file", how)
    return None


@dataclass(frozen=True)
class DrainNode(Action):
    node: str
    kubeconfig: str
    timeout: int
    delete_emptydir_data: bool
    grace_period: int
    force: bool
    marker: str

    @property
    def argv(self) -> List[str]:
        argv = ["kubectl", "--kubeconfig", self.kubeconfig, "drain", self.node,
                "--ignore-daemonsets", f"--timeout={self.timeout}s"]  # fmt: skip
        if self.delete_emptydir_data:
            argv.append("--delete-emptydir-data")
        if self.grace_period >= 0:
            argv.append(f"--grace-period={self.grace_period}")
        if self.force:
            argv.append("--force")
        return argv

    def describe(self) -> str:
        return "evict this node's pods: " + " ".join(self.argv[3:])

    def apply(self, ctx: Context) -> None:
        ctx.host.run(self.argv, timeout=self.timeout + 60)
        ctx.host.touch(self.marker)


@dataclass(frozen=True)
class UncordonNode(Action):
    node: str
    kubeconfig: str
    marker: str

    def describe(self) -> str:
        return f"let pods schedule here again: kubectl uncordon {self.node}"

    def apply(self, ctx: Context) -> None:
        ctx.host.run(["kubectl", "--kubeconfig", self.kubeconfig, "uncordon", self.node],
                     timeout=120)  # fmt: skip
        ctx.host.unlink_marker(self.marker)


def node_changes(ctx: Context) -> List[str]:
    """What will change under this node's pods: kubelet, or the runtime's own release."""
    version = package_version(ctx)
    installed = ctx.facts.packages(ctx.profile.package_manager, ("kubelet",))
    changes = [] if (installed.get("kubelet") or "").startswith(version + "-") else ["kubelet"]
    pending = ctx.runtime.upgrade_pending(ctx)
    return changes + ([pending] if pending else [])


def require_drain_kubeconfig(ctx: Context) -> str:
    found = drain_kubeconfig(ctx)
    problem = drain_problem(ctx)
    if found is None or problem is not None:
        message, hint = problem or ("no kubeconfig to drain this node with", "")
        raise ConfigError(message, hint=hint)
    return found


class Drain(Step):
    name = "drain"
    title = "Drain the node before its kubelet changes"

    def check(self, ctx: Context) -> Check:
        marker = upgrade_marker(ctx, "drained")
        if ctx.host.exists(marker):
            return Check.ok(f"node {node_name(ctx)} drained by this upgrade")
        changes = node_changes(ctx)
        if not changes:
            return Check.ok("nothing under the node's pods changes: no drain")
        settings = ctx.settings
        return Check(
            [DrainNode(node_name(ctx), require_drain_kubeconfig(ctx), settings.drain_timeout,
                       settings.drain_delete_emptydir_data, settings.drain_grace_period,
                       settings.drain_force, marker)]
        )  # fmt: skip


class KubeletPackages(Step):
    name = "kubelet-kubectl"
    title = "kubelet and kubectl at the new release"

    def check(self, ctx: Context) -> Check:
        actions = package_actions(
            ctx, ["kubelet", "kubectl"], before=[MarkRestartPending(KUBELET_UNIT)]
        )
        if actions:
            return Check(actions)
        return Check.ok(f"kubelet and kubectl {package_version(ctx)} installed and {held(ctx)}")


class RestartKubelet(Step):
    name = "kubelet-restart"
    title = "kubelet restarted on its new release"

    def check(self, ctx: Context) -> Check:
        running = kubelet_version(ctx)
        if not restart_pending(ctx, KUBELET_UNIT) and running == target(ctx):
            return Check.ok(f"node {node_name(ctx)} runs kubelet {running}")
        return Check(
            [
                run("systemctl", "daemon-reload", why="reload the packages' unit files"),
                Systemctl("restart", KUBELET_UNIT, "restart kubelet on its new release"),
            ]
        )

    def verify(self, ctx: Context) -> None:
        wanted = target(ctx)
        wait_for(
            lambda: kubelet_version(ctx) == wanted,
            f"node {node_name(ctx)} to report kubelet {wanted}",
            ctx.settings.node_ready_timeout,
            ctx,
        )


class Uncordon(Step):
    name = "uncordon"
    title = "Uncordon the node this upgrade drained"

    def check(self, ctx: Context) -> Check:
        marker = upgrade_marker(ctx, "drained")
        if not ctx.host.exists(marker):
            return Check.ok("this upgrade left the node schedulable")
        return Check([UncordonNode(node_name(ctx), require_drain_kubeconfig(ctx), marker)])

