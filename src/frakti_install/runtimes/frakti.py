"""The frakti profile: pods in hyperd VMs through frakti, privileged pods in
docker, on Kubernetes 1.9-1.12 release binaries (cgroup v1 hosts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from frakti_install import isolation, versions
from frakti_install.isolation import IsolationCheck, PodShape
from frakti_install.kubesource import KubernetesSource, ReleaseBinaries
from frakti_install.runtimes.base import Runtime
from frakti_install.steps.docker import DOCKER_API_CHECK, Docker
from frakti_install.steps.frakti import Frakti
from frakti_install.steps.hyperd import HYPERD_QEMU_CHECK, Hyperd
from frakti_install.steps.preflight import FRAKTI_CHECKS, PreflightCheck, Role, for_role
from frakti_install.steps.proxy import Proxy

if TYPE_CHECKING:
    from frakti_install.config import Settings
    from frakti_install.context import Context
    from frakti_install.engine import Step
    from frakti_install.facts import Facts


class FraktiRuntime(Runtime):
    name = "frakti"
    cri_name = "frakti"
    table = "artifacts"
    offline_bundles = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # a row of the compatibility table; an impossible combination stops here
        self.version_set = settings.versions

    @property
    def versions(self) -> Dict[str, str]:
        return self.version_set.as_dict()

    @property
    def kubernetes(self) -> KubernetesSource:
        return ReleaseBinaries()

    @property
    def cri_socket(self) -> str:
        return self.settings.frakti_socket

    @property
    def kubeadm_cri_socket(self) -> str:
        return self.settings.frakti_socket  # kubeadm <= 1.12 takes the bare path

    def cgroup_driver(self, ctx: Context) -> str:
        """docker's, unless set: frakti, kubelet and docker must agree."""
        if self.settings.cgroup_driver != "auto":
            return self.settings.cgroup_driver
        facts = ctx.facts
        detected = facts.docker_cgroup_driver() or facts.docker_configured_cgroup_driver()
        if detected:
            return detected
        # docker's own default before it runs: systemd on cgroup v2, cgroupfs on v1
        return "systemd" if facts.cgroup_version() == 2 else "cgroupfs"

    def kubelet_args(self, ctx: Context) -> List[str]:
        args = [
            "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.cri_socket}",
            f"--cgroup-driver={self.cgroup_driver(ctx)}",
        ]
        if self.settings.node_ip:
            args.append(f"--node-ip={self.settings.node_ip}")
        if self.settings.kubelet_feature_gates:
            args.append(f"--feature-gates={self.settings.kubelet_feature_gates}")
        return args

    def preflight_checks(self, role: Role) -> Sequence[PreflightCheck]:
        # the binaries hyperd and frakti will talk to, as this host has them now
        return for_role((*FRAKTI_CHECKS, HYPERD_QEMU_CHECK, DOCKER_API_CHECK), role)

    def runtime_steps(self) -> List[Step]:
        return [Proxy(), Hyperd(), Docker(), Frakti()]

    def nothing_newer(self) -> Optional[str]:
        """The compatibility table's sets above the installed one (none today: 1.12 is
        frakti's last release, and no frakti speaks the CRI v1 of Kubernetes >= 1.26)."""
        newer = [
            name for name in versions.known_sets()
            if versions.parse(name) > versions.parse(self.version_set.frakti)[:2]
        ]  # fmt: skip
        if newer:
            return None
        return (
            f"nothing newer: frakti {self.version_set.frakti} with Kubernetes "
            f"{self.version_set.kubernetes} is the newest version set of the compatibility "
            "table (frakti's last release; no frakti speaks the CRI v1 that Kubernetes 1.26+ "
            "requires)"
        )

    def host_problems(self, facts: Facts) -> List[str]:
        problems = []
        if not facts.os().supported:
            problems.append(f"{facts.os().pretty_name} is not a supported system")
        if facts.cgroup_version() != 1:
            problems.append("cgroup v2: frakti's kubelets (Kubernetes 1.12 and older) cannot run")
        if facts.arch() != "amd64":
            problems.append(f"{facts.arch()}: frakti is released for amd64 only")
        return problems

    def fit_reason(self, facts: Facts) -> str:
        why = "cgroup v1 and amd64: frakti's kubelet runs here (the default profile)"
        if facts.kvm_usable():
            return why + "; /dev/kvm usable"
        return why + "; no usable KVM (hyperd falls back to slow emulation)"

    # --- verify -------------------------------------------------------------------
    # frakti answers CRI Version with hyperd's RuntimeName "hyper" (frakti v1.12.0
    # pkg/manager/manager.go, pkg/hyper/hyper.go): kubelet shows it as hyper://...
    CRI_RUNTIME_NAME = "hyper"

    def isolation_checks(self) -> Sequence[IsolationCheck]:
        frakti_down = "systemctl status frakti; journalctl -u frakti"
        return (
            isolation.ready(),
            isolation.kvm(
                blocking=False,
                without="hyperd's VMs get no hardware virtualisation (the VM pod shows "
                "whether they start at all)",
            ),
            isolation.node_runtime(
                self.CRI_RUNTIME_NAME,
                what="frakti (hyperd)",
                fix="Point kubelet at frakti: --container-runtime=remote "
                f"--container-runtime-endpoint=unix://{self.cri_socket} (frakti-install "
                "writes them; run it again on the node).",
            ),
            isolation.cri_answers(self.cri_socket, what="frakti", fix=frakti_down),
            isolation.listening(
                grpc_port_of(self.settings.hyper_grpc),
                what="hyperd's gRPC API",
                fix="systemctl status hyperd; /etc/hyper/config needs gRPCHost="
                f"{self.settings.hyper_grpc}",
            ),
        )

    def vm_pod(self) -> PodShape:
        return PodShape(
            "an ordinary pod (frakti runs non-privileged pods in hyperd VMs)",
            fix="frakti ran it outside a VM: check that kubelet talks to frakti's socket "
            "and that frakti reaches hyperd (journalctl -u frakti -u hyperd).",
        )

    def host_pod(self) -> PodShape:
        return PodShape(
            "privileged (frakti runs privileged pods with docker)",
            container={"securityContext": {"privileged": True}},
            fix="frakti runs privileged pods with docker: check frakti's --docker-endpoint "
            "and that docker runs (systemctl status docker).",
        )

    def sandbox_problem(self, pod: Dict[str, Any], node: Dict[str, Any]) -> Optional[str]:
        reported = (node.get("status", {}).get("nodeInfo") or {}).get(
            "containerRuntimeVersion", ""
        )
        if not str(reported).startswith(self.CRI_RUNTIME_NAME + "://"):
            return f"the node's kubelet runs pods through {reported or '?'}, not frakti"
        return None


def grpc_port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


RUNTIME = FraktiRuntime
