"""The kata profile: containerd + Kata Containers on current Kubernetes from
pkgs.k8s.io, frakti's successor stack, for today's hosts (cgroup v2, EL9,
Debian 12, ...). runc stays the default; pods with runtimeClassName: kata
run in Kata VMs. Its values are data (data/kata.yaml)."""

from __future__ import annotations

import copy
import functools
import re
from datetime import date
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from frakti_install import datafiles, isolation, versions
from frakti_install.artifacts import Artifacts
from frakti_install.errors import ConfigError, UnsupportedOS
from frakti_install.isolation import IsolationCheck, PodShape
from frakti_install.kubesource import KubernetesSource, PackageRepository, RepoPackages
from frakti_install.profiles import system_matches
from frakti_install.runtimes.base import Runtime
from frakti_install.steps.containerd import (
    CONTAINERD_VERSION,
    Containerd,
    ContainerdPackage,
    ContainerdProxy,
    config_paths,
)
from frakti_install.steps.kata import (
    ARTIFACT,
    KATA_CHECKS,
    KataPodAdmitted,
    KataPrune,
    KataRuntime,
    RuntimeClass,
    tree_drift,
    tree_of,
    unpack_drift,
)
from frakti_install.steps.preflight import PreflightCheck, Role, for_role

if TYPE_CHECKING:
    from frakti_install.config import Settings
    from frakti_install.context import Context
    from frakti_install.download import Downloader
    from frakti_install.engine import Step
    from frakti_install.facts import Facts
    from frakti_install.profiles import OsInfo

TABLE = "kata"
OLDEST_REPO_MINOR = (1, 24)  # pkgs.k8s.io starts at v1.24
_KATA_RELEASE = re.compile(r"^\d+\.\d+\.\d+$")
KATA_RUNTIME_TYPE = "io.containerd.kata.v2"  # containerd's name for Kata's shim v2


def kubernetes_release(
    settings: Settings, data: Dict[str, Any], day: date
) -> Tuple[str, versions.KubernetesRelease]:
    """The patch the packages are pinned to (the setting, a minor meaning its
    latest patch, or the default minor's) and its minor's row; refused when
    past its end of life on `day` unless allow_eol."""
    requested = settings.kubernetes_version or str(data["versions"]["kubernetes"])
    if not requested.startswith("v"):
        requested = "v" + requested
    if versions.parse(requested)[:2] < OLDEST_REPO_MINOR:
        raise ConfigError(
            f"Kubernetes {requested} is older than the package repositories "
            "(pkgs.k8s.io starts at v1.24)",
            hint="Pick a supported minor for the kata profile ('frakti-install info' lists them).",
        )
    releases = versions.kubernetes_releases(data["kubernetes"])
    return versions.resolve_kubernetes(requested, releases, day=day, allow_eol=settings.allow_eol)


def kata_layout(data: Dict[str, Any], release: str) -> Dict[str, Any]:
    """What the kata-static tarball of `release` holds (kata.layouts), or a
    ConfigError for a release older than the table or not a release number."""
    if not _KATA_RELEASE.match(release):
        raise ConfigError(
            f"kata_version {release!r} is not a Kata Containers release number",
            hint=f"Write it like {data['versions']['kata']} (no leading v).",
        )
    layouts = data["kata"]["layouts"]
    for layout in layouts:
        if versions.parse(release) >= versions.parse(str(layout["from"])):
            return dict(layout)
    raise ConfigError(
        f"Kata Containers {release} is older than the releases the kata profile knows "
        f"(from {layouts[-1]['from']})",
        hint=f"Use {data['versions']['kata']} (the default) or a newer release.",
    )


