"""What a runtime profile is: the one interface frakti and kata implement.

A profile says which versions it installs, where its artifacts come from,
which CRI socket and cgroup driver kubelet uses, what preflight checks, and
which steps it adds to a node. Everything else (the host prepared, kubeadm,
the pod network, routes) is the same for every profile and lives in plans.py.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, List, Optional, Sequence

from frakti_install import datafiles, profiles
from frakti_install.artifacts import Artifacts
from frakti_install.config import Settings
from frakti_install.errors import UnsupportedOS
from frakti_install.isolation import IsolationCheck, PodShape
from frakti_install.kubesource import KubernetesSource, RepoPackages
from frakti_install.steps.preflight import PreflightCheck, Role

if TYPE_CHECKING:
    from frakti_install.context import Context
    from frakti_install.download import Downloader
    from frakti_install.engine import Step
    from frakti_install.facts import Facts
    from frakti_install.profiles import Profile


class Runtime(ABC):
    name: ClassVar[str]
    table: ClassVar[str]  # its data file (data/<table>.yaml): artifacts, bases, ...
    cri_name: ClassVar[str]  # what kubelet talks to, in words: "containerd (kata profile)"
    offline_bundles: ClassVar[bool] = False  # whether `bundle create` carries its artifacts

    def __init__(self, settings: Settings) -> None:
        """Resolve and check the versions: a bad setting raises ConfigError here,
        before anything changes."""
        self.settings = settings

    # --- what it installs --------------------------------------------------
    @property
    @abstractmethod
    def versions(self) -> Dict[str, str]:
        """Component -> version, e.g. {"kubernetes": "v1.12.10", "frakti": ...};
        also the placeholders of the artifact URLs."""

    @property
    def kubernetes_version(self) -> str:
        return self.versions["kubernetes"]

    def version(self, component: str) -> str:
        return self.versions[component]

    @property
    @abstractmethod
    def kubernetes(self) -> KubernetesSource:
        """How kubelet, kubeadm and kubectl get onto the host."""

    @functools.cached_property
    def data(self) -> Dict[str, Any]:
        """Its data file (data/<table>.yaml), validated; this profile's own copy."""
        return datafiles.load(self.table)

    def family(self, profile: Profile) -> Dict[str, Any]:
        """The data file's values for this OS family (families.<family>), if any."""
        return dict(self.data.get("families", {}).get(profile.family, {}))

    def artifacts(
        self, arch: str, package_format: str, downloader_factory: Callable[[], Downloader]
    ) -> Artifacts:
        return Artifacts(
            self.settings, self.versions, arch, package_format, downloader_factory, self.table
        )

    # --- what an offline bundle carries (bundle.py) -------------------------
    def bundle_artifacts(self, family: str) -> List[str]:
        """The artifacts a bundle for hosts of this family ("debian", "rhel") holds."""
        return list(self.data["artifacts"])

    def bundle_os_packages(self, family: str) -> Optional[Dict[str, List[str]]]:
        """The OS packages the install takes from the distribution (listed in
        the manifest, not carried); None: the family's table in profiles.yaml."""
        return None

    def bundle_repo_packages(
        self, family: str, package_format: str, arch: str, artifacts: Artifacts
    ) -> Optional[RepoPackages]:
        """The package files a bundle carries from a package repository, if any."""
        return None

    def bundle_version_flags(self) -> Optional[str]:
        """The flags that install this profile's versions (a bundle's hint);
        None: the version-set flags."""
        return None

    # --- how kubelet reaches it --------------------------------------------
    @property
    @abstractmethod
    def cri_socket(self) -> str:
        """The CRI socket's path."""

    @property
    def kubeadm_cri_socket(self) -> str:
        """--cri-socket as this profile's kubeadm takes it."""
        return "unix://" + self.cri_socket

    @abstractmethod
    def cgroup_driver(self, ctx: Context) -> str:
        """The driver kubelet and the runtime must both use."""

    @abstractmethod
    def kubelet_args(self, ctx: Context) -> List[str]:
        """KUBELET_EXTRA_ARGS: the flags that point kubelet at the runtime."""

    # --- what it checks and adds --------------------------------------------
    def check_host(self, ctx: Context) -> None:
        """Raise UnsupportedOS when the profile does not know this system: by
        default, a system of profiles.yaml whose `runtimes` do not name it."""
        os = ctx.facts.os()
        system = profiles.find_system(os.id, os.version)
        runs = system.get("runtimes", [self.name]) if system else [self.name]
        if self.name not in runs:
            raise UnsupportedOS(
                f"{os.pretty_name} is not supported by the {self.name} runtime profile "
                f"(only by {', '.join(runs)})",
                hint=f"Use --runtime {runs[0]}.",
            )

    @abstractmethod
    def preflight_checks(self, role: Role) -> Sequence[PreflightCheck]:
        """The checks made before anything changes, on a master or a worker."""

    @abstractmethod
    def runtime_steps(self) -> List[Step]:
        """The runtime on a node, after the host is prepared and before Kubernetes."""

    def cluster_steps(self) -> List[Step]:
        """Made once per cluster, on the master, after the node is Ready."""
        return []

    # --- what `upgrade` does ------------------------------------------------------
    def nothing_newer(self) -> Optional[str]:
        """Why this profile has no newer release to upgrade to (None: it may have)."""
        return None

    def upgrade_steps(self) -> List[Step]:
        """The runtime's steps `upgrade` runs again, while the node is drained (a newer
        release of the runtime put in place, its configuration migrated)."""
        return self.runtime_steps()

    def upgrade_downloads(self, ctx: Context) -> List[str]:
        """The artifacts upgrade_steps will fetch on this host (fetched and
        verified before the upgrade's first change)."""
        return []

    def ready_steps(self) -> List[Step]:
        """Once the node is Ready again (install, join, upgrade): what the runtime
        kept until then is removed (an older Kata tree)."""
        return []

    def upgrade_pending(self, ctx: Context) -> Optional[str]:
        """What of the runtime an upgrade will change under the node's pods (None: nothing)."""
        return None

    @abstractmethod
    def host_problems(self, facts: Facts) -> List[str]:
        """Why this profile cannot work on a host (empty: it fits); for `info`."""

    @abstractmethod
    def fit_reason(self, facts: Facts) -> str:
        """Why it works on a host that has none of host_problems(); for `info`."""

    # --- how verify shows that pods run in VMs (verify.py, isolation.py) ----------
    @property
    def verify_image(self) -> str:
        """The image of verify's pods: the verify_image setting, else the profile's
        (its data file's verify.image, pinned by digest)."""
        return self.settings.verify_image or str(self.data["verify"]["image"])

    @abstractmethod
    def isolation_checks(self) -> Sequence[IsolationCheck]:
        """What a node needs so that this profile's VM pods start (KVM, modules,
        the runtime handler, ...), read without starting a pod."""

    @abstractmethod
    def vm_pod(self) -> PodShape:
        """What sends a pod to a VM on this profile (verify's canary pod)."""

    @abstractmethod
    def host_pod(self) -> PodShape:
        """What keeps a pod on the host's kernel (the mixed runtime's other half)."""

    @abstractmethod
    def sandbox_problem(self, pod: Dict[str, Any], node: Dict[str, Any]) -> Optional[str]:
        """Why the admitted canary pod, on that node, is not one this profile's VM
        runtime runs (None: it is)."""
