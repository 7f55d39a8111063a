"""How kubelet, kubeadm and kubectl get onto a host: a concern of its own,
not of the runtime profile that uses them.

- ReleaseBinaries: the verified release binaries from dl.k8s.io, with our
  own kubelet.service and kubeadm drop-in, and the CNI plugins beside them
  (Kubernetes 1.9-1.12: older than the package repositories).
- PackageRepository: the signed per-minor repository (pkgs.k8s.io, v1.24+),
  pinned and held; the packages bring the unit, the drop-in and the plugins.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, List

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