class KataContainersRuntime(Runtime):
    name = "kata"
    cri_name = "containerd (kata profile)"
    table = TABLE
    offline_bundles = True

    def __init__(self, settings: Settings, day: Optional[date] = None) -> None:
        super().__init__(settings)
        table = datafiles.load(self.table)
        kubernetes, self._release = kubernetes_release(settings, table, day or versions.today())
        kata = settings.kata_version or str(table["versions"]["kata"])
        self._layout = kata_layout(table, kata)
        self._versions = {
            "kubernetes": kubernetes,
            "kubernetes_minor": kubernetes.rsplit(".", 1)[0],  # the repository's: v1.35
            "kata": kata,
        }

    @functools.cached_property
    def data(self) -> Dict[str, Any]:
        """The data file with, filled in for the steps: kata.shim_target and
        kata.config_path, what the shim link and containerd's ConfigPath name
        (the fixed entry paths, the same for every release); kata.layout_shim
        and kata.layout_config, where this release's tarball has them (what
        the entry links point to); kubernetes.cgroup_v1_refused: the chosen
        release's kubelet exits on a cgroup v1 host; kubernetes.containerd_min:
        the oldest containerd it supports, or None (its kubernetes.releases row)."""
        data = copy.deepcopy(datafiles.load(self.table))
        kata = data["kata"]
        kata.update(
            shim_target=kata["entry"]["shim"],
            config_path=kata["entry"]["config"],
            layout_shim=self._layout["shim_target"],
            layout_config=self._layout["config_path"],
            runtime=self._layout["runtime"],
        )
        data["kubernetes"]["cgroup_v1_refused"] = self._release.cgroup_v1_refused
        data["kubernetes"]["containerd_min"] = self._release.containerd_min
        return data

    def artifacts(
        self, arch: str, package_format: str, downloader_factory: Callable[[], Downloader]
    ) -> Artifacts:
        values = dict(self.versions, kata_archive=self._layout["archive"])
        return Artifacts(
            self.settings, values, arch, package_format, downloader_factory, self.table
        )

    @property
    def versions(self) -> Dict[str, str]:
        return dict(self._versions)

    @property
    def kubernetes(self) -> KubernetesSource:
        return PackageRepository()

    # --- offline bundles ----------------------------------------------------------
    def bundle_artifacts(self, family: str) -> List[str]:
        """The kata tarball (runtime-rs needs nothing from 4.1's kata-go-static)
        and the repository's signing key."""
        key = str(self.data["families"][family]["repo"]["key_artifact"])
        return ["kata", *([key] if key else [])]

    def bundle_os_packages(self, family: str) -> Optional[Dict[str, List[str]]]:
        values = self.data["families"][family]
        kube_deps = datafiles.load("profiles")["families"][family]["packages"]["kube_deps"]
        return {
            "containerd": list(values["containerd_packages"]),
            "kubernetes_repo": list(values["repo_packages"]),
            "kube_deps": list(kube_deps),
        }

    def bundle_repo_packages(
        self, family: str, package_format: str, arch: str, artifacts: Artifacts
    ) -> Optional[RepoPackages]:
        """kubelet, kubeadm, kubectl pinned as KubePackages pins them, the extra
        packages, and what they require from the repository in this minor."""
        values = self.data["families"][family]
        kubernetes = self.data["kubernetes"]
        version = self.kubernetes_version.lstrip("v")
        release = versions.parse(self.kubernetes_version)
        specs = [str(values["package_spec"]).format(name=n, version=version)
                 for n in kubernetes["packages"]]  # fmt: skip
        specs += list(kubernetes["extra_packages"])
        specs += [
            str(dep["package"])
            for dep in kubernetes.get("repo_dependencies", ())
            if release < versions.parse(str(dep["before"]))
        ]
        url = str(values["repo"]["url"]).format(
            base=artifacts.base_url("kubernetes-pkgs"), **self.versions
        )
        key = str(values["repo"]["key_artifact"])
        return RepoPackages(package_format, url, key, tuple(specs), arch)

    def bundle_version_flags(self) -> Optional[str]:
        return (
            f"--runtime {self.name} --kubernetes-version {self.kubernetes_version} "
            f"--kata-version {self._versions['kata']}"
        )

    @property
    def cri_socket(self) -> str:
        return str(self.data["containerd"]["socket"])

    def cgroup_driver(self, ctx: Context) -> str:
        """The setting, or systemd: kubeadm's default since 1.22 and the one to
        use on cgroup v2 (systemd owns the hierarchy); "auto" does not ask docker."""
        chosen = self.settings.cgroup_driver
        return "systemd" if chosen == "auto" else chosen

    def kubelet_args(self, ctx: Context) -> List[str]:
        """No --container-runtime (gone since 1.27), no feature gates: only containerd."""
        args = [
            f"--container-runtime-endpoint=unix://{self.cri_socket}",
            f"--cgroup-driver={self.cgroup_driver(ctx)}",
        ]
        if self.settings.node_ip:
            args.append(f"--node-ip={self.settings.node_ip}")
        return args

    def systems(self) -> List[str]:
        return [f"{s['id']} {s['version']}" for s in self.data["systems"]]

    def supports(self, os: OsInfo) -> bool:
        return any(system_matches(system, os.id, os.version) for system in self.data["systems"])

    def check_host(self, ctx: Context) -> None:
        os = ctx.facts.os()
        if not self.supports(os):
            raise UnsupportedOS(
                f"{os.pretty_name} is not supported by the kata runtime profile.",
                hint="The kata profile supports " + ", ".join(self.systems()) + ".",
            )

    def preflight_checks(self, role: Role) -> Sequence[PreflightCheck]:
        return for_role((*KATA_CHECKS, CONTAINERD_VERSION), role)

    def runtime_steps(self) -> List[Step]:
        return [ContainerdProxy(), ContainerdPackage(), Containerd(), KataRuntime()]

    def cluster_steps(self) -> List[Step]:
        return [RuntimeClass(), KataPodAdmitted()]

    def ready_steps(self) -> List[Step]:
        return [KataPrune()]

    def upgrade_downloads(self, ctx: Context) -> List[str]:
        return [ARTIFACT] if unpack_drift(ctx, tree_of(ctx)) else []

    def upgrade_pending(self, ctx: Context) -> Optional[str]:
        drift = tree_drift(ctx)
        return f"kata ({drift})" if drift else None

    def host_problems(self, facts: Facts) -> List[str]:
        problems = []
        if not self.supports(facts.os()):
            problems.append(
                f"{facts.os().pretty_name} is not a kata system ({', '.join(self.systems())})"
            )
        arches = self.data["kata"]["arches"]
        if facts.arch() not in arches:
            problems.append(
                f"{facts.arch()}: kata's static release is built for {', '.join(arches)}"
            )
        if not facts.kvm_usable():
            why = (
                "no vmx/svm CPU flag"
                if not facts.hardware_virtualization()
                else "/dev/kvm unusable"
            )
            problems.append(f"{why}: Kata VMs cannot start")
        return problems

    def fit_reason(self, facts: Facts) -> str:
        return "/dev/kvm usable" if facts.kvm_usable() else "no usable KVM"

    # --- verify -------------------------------------------------------------------
    def isolation_checks(self) -> Sequence[IsolationCheck]:
        kata, containerd = self.data["kata"], self.data["containerd"]
        return (
            isolation.ready(),
            isolation.kvm(blocking=True, without="Kata's VMs cannot start"),
            isolation.modules(
                kata["modules"],
                why="Kata's VMs reach their agent (vsock) and network (vhost-net) through them",
            ),
            isolation.cri_handler(
                kata["handler"],
                socket=self.cri_socket,
                runtime_type=KATA_RUNTIME_TYPE,
                config=containerd["config"],
                runtimes_at=lambda version: config_paths(version)["runtimes"],
                unit=containerd["unit"],
                reads=(containerd["config"], containerd["imports"]),
            ),
            isolation.runtime_class(
                kata["runtime_class"],
                kata["handler"],
                {"memory": kata["overhead"]["memory"], "cpu": kata["overhead"]["cpu"]},
            ),
        )

    def vm_pod(self) -> PodShape:
        name = self.data["kata"]["runtime_class"]
        return PodShape(
            f"runtimeClassName: {name}",
            spec={"runtimeClassName": name},
            fix=f"A pod with runtimeClassName: {name} ran on the host's kernel: containerd's "
            f"{self.data['kata']['handler']} runtime must be io.containerd.kata.v2 "
            "('containerd config dump') and its shim Kata's ('containerd-shim-kata-v2 "
            "--version'); run frakti-install again on the node (it rewrites both).",
            sandbox_fix=f"containerd could not make the pod's sandbox with the "
            f"{self.data['kata']['handler']} handler: see the handler and runtimeclass checks "
            "above, and 'journalctl -u containerd' on the node.",
        )

    def host_pod(self) -> PodShape:
        return PodShape(
            "no RuntimeClass (containerd's default runtime, runc)",
            fix="containerd's default runtime is not runc: see default_runtime_name in "
            "'containerd config dump'.",
        )

    def sandbox_problem(self, pod: Dict[str, Any], node: Dict[str, Any]) -> Optional[str]:
        name = self.data["kata"]["runtime_class"]
        if (pod.get("spec") or {}).get("runtimeClassName") != name:
            return f"the API server stored the pod without runtimeClassName: {name}"
        return None


RUNTIME = KataContainersRuntime
