"""The plans, read top to bottom like upstream's script."""

from __future__ import annotations

from typing import List

from frakti_install.engine import Step
from frakti_install.steps.cni import CniPlugins, PodNetwork
from frakti_install.steps.docker import Docker
from frakti_install.steps.frakti import Frakti
from frakti_install.steps.hyperd import Hyperd
from frakti_install.steps.kernel import Kernel
from frakti_install.steps.kubeadm_init import KubeadmInitStep
from frakti_install.steps.kubeadm_join import KubeadmJoinStep
from frakti_install.steps.kubelet import Kubelet
from frakti_install.steps.kubernetes import Kubernetes
from frakti_install.steps.node import NodeReady, Untaint
from frakti_install.steps.preflight import Preflight
from frakti_install.steps.proxy import Proxy
from frakti_install.steps.record import RecordSettings
from frakti_install.steps.repos import Repos
from frakti_install.steps.reset import (
    Forget,
    KubeadmReset,
    NetworkCleanup,
    PurgePackages,
    RestoreFiles,
    StopServices,
)
from frakti_install.steps.routes import Routes
from frakti_install.steps.routes_sync import RoutesSync
from frakti_install.steps.selinux import Selinux
from frakti_install.steps.swap import Swap


def node_stack() -> List[Step]:
    """What every node runs: the host prepared, hyperd, docker, frakti and kubelet."""
    return [
        Swap(),
        Kernel(),
        Selinux(),
        Repos(),
        Proxy(),
        Hyperd(),
        Docker(),
        Frakti(),
        CniPlugins(),
        Kubernetes(),
        Kubelet(),
    ]


def allinone() -> List[Step]:
    return [
        Preflight(),
        *node_stack(),
        KubeadmInitStep(),
        PodNetwork(),
        Untaint(),
        Routes(),
        RecordSettings(),
        RoutesSync(),
        NodeReady(),
    ]


def node() -> List[Step]:
    """A worker: the same stack, joined to a master instead of initialised."""
    return [
        Preflight.for_worker(),
        *node_stack(),
        KubeadmJoinStep(),
        PodNetwork(),
        Routes(),
        RecordSettings(),
        RoutesSync(),
        NodeReady(),
    ]


def routes() -> List[Step]:
    return [PodNetwork(), Routes()]


def reset(purge: bool = False) -> List[Step]:
    return [
        KubeadmReset(),
        StopServices(),
        NetworkCleanup(),
        RestoreFiles(),
        PurgePackages(purge),
        Forget(),
    ]


def allinone_for(runtime: str) -> List[Step]:
    """allinone for a runtime profile (settings.runtime)."""
    if runtime == "kata":
        from frakti_install.kata_profile import allinone_kata

        return allinone_kata()
    return allinone()


def node_for(runtime: str) -> List[Step]:
    """node (a worker) for a runtime profile (settings.runtime)."""
    if runtime == "kata":
        from frakti_install.kata_profile import node_kata

        return node_kata()
    return node()
