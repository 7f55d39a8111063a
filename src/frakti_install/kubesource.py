"""How kubelet, kubeadm and kubectl get onto a host: a concern of its own,
not of the runtime profile that uses them.

- ReleaseBinaries: the verified release binaries from dl.k8s.io, with our
  own kubelet.service and kubeadm drop-in, and the CNI plugins beside them
  (Kubernetes 1.9-1.12: older than the package repositories).
- PackageRepository: the signed per-minor repository (pkgs.k8s.io, v1.24+),
  pinned and held; the packages bring the unit, the drop-in and the plugins.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Tuple

from frakti_install.artifacts import RPM_ARCH
from frakti_install.errors import ConfigError, DownloadError
from frakti_install.host import Host
from frakti_install.steps.cni import CniPlugins
from frakti_install.steps.kube_packages import KubePackages, KubernetesRepo
from frakti_install.steps.kubelet import Kubelet
from frakti_install.steps.kubernetes import Kubernetes

if TYPE_CHECKING:
    from frakti_install.engine import Step


class KubernetesSource(ABC):
    @abstractmethod
    def repo_steps(self) -> List[Step]:
        """Before the runtime: where the packages will come from."""

    @abstractmethod
    def install_steps(self) -> List[Step]:
        """After the runtime: the binaries (and the CNI plugins)."""

    @abstractmethod
    def kubelet(self) -> Step:
        """kubelet's service pointed at the runtime."""


class ReleaseBinaries(KubernetesSource):
    def repo_steps(self) -> List[Step]:
        return []

    def install_steps(self) -> List[Step]:
        return [CniPlugins(), Kubernetes()]

    def kubelet(self) -> Step:
        return Kubelet(unit_files=True)


class PackageRepository(KubernetesSource):
    def repo_steps(self) -> List[Step]:
        return [KubernetesRepo()]

    def install_steps(self) -> List[Step]:
        return [KubePackages()]

    def kubelet(self) -> Step:
        return Kubelet(unit_files=False)


# --- offline bundles: the repository's package files -----------------------------


@dataclass(frozen=True)
class RepoPackages:
    """The packages an offline bundle carries from the Kubernetes package
    repository, as apt/dnf would install them from it."""

    package_format: str  # deb | rpm
    url: str  # the repository (the kubernetes-pkgs mirror's when set)
    key_artifact: str  # its signing key, checked before the download uses it
    specs: Tuple[str, ...]  # pinned (name=version-1.1, name-version) or a bare name
    arch: str  # amd64 | arm64

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(re.split(r"[=]|-(?=\d)", spec, maxsplit=1)[0] for spec in self.specs)


def package_name(filename: str) -> str:
    """NAME_VERSION_ARCH.deb or NAME-VERSION-RELEASE.ARCH.rpm -> NAME."""
    if filename.endswith(".deb"):
        return filename.split("_", 1)[0]
    return filename.rsplit("-", 2)[0]


def download_repo_packages(
    host: Host, repo: RepoPackages, key: Path, workdir: Path
) -> Dict[str, Path]:
    """Download the package files into workdir/packages with the host's own
    apt or dnf, given only this repository (a private configuration: the
    machine's sources, preferences, dpkg status and caches play no part);
    apt checks the repository's signature with `key` and each file against
    its index. Returns name -> file."""
    out = workdir / "packages"
    out.mkdir(parents=True, exist_ok=True)
    if repo.package_format == "deb":
        _apt_download(host, repo, key, workdir / "apt", out)
    else:
        _dnf_download(host, repo, key, workdir / "dnf", out)
    files = {package_name(path.name): path for path in sorted(out.iterdir()) if path.is_file()}
    missing = [name for name in repo.names if name not in files]
    if missing:
        raise DownloadError(
            f"{repo.url} gave no package file for {', '.join(missing)}",
            hint="Check --kubernetes-version and --mirror kubernetes-pkgs.",
        )
    return files


# What `bundle create` runs to fetch a repository's packages: gpg checks the
# signing key (fingerprint, expiry) and dearmors it for apt; apt-get or dnf
# downloads and checks the packages.
BUNDLE_TOOLS = {"deb": ("gpg", "apt-get"), "rpm": ("gpg", "dnf")}
TOOL_PACKAGES = {"deb": "apt-get install gpg", "rpm": "dnf install gnupg2"}


def require_bundle_tools(host: Host, fmt: str) -> None:
    """ConfigError naming every tool of BUNDLE_TOOLS[fmt] this machine lacks:
    checked before the first download, not found missing half-way."""
    missing = [name for name in BUNDLE_TOOLS[fmt] if host.which(name) is None]
    if not missing:
        return
    if "gpg" in missing and len(missing) == 1:
        hint = f"Install it ({TOOL_PACKAGES[fmt]}) and run the same command again."
    else:
        hint = (
            f"Run 'frakti-install bundle create --family {fmt}' on a machine of that family "
            f"with {' and '.join(BUNDLE_TOOLS[fmt])} ({TOOL_PACKAGES[fmt]})."
        )
    raise ConfigError(
        f"a {fmt} bundle for the kata profile checks the repository's signing key with gpg "
        f"and downloads its Kubernetes packages with {BUNDLE_TOOLS[fmt][1]}; this machine "
        f"has no {' and no '.join(missing)}",
        hint=hint,
    )


def _apt_download(host: Host, repo: RepoPackages, key: Path, apt: Path, out: Path) -> None:
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    keyring = apt / "keyring.gpg"
    host.run(["gpg", "--batch", "--homedir", str(apt), "--dearmor", "--output", str(keyring),
              str(key)])  # fmt: skip
    sources = apt / "sources.list"
    sources.write_text(f"deb [signed-by={keyring}] {repo.url} /\n", encoding="utf-8")
    (apt / "status").write_text("", encoding="utf-8")
    options: List[str] = []
    for name, value in (
        ("Dir::Etc::SourceList", sources),
        ("Dir::Etc::SourceParts", apt / "sources.list.d"),
        ("Dir::Etc::PreferencesParts", apt / "preferences.d"),
        ("Dir::State::Lists", apt / "lists"),
        ("Dir::State::status", apt / "status"),
        ("Dir::Cache", apt / "cache"),
        ("APT::Architecture", repo.arch),
        ("APT::Architectures", repo.arch),
    ):
        options += ["-o", f"{name}={value}"]
    host.run(["apt-get", *options, "update"], timeout=900)
    # apt-get download writes into the current directory (apt-get(8))
    host.run(["env", f"--chdir={out}", "apt-get", *options, "download", *repo.specs],
             timeout=1800)  # fmt: skip


def _dnf_download(host: Host, repo: RepoPackages, key: Path, dnf: Path, out: Path) -> None:
    (dnf / "repos.d").mkdir(parents=True, exist_ok=True)
    (dnf / "repos.d" / "kubernetes.repo").write_text(
        f"[kubernetes]\nname=Kubernetes\nbaseurl={repo.url}\nenabled=1\ngpgcheck=1\n"
        f"gpgkey=file://{key}\n",
        encoding="utf-8",
    )
    rpm_arch = RPM_ARCH.get(repo.arch, repo.arch)
    host.run(
        ["dnf", "-y", f"--setopt=reposdir={dnf / 'repos.d'}", f"--setopt=cachedir={dnf / 'cache'}",
         "--repo", "kubernetes", f"--forcearch={rpm_arch}", "download", f"--destdir={out}",
         *repo.specs],
        timeout=1800,
    )  # fmt: skip
