"""The plans, read top to bottom like upstream's script. The runtime profile
(ctx.runtime: frakti, kata, ...) fills in its own steps; the rest is the
same for every profile."""

from __future__ import annotations

from typing import List

from frakti_install.engine import Step
from frakti_install.runtimes import Runtime
from frakti_install.steps.cni import PodNetwork
from frakti_install.steps.kernel import Kernel
from frakti_install.steps.kubeadm_init import KubeadmInitStep
from frakti_install.steps.kubeadm_join import KubeadmJoinStep
from frakti_install.steps.node import NodeReady, Untaint
from frakti_install.steps.preflight import Preflight, Role
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
from frakti_install.steps.upgrade import (
    Drain,
    KubeadmPackage,
    KubeadmUpgrade,
    KubeletPackages,
    Prefetch,
    RestartKubelet,
    Uncordon,
    UpgradeSkew,
)


def node_stack(runtime: Runtime) -> List[Step]:
    """What every node runs: the host prepared, the runtime, kubelet pointed at it."""
    kubernetes = runtime.kubernetes
    return [
        Swap(),
        Kernel(),
        Selinux(),
        Repos(),
        *kubernetes.repo_steps(),
        *runtime.runtime_steps(),
        *kubernetes.install_steps(),
        kubernetes.kubelet(),
    ]


def allinone(runtime: Runtime) -> List[Step]:
    """A one-node cluster: the master, which also runs pods."""
    return [
        Preflight(Role.MASTER),
        *node_stack(runtime),
        KubeadmInitStep(),
        PodNetwork(),
        Untaint(),
        Routes(),
        RecordSettings(),
        RoutesSync(),
        NodeReady(),
        *runtime.ready_steps(),
        *runtime.cluster_steps(),
    ]


def node(runtime: Runtime) -> List[Step]:
    """A worker: the same stack, joined to a master instead of initialised."""
    return [
        Preflight(Role.WORKER),
        *node_stack(runtime),
        KubeadmJoinStep(),
        PodNetwork(),
        Routes(),
        RecordSettings(),
        RoutesSync(),
        NodeReady(),
        *runtime.ready_steps(),
    ]


def routes(runtime: Runtime) -> List[Step]:
    return [PodNetwork(), Routes()]


def reset(runtime: Runtime, purge: bool = False) -> List[Step]:
    return [
        KubeadmReset(),
        StopServices(),
        NetworkCleanup(),
        RestoreFiles(),
        PurgePackages(purge),
        Forget(),
    ]


def upgrade(runtime: Runtime) -> List[Step]:
    """One node, in the order of kubeadm's "Upgrading kubeadm clusters"."""
    kubernetes = runtime.kubernetes
    return [
        UpgradeSkew(),
        Prefetch(),  # the runtime's new release, verified before the first change
        *kubernetes.repo_steps(),  # the new minor's repository first
        KubeadmPackage(),
        KubeadmUpgrade(),
        Drain(),
        *runtime.upgrade_steps(),  # the runtime's newer release, while the node is drained
        KubeletPackages(),
        RestartKubelet(),
        NodeReady(),
        *runtime.ready_steps(),  # the old Kata tree, kept until the node is Ready again
        Uncordon(),
        RecordSettings(),  # status, routes and reset judge the host by the new versions
    ]
