"""The kata runtime profile: containerd + Kata Containers on current Kubernetes,
frakti's successor stack, for today's hosts (cgroup v2, EL9, Debian 12, ...).

    allinone_kata()     the plan, read top to bottom (node_kata(): a worker's)
    kata(ctx)           the profile's data for this host: versions, the
                        family's values (data/kata.yaml), its artifacts
    profile_fit(facts)  which runtime profile suits a host, and why (for `info`)

The frakti profile stays the default wherever it can work.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, cast

from frakti_install import datafiles
from frakti_install.artifacts import Artifact, Artifacts
from frakti_install.config import Settings, split_fingerprints
from frakti_install.errors import ConfigError, UnsupportedOS
from frakti_install.versions import VersionSet

if TYPE_CHECKING:
    from frakti_install.context import Context
    from frakti_install.download import Downloader
    from frakti_install.engine import Step
    from frakti_install.facts import Facts
    from frakti_install.profiles import OsInfo

DATA = "kata"
OLDEST_REPO_MINOR = (1, 24)  # pkgs.k8s.io starts at v1.24
_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


def kata_node_stack() -> List[Step]:
    """What every kata node runs: the host prepared, containerd with the kata
    handler, and a pinned kubelet pointed at containerd."""
    from frakti_install.steps.containerd import Containerd, ContainerdPackage, ContainerdProxy
    from frakti_install.steps.kata import KataRuntime
    from frakti_install.steps.kernel import Kernel
    from frakti_install.steps.kube_packages import KataKubelet, KubePackages, KubernetesRepo
    from frakti_install.steps.repos import Repos
    from frakti_install.steps.selinux import Selinux
    from frakti_install.steps.swap import Swap

    return [
        Swap(),
        Kernel(),
        Selinux(),
        Repos(),  # EL9: Docker's signed repo, for containerd.io
        KubernetesRepo(),
        ContainerdProxy(),
        ContainerdPackage(),
        Containerd(),
        KataRuntime(),
        KubePackages(),
        KataKubelet(),
    ]


def allinone_kata() -> List[Step]:
    """`allinone --runtime kata`: a one-node cluster whose pods may run in Kata VMs."""
    from frakti_install.steps.cni import PodNetwork
    from frakti_install.steps.kata import KataPodAdmitted, KataPreflight, RuntimeClass
    from frakti_install.steps.kube_packages import KataKubeadmInit, KataUntaint
    from frakti_install.steps.node import NodeReady
    from frakti_install.steps.record import RecordSettings
    from frakti_install.steps.routes import Routes
    from frakti_install.steps.routes_sync import RoutesSync

    return [
        KataPreflight(),
        *kata_node_stack(),
        KataKubeadmInit(),
        PodNetwork(),
        KataUntaint(),
        Routes(),
        RecordSettings(),
        RoutesSync(),
        NodeReady(),
        RuntimeClass(),
        KataPodAdmitted(),
    ]


def node_kata() -> List[Step]:
    """`node --runtime kata`: a worker joined to a kata master (the RuntimeClass
    is the cluster's, applied by the master)."""
    from frakti_install.steps.cni import PodNetwork
    from frakti_install.steps.kata import KataPreflight
    from frakti_install.steps.kube_packages import KataKubeadmJoin
    from frakti_install.steps.node import NodeReady
    from frakti_install.steps.record import RecordSettings
    from frakti_install.steps.routes import Routes
    from frakti_install.steps.routes_sync import RoutesSync

    return [
        KataPreflight.for_worker(),
        *kata_node_stack(),
        KataKubeadmJoin(),
        PodNetwork(),
        Routes(),
        RecordSettings(),
        RoutesSync(),
        NodeReady(),
    ]


# --- versions ---------------------------------------------------------------
@dataclass(frozen=True)
class KataVersions:
    kubernetes: str  # v1.31.13
    kata: str  # 3.20.0

    @property
    def kubernetes_minor(self) -> str:
        """The package repository's minor: v1.31."""
        return self.kubernetes.rsplit(".", 1)[0]

    @property
    def package_version(self) -> str:
        """The packages' upstream version: 1.31.13."""
        return self.kubernetes.lstrip("v")

    def as_dict(self) -> Dict[str, str]:
        return {
            "kubernetes": self.kubernetes,
            "kubernetes_minor": self.kubernetes_minor,
            "kata": self.kata,
        }


def kata_versions(settings: Settings) -> KataVersions:
    data = datafiles.load(DATA)["versions"]
    kubernetes = settings.kubernetes_version or str(data["kubernetes"])
    if not kubernetes.startswith("v"):
        kubernetes = "v" + kubernetes
    match = _VERSION.match(kubernetes)
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
    return KataVersions(kubernetes=kubernetes, kata=str(data["kata"]))


# --- artifacts ----------------------------------------------------------------
class KataArtifacts(Artifacts):
    """artifacts.py's rules (mirrors, given or published sums, the download
    cache) over kata.yaml's table. One extra kind of check: "fingerprint",
    a signing key whose OpenPGP fingerprint is compared before installing."""

    TABLE = DATA

    def __init__(
        self,
        settings: Settings,
        versions: KataVersions,
        arch: str,
        package_format: str,
        downloader_factory: Callable[[], Downloader],
    ) -> None:
        # Artifacts only asks its versions for as_dict() (the URL placeholders).
        super().__init__(
            settings, cast(VersionSet, versions), arch, package_format, downloader_factory
        )

    def fingerprints(self, name: str) -> Tuple[str, ...]:
        """The keys to trust: the user's (key_fingerprints) replace the table's."""
        given = self._settings.key_fingerprints.get(name)
        if given:
            return tuple(split_fingerprints(given))
        entry = self._table()["artifacts"][name]
        return tuple(str(f).upper() for f in entry.get("fingerprints", ()))

    def get(self, name: str) -> Artifact:
        artifact = super().get(name)
        if artifact.checksum != "fingerprint":
            return artifact
        # Trusting other keys makes it another artifact: the keyring is installed again.
        trust = ",".join(sorted(self.fingerprints(name)))
        return dataclasses.replace(artifact, identity=f"{artifact.identity}#trust={trust}")

    def sha256(self, name: str) -> Optional[str]:
        artifact = self.get(name)
        if artifact.checksum == "fingerprint" and not artifact.given_sha256:
            return None  # fetched as is; the key's fingerprint is checked before use
        return super().sha256(name)

    def base_url(self, kind: str) -> str:
        table = self._table()
        return str(self._settings.mirrors.get(kind, table["bases"][kind])).rstrip("/")


# --- the profile for one host -------------------------------------------------
@dataclass(frozen=True)
class Kata:
    """kata.yaml resolved for this host and these settings."""

    versions: KataVersions
    family: Dict[str, Any]  # families.<family>
    containerd: Dict[str, Any]
    runtime: Dict[str, Any]  # the kata: table
    kubernetes: Dict[str, Any]
    artifacts: KataArtifacts

    def repo_url(self) -> str:
        template = str(self.family["repo"]["url"])
        return template.format(
            base=self.artifacts.base_url("kubernetes-pkgs"), **self.versions.as_dict()
        )

    def package_spec(self, name: str) -> str:
        return str(self.family["package_spec"]).format(
            name=name, version=self.versions.package_version
        )


def _system_matches(system: Dict[str, Any], os_id: str, version: str) -> bool:
    if system["id"] != os_id:
        return False
    if system.get("match") == "major":
        return version.split(".")[0] == str(system["version"])
    return version == str(system["version"])


def kata_systems() -> List[str]:
    return [f"{s['id']} {s['version']}" for s in datafiles.load(DATA)["systems"]]


def supports(os: OsInfo) -> bool:
    return any(_system_matches(s, os.id, os.version) for s in datafiles.load(DATA)["systems"])


def kata(ctx: Context) -> Kata:
    """The kata profile for ctx's host (UnsupportedOS where kata.yaml lists no such system).

    Built once per context: it depends only on the OS and the settings."""
    cached = ctx.__dict__.get("_kata_profile")
    if isinstance(cached, Kata):
        return cached
    os = ctx.facts.os()
    if not supports(os):
        raise UnsupportedOS(
            f"{os.pretty_name} is not supported by the kata runtime profile.",
            hint="The kata profile supports " + ", ".join(kata_systems()) + ".",
        )
    data = datafiles.load(DATA)
    versions = kata_versions(ctx.settings)
    factory = ctx.downloader_factory
    if factory is None:
        from frakti_install.context import _default_downloader_factory

        factory = _default_downloader_factory(ctx.settings)
    profile = ctx.profile
    built = Kata(
        versions=versions,
        family=dict(data["families"][profile.family]),
        containerd=dict(data["containerd"]),
        runtime=dict(data["kata"]),
        kubernetes=dict(data["kubernetes"]),
        artifacts=KataArtifacts(
            ctx.settings, versions, ctx.facts.arch(), profile.package_format, factory
        ),
    )
    ctx.__dict__["_kata_profile"] = built
    return built


def cgroup_driver(ctx: Context) -> str:
    """kubelet's and containerd's runc cgroup driver: the setting, or systemd.

    systemd is kubeadm's default since 1.22 and the one to use on cgroup v2
    (systemd owns the hierarchy); "auto" here does not ask docker."""
    chosen = ctx.settings.cgroup_driver
    return "systemd" if chosen == "auto" else chosen


# --- which profile fits -------------------------------------------------------
def _frakti_problems(facts: Facts) -> List[str]:
    problems = []
    if not facts.os().supported:
        problems.append(f"{facts.os().pretty_name} is not a supported system")
    if facts.cgroup_version() != 1:
        problems.append("cgroup v2: frakti's kubelets (Kubernetes 1.12 and older) cannot run")
    if facts.arch() != "amd64":
        problems.append(f"{facts.arch()}: frakti is released for amd64 only")
    return problems


def _kata_problems(facts: Facts) -> List[str]:
    problems = []
    if not supports(facts.os()):
        problems.append(
            f"{facts.os().pretty_name} is not a kata system ({', '.join(kata_systems())})"
        )
    arches = datafiles.load(DATA)["kata"]["arches"]
    if facts.arch() not in arches:
        problems.append(f"{facts.arch()}: kata's static release is built for {', '.join(arches)}")
    if not facts.kvm_usable():
        why = "no vmx/svm CPU flag" if not facts.hardware_virtualization() else "/dev/kvm unusable"
        problems.append(f"{why}: Kata VMs cannot start")
    return problems


def _join(items: Sequence[str]) -> str:
    return "; ".join(items)


def profile_fit(facts: Facts) -> Dict[str, str]:
    """Which runtime profile fits this host and why, e.g.
    {"recommended": "kata", "why": "cgroup v2: frakti's kubelets ... cannot run; /dev/kvm usable",
     "frakti": "cgroup v2: ...", "kata": "fits"}."""
    if facts.init_system() != "systemd":
        why = f"init system is {facts.init_system()}: both profiles manage services with systemd"
        return {"recommended": "none", "why": why, "frakti": why, "kata": why}
    frakti, kata_ = _frakti_problems(facts), _kata_problems(facts)
    kvm = "/dev/kvm usable" if facts.kvm_usable() else "no usable KVM"
    if not frakti:
        recommended = "frakti"
        why = f"cgroup v1 and amd64: frakti's kubelet runs here (the default profile); {kvm}"
        if not facts.kvm_usable():
            why += " (hyperd falls back to slow emulation)"
    elif not kata_:
        recommended, why = "kata", _join(frakti + [kvm])
    else:
        recommended = "none"
        why = f"frakti: {_join(frakti)}. kata: {_join(kata_)}"
    return {
        "recommended": recommended,
        "why": why,
        "frakti": _join(frakti) or "fits",
        "kata": _join(kata_) or "fits",
    }
