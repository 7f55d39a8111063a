"""Kubernetes for the kata profile: the signed per-minor package repository
(pkgs.k8s.io), kubelet/kubeadm/kubectl pinned and held, kubelet pointed at
containerd, and `kubeadm init` on containerd's socket. Never apt-key."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Set, Tuple

from frakti_install.actions import Systemctl, prepare_package_index, run
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import ExitCode, FraktiInstallError
from frakti_install.kata_profile import cgroup_driver, kata
from frakti_install.steps.cluster import KUBELET_CONF
from frakti_install.steps.common import package_actions, template_actions
from frakti_install.steps.kubeadm_init import KubeadmInitStep
from frakti_install.steps.kubeadm_join import KubeadmJoinStep
from frakti_install.steps.node import Untaint

if TYPE_CHECKING:
    from frakti_install.context import Context

KUBELET = "kubelet.service"


class KeyMismatch(FraktiInstallError):
    """A downloaded signing key is not the one pinned in kata.yaml (nothing installed)."""

    exit_code = ExitCode.CHECKSUM


def primary_fingerprints(colons: str) -> List[str]:
    """The primary keys' fingerprints in `gpg --with-colons` output (not subkeys')."""
    found, record = [], ""
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sub", "sec", "ssb"):
            record = fields[0]
        elif fields[0] == "fpr" and record == "pub" and len(fields) > 9:
            found.append(fields[9].upper())
            record = ""
    return found


@dataclass(frozen=True)
class InstallKeyring(Action):
    """Release.key (through the artifact layer), checked by fingerprint, dearmored."""

    artifact: str
    path: str

    def describe(self) -> str:
        return (
            f"download {self.artifact}, check its fingerprint and dearmor it into "
            f"{self.path} (gpg --dearmor)"
        )

    def apply(self, ctx: Context) -> None:
        artifacts = kata(ctx).artifacts
        local = artifacts.fetch(self.artifact)
        wanted = set(artifacts.fingerprints(self.artifact))
        with tempfile.TemporaryDirectory(prefix="frakti-install-gpg-") as home:
            shown = ctx.host.run(
                ["gpg", "--batch", "--homedir", home, "--show-keys", "--with-colons", str(local)]
            )
            found = primary_fingerprints(shown.stdout)
            if not found or not set(found) <= wanted:
                raise KeyMismatch(
                    f"{artifacts.get(self.artifact).url} holds key(s) "
                    f"{', '.join(found) or 'none'}, not {', '.join(sorted(wanted))}",
                    hint="The key was not installed. Check --mirror kubernetes-pkgs; a mirror "
                    "that signs with its own key needs --key-fingerprint "
                    f"{self.artifact}=<its fingerprint> (key_fingerprints: in the config).",
                )
            keyring = Path(home) / "keyring.gpg"
            ctx.host.run(
                ["gpg", "--batch", "--homedir", home, "--dearmor", "--output", str(keyring),
                 str(local)]
            )  # fmt: skip
            ctx.host.install_file(keyring, self.path, 0o644)
        from frakti_install.download import sha256_of

        ctx.installed.remember(self.path, artifacts.get(self.artifact), sha256_of(local))


class KubernetesRepo(Step):
    name = "kubernetes-repo"
    title = "The signed Kubernetes package repository (pkgs.k8s.io)"

    def check(self, ctx: Context) -> Check:
        k = kata(ctx)
        repo = k.family["repo"]
        actions: List[Action] = package_actions(ctx, k.family["repo_packages"])
        if repo["keyring"]:
            artifact = k.artifacts.get(repo["key_artifact"])
            if not ctx.installed.matches(repo["keyring"], artifact):
                actions.append(InstallKeyring(repo["key_artifact"], repo["keyring"]))
        url = k.repo_url()
        actions += template_actions(
            ctx,
            repo["path"],
            repo["template"],
            url=url,
            keyring=repo["keyring"],
            minor=k.versions.kubernetes_minor,
        )
        if not actions:
            signed = f"signed-by {repo['keyring']}" if repo["keyring"] else "gpgcheck=1"
            return Check.ok(f"{url} in {repo['path']} ({signed})")
        return Check(actions)


@dataclass(frozen=True)
class InstallKubePackages(Action):
    """Pinned packages from the Kubernetes repo; the index is refreshed first
    (the repository may be new)."""

    specs: Tuple[str, ...]
    names: Tuple[str, ...]
    options: Tuple[str, ...]

    def describe(self) -> str:
        return "install " + " ".join(self.specs) + " from the Kubernetes repository"

    def apply(self, ctx: Context) -> None:
        pm = ctx.packages
        prepare_package_index(ctx, self.names, always_refresh=True)
        ctx.host.run(pm.install_argv([*self.options, *self.specs]), env=pm.env, timeout=1800)
        ctx.journal.record(event="packages", installed=list(self.names))


def apt_holds(ctx: Context) -> Set[str]:
    result = ctx.host.run(["apt-mark", "showhold"], check=False)
    return {line.strip() for line in result.stdout.splitlines() if line.strip()}


class KubePackages(Step):
    name = "kubernetes"
    title = "kubelet, kubeadm and kubectl (pinned and held), CNI plugins"

    def check(self, ctx: Context) -> Check:
        k = kata(ctx)
        family = k.family
        pinned: List[str] = list(k.kubernetes["packages"])
        extra: List[str] = list(k.kubernetes["extra_packages"])
        version = k.versions.package_version
        actions: List[Action] = package_actions(ctx, ctx.profile.packages["kube_deps"])
        installed = ctx.facts.packages(ctx.profile.package_manager, tuple(pinned + extra))
        stale = [n for n in pinned if not (installed.get(n) or "").startswith(version + "-")]
        missing = [n for n in extra if installed.get(n) is None]
        if stale or missing:
            actions.append(
                InstallKubePackages(
                    specs=tuple(k.package_spec(n) for n in stale) + tuple(missing),
                    names=tuple(stale + missing),
                    options=tuple(family["install_options"]),
                )
            )
        if family["hold"] == "apt-mark":
            unheld = [n for n in pinned if n not in apt_holds(ctx)]
            if unheld:
                actions.append(run("apt-mark", "hold", *unheld, why="hold them at this version"))
            held = "held with apt-mark"
        else:
            held = f"held by the exclude line of {family['repo']['path']}"
        if not actions:
            return Check.ok(f"{', '.join(pinned)} {version} installed and {held}")
        return Check(actions)


def kubelet_args(ctx: Context) -> List[str]:
    """No --container-runtime (gone since 1.27), no feature gates: only containerd."""
    args = [
        f"--container-runtime-endpoint=unix://{kata(ctx).containerd['socket']}",
        f"--cgroup-driver={cgroup_driver(ctx)}",
    ]
    if ctx.settings.node_ip:
        args.append(f"--node-ip={ctx.settings.node_ip}")
    return args


class KataKubelet(Step):
    """The packages bring kubelet.service and the kubeadm drop-in (which reads
    the family's env file); only the env file is ours."""

    name = "kubelet"
    title = "kubelet pointed at containerd"

    def check(self, ctx: Context) -> Check:
        env = template_actions(
            ctx,
            ctx.profile.kubelet_env_file,
            "kubernetes-kubelet-env.j2",
            args=kubelet_args(ctx),
        )
        actions: List[Action] = list(env)
        state = ctx.facts.unit(KUBELET)
        if not state.is_enabled:
            actions.append(Systemctl("enable", KUBELET, "enable kubelet at boot"))
        # Before `kubeadm init` kubelet has no config and only crash-loops;
        # kubeadm starts it. After init it must run, with our latest flags.
        if ctx.host.exists(KUBELET_CONF):
            if not state.active:
                actions.append(run("systemctl", "start", KUBELET, why="start kubelet"))
            elif env:
                actions.append(
                    run("systemctl", "restart", KUBELET, why="restart kubelet (its flags changed)")
                )
        if not actions:
            return Check.ok(
                f"kubelet uses {kata(ctx).containerd['socket']} with the "
                f"{cgroup_driver(ctx)} cgroup driver"
            )
        return Check(actions)


class KataKubeadmInit(KubeadmInitStep):
    """frakti's init step (once; an unfinished init is reset and redone) on
    containerd's socket with the profile's Kubernetes release."""

    def init_argv(self, ctx: Context) -> tuple:
        # Not super().init_argv(): that resolves the frakti version table,
        # which refuses any Kubernetes >= 1.26.
        k = kata(ctx)
        return (
            "kubeadm",
            "init",
            f"--pod-network-cidr={ctx.settings.pod_cidr}",
            f"--service-cidr={ctx.settings.service_cidr}",
            f"--kubernetes-version={k.versions.kubernetes}",
            f"--cri-socket=unix://{k.containerd['socket']}",
            f"--node-name={ctx.facts.hostname().lower()}",
        ) + (
            (f"--apiserver-advertise-address={ctx.settings.advertise_address}",)
            if ctx.settings.advertise_address
            else ()
        )


class KataKubeadmJoin(KubeadmJoinStep):
    """frakti's join step (once; an unfinished join is reset and redone) on
    containerd's socket."""

    def cri_socket(self, ctx: Context) -> str:
        return "unix://" + kata(ctx).containerd["socket"]


class KataUntaint(Untaint):
    """The master taint goes; kubeadm's taint names follow the profile's release."""

    def kubernetes_version(self, ctx: Context) -> str:
        return kata(ctx).versions.kubernetes
