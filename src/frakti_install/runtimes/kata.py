"""The kata profile: containerd + Kata Containers on current Kubernetes from
pkgs.k8s.io, frakti's successor stack, for today's hosts (cgroup v2, EL9,
Debian 12, ...). runc stays the default; pods with runtimeClassName: kata
run in Kata VMs. Its values are data (data/kata.yaml)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from frakti_install import isolation
from frakti_install.errors import ConfigError, UnsupportedOS
from frakti_install.isolation import IsolationCheck, PodShape
from frakti_install.kubesource import KubernetesSource, PackageRepository
from frakti_install.runtimes.base import Runtime
from frakti_install.steps.containerd import CRI, Containerd, ContainerdPackage, ContainerdProxy
from frakti_install.steps.kata import KATA_CHECKS, KataPodAdmitted, KataRuntime, RuntimeClass
from frakti_install.steps.preflight import PreflightCheck, Role, for_role

if TYPE_CHECKING:
    from frakti_install.config import Settings
    from frakti_install.context import Context
    from frakti_install.engine import Step
    from frakti_install.facts import Facts
    from frakti_install.profiles import OsInfo

TABLE = "kata"
OLDEST_REPO_MINOR = (1, 24)  # pkgs.k8s.io starts at v1.24
KATA_RUNTIME_TYPE = "io.containerd.kata.v2"  # containerd's name for Kata's shim v2
_RELEASE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


def kubernetes_release(settings: Settings, default: str) -> str:
    """The release the packages are pinned to: v1.31.13 (v1.24 or newer)."""
    kubernetes = settings.kubernetes_version or default
    if not kubernetes.startswith("v"):
        kubernetes = "v" + kubernetes
    match = _RELEASE.match(kubernetes)
    if not match:
        raise ConfigError(
            f"kubernetes_version {kubernetes!r} is not a release version",
            hint="Write it like v1.31.13: the packages are pinned to one release.",
        )
    if (int(match.group(1)), int(match.group(2))) < OLDEST_REPO_MINOR:
        raise ConfigError(
            f"Kubernetes {kubernetes} is older than the package repositories "
            "(pkgs.k8s.io starts at v1.24)",
            hint="Pick v1.24 or newer for the kata profile.",
        )
    return kubernetes


def _system_matches(system: Dict[str, Any], os: OsInfo) -> bool:
    if system["id"] != os.id:
        return False
    if system.get("match") == "major":
        return os.version.split(".")[0] == str(system["version"])
    return os.version == str(system["version"])


class KataContainersRuntime(Runtime):
    name = "kata"
    cri_name = "containerd (kata profile)"
    table = TABLE

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        data = self.data
        kubernetes = kubernetes_release(settings, str(data["versions"]["kubernetes"]))
        self._versions = {
            "kubernetes": kubernetes,
            "kubernetes_minor": kubernetes.rsplit(".", 1)[0],  # the repository's: v1.31
            "kata": str(data["versions"]["kata"]),
        }

    @property
    def versions(self) -> Dict[str, str]:
        return dict(self._versions)

    @property
    def kubernetes(self) -> KubernetesSource:
        return PackageRepository()

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
        return any(_system_matches(system, os) for system in self.data["systems"])

    def check_host(self, ctx: Context) -> None:
        os = ctx.facts.os()
        if not self.supports(os):
            raise UnsupportedOS(
                f"{os.pretty_name} is not supported by the kata runtime profile.",
                hint="The kata profile supports " + ", ".join(self.systems()) + ".",
            )

    def preflight_checks(self, role: Role) -> Sequence[PreflightCheck]:
        return for_role(KATA_CHECKS, role)

    def runtime_steps(self) -> List[Step]:
        return [ContainerdProxy(), ContainerdPackage(), Containerd(), KataRuntime()]

    def cluster_steps(self) -> List[Step]:
        return [RuntimeClass(), KataPodAdmitted()]

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
                dump_path=(*CRI, "containerd", "runtimes"),
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
            "('containerd config dump'); run frakti-install again on the node.",
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
