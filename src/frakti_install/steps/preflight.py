"""Checks made before anything changes. Each has a name (for
--ignore-preflight-errors), says what is wrong and how to fix it."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple, Union

from frakti_install.config import SCHEMA
from frakti_install.constants import ADMIN_CONF, KUBELET_CONF
from frakti_install.engine import Check, Step
from frakti_install.errors import ConfigError, MissingChecksum, PreflightFailed
from frakti_install.steps.cluster import node_name
from frakti_install.steps.common import outdated_hyper_packages

if TYPE_CHECKING:
    from frakti_install.context import Context

log = logging.getLogger("frakti_install.preflight")

CONTROL_PLANE_PORTS = (6443, 10250, 10257, 10259, 2379, 2380)
WORKER_PORTS = (10250,)
HYPERD_PORT = 22318
MIN_CPUS = 2
MIN_MEMORY_MB = 1700
MIN_DISK_GB = 10
# What kubeadm and kubelet need that no step installs (iptables, conntrack,
# socat, ebtables and ethtool come with the kubernetes step).
REQUIRED_BINARIES = ("ip", "mount", "nsenter", "tc", "touch")


class Role(str, Enum):
    MASTER = "master"  # runs the control plane (allinone)
    WORKER = "worker"  # joins a master (node)


@dataclass(frozen=True)
class PreflightCheck:
    name: str
    probe: Callable[[Context], Optional[str]]  # a problem, or None
    hint: Union[str, Callable[[Context], str]]  # the fix, or how to find it for this host
    fatal: bool = True
    # on a worker, another probe (or None: the same); a worker runs no control plane
    worker_probe: Optional[Callable[[Context], Optional[str]]] = None


def for_role(checks: Sequence[PreflightCheck], role: Role) -> Tuple[PreflightCheck, ...]:
    if role is Role.MASTER:
        return tuple(checks)
    return tuple(
        dataclasses.replace(check, probe=check.worker_probe) if check.worker_probe else check
        for check in checks
    )


def _root(ctx: Context) -> Optional[str]:
    euid = ctx.facts.euid()
    return None if euid == "0" else f"running as uid {euid}, not root"


def _amd64(ctx: Context) -> Optional[str]:
    arch = ctx.facts.arch()
    return None if arch == "amd64" else f"architecture {arch}: frakti is released for amd64 only"


def _systemd(ctx: Context) -> Optional[str]:
    init = ctx.facts.init_system()
    return None if init == "systemd" else f"init system is {init}, not systemd"


def _cgroup_v1(ctx: Context) -> Optional[str]:
    if ctx.facts.cgroup_version() == 1:
        return None
    return (
        f"the host uses cgroup v2 only; kubelet {ctx.runtime.kubernetes_version} (the newest "
        "frakti supports) cannot run on it"
    )


def _swap(ctx: Context) -> Optional[str]:
    swaps = ctx.facts.swap_devices()
    if not swaps or ctx.settings.disable_swap:  # the swap step turns it off
        return None
    return f"swap is on ({', '.join(swaps)}); kubelet refuses to start with swap"


def _cpus(ctx: Context) -> Optional[str]:
    count = ctx.facts.cpu_count()
    return None if count >= MIN_CPUS else f"{count} CPU(s); kubeadm needs at least {MIN_CPUS}"


def _memory(ctx: Context) -> Optional[str]:
    mb = ctx.facts.memory_mb()
    return None if mb >= MIN_MEMORY_MB else f"{mb} MB of memory; kubeadm needs {MIN_MEMORY_MB} MB"


def _hostname(ctx: Context) -> Optional[str]:
    if ctx.facts.hostname_resolves():
        return None
    return f"the hostname {ctx.facts.hostname()!r} does not resolve"


def _disk(ctx: Context) -> Optional[str]:
    free = ctx.facts.free_disk_gb("/var/lib")
    if free >= MIN_DISK_GB:
        return None
    return f"{free:.1f} GB free under /var/lib; images and VM disks need {MIN_DISK_GB} GB"


def _binaries(ctx: Context) -> Optional[str]:
    missing = [name for name in REQUIRED_BINARIES if not ctx.facts.binary(name)]
    return f"missing {', '.join(missing)}" if missing else None


def _kvm(ctx: Context) -> Optional[str]:
    why = ctx.facts.kvm_problem()
    if why is None:
        return None
    return f"{why}: hyperd will fall back to software emulation, pods start very slowly"


def ports_taken(ctx: Context, wanted_ports: Sequence[int]) -> Optional[str]:
    """Kubernetes' ports in use by something else (our own cluster holds them)."""
    if ctx.host.exists(ADMIN_CONF) or ctx.host.exists(KUBELET_CONF):
        return None
    taken = sorted(set(wanted_ports) & ctx.facts.listening_ports())
    return f"port(s) {', '.join(map(str, taken))} already in use" if taken else None


def _frakti_ports(ctx: Context, wanted_ports: Sequence[int]) -> Optional[str]:
    """Kubernetes' ports, hyperd's gRPC port and frakti's streaming port."""
    wanted = set(wanted_ports)
    if ctx.host.exists(ADMIN_CONF) or ctx.host.exists(KUBELET_CONF):
        wanted.clear()  # our own cluster holds them
    if ctx.facts.unit("hyperd.service").active:
        wanted.discard(HYPERD_PORT)
    else:
        wanted.add(HYPERD_PORT)
    if not ctx.facts.unit("frakti.service").active:
        wanted.add(ctx.settings.streaming_port)
    taken = sorted(wanted & ctx.facts.listening_ports())
    return f"port(s) {', '.join(map(str, taken))} already in use" if taken else None


def _cgroup_driver(ctx: Context) -> Optional[str]:
    docker = ctx.facts.docker_cgroup_driver() or ctx.facts.docker_configured_cgroup_driver()
    chosen = ctx.runtime.cgroup_driver(ctx)
    if docker and docker != chosen:
        return (
            f"docker uses the {docker} cgroup driver but {chosen} was asked for; "
            "kubelet, frakti and docker must agree"
        )
    return None


def missing_checksums(ctx: Context) -> Optional[str]:
    missing = []
    for name in ctx.artifacts.names():
        try:
            ctx.artifacts.require_checksum_source(name)
        except MissingChecksum:
            missing.append(name)
    if not missing:
        return None
    return f"no sha256 given for {', '.join(missing)} (upstream publishes no sha256 or sha512)"


def hyper_source(ctx: Context) -> Optional[str]:
    """No public location of hyperd 1.x packages is known (docs/upstream-facts.md):
    the hyper packages an install needs must come from a mirror (--mirror hyper=URL),
    a bundle, or the download cache (a bundle's or a copied file, found by the sum
    given for it); never from the default base, where they 404 half-way."""
    if "hyper" in ctx.settings.mirrors:
        return None
    missing = []
    for name in outdated_hyper_packages(ctx):
        artifact = ctx.artifacts.get(name)
        given = artifact.given_sha256
        if given and ctx.artifacts.downloader().cached(given) is not None:
            continue  # already here, verified by its sum: nothing is downloaded
        missing.append(artifact.filename)
    if not missing:
        return None
    return (
        f"no public download of hyperd {ctx.runtime.version('hyperd')} is known: "
        f"{', '.join(missing)} would come from {ctx.artifacts.base_url('hyper')}, "
        "which never published them"
    )


HYPER_HINT = (
    "Give a mirror that holds the hyperd packages with --mirror hyper=URL (mirrors: hyper: URL "
    "in the config file), or install from an offline bundle with --bundle FILE."
)

PORT_HINT = "Stop whatever listens there (ss -ltnp shows it)."


def common(*names: str) -> Tuple[PreflightCheck, ...]:
    """The checks every profile makes, by name."""
    by_name = {check.name: check for check in COMMON_CHECKS}
    return tuple(by_name[name] for name in names)


COMMON_CHECKS = (
    PreflightCheck("Root", _root, "Run frakti-install as root (sudo)."),
    PreflightCheck("Systemd", _systemd, "frakti-install manages services through systemd."),
    PreflightCheck(
        "Swap", _swap, "Pass --disable-swap to turn it off now and in /etc/fstab, or do it by hand."
    ),
    PreflightCheck("NumCPU", _cpus, "Give the host at least 2 CPUs."),
    PreflightCheck("Mem", _memory, "Give the host at least 1700 MB of memory."),
    PreflightCheck(
        "Hostname", _hostname, "Add the hostname to /etc/hosts or DNS; kubelet registers by it."
    ),
    PreflightCheck("FileExisting", _binaries, "Install them (iproute2, util-linux, coreutils)."),
    PreflightCheck("DiskSpace", _disk, "Free space under /var/lib.", fatal=False),
)

# The frakti profile's, in the order its preflight reports them.
FRAKTI_CHECKS = (
    *common("Root"),
    PreflightCheck("Arch", _amd64, "Use an x86_64 host."),
    *common("Systemd"),
    PreflightCheck(
        "CgroupV1",
        _cgroup_v1,
        "Boot with the kernel parameter systemd.unified_cgroup_hierarchy=0 (add it to "
        "GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub or grub2-mkconfig) "
        "and reboot; or use --runtime kata (containerd + Kata Containers, current Kubernetes).",
    ),
    *common("Swap", "NumCPU", "Mem"),
    PreflightCheck(
        "Port",
        lambda ctx: _frakti_ports(ctx, CONTROL_PLANE_PORTS),
        PORT_HINT,
        worker_probe=lambda ctx: _frakti_ports(ctx, WORKER_PORTS),
    ),
    *common("Hostname", "FileExisting", "DiskSpace"),
    PreflightCheck(
        "CgroupDriver",
        _cgroup_driver,
        "Set cgroup_driver to docker's (or 'auto'), or change docker's "
        "native.cgroupdriver in /etc/docker/daemon.json.",
    ),
    PreflightCheck(
        "Checksums",
        missing_checksums,
        "Give the sums with --checksum NAME=SHA256 or checksums: in the config file.",
    ),
    PreflightCheck("HyperPackages", hyper_source, HYPER_HINT),
    PreflightCheck(
        "KVM", _kvm, "Enable VT-x/AMD-V in the firmware, or nested virtualisation.", fatal=False
    ),
)


class Preflight(Step):
    """The runtime profile's checks for this role, made before anything changes."""

    name = "preflight"
    title = "Check the host before changing anything"

    def __init__(self, role: Role = Role.MASTER) -> None:
        self.role = role

    def check(self, ctx: Context) -> Check:
        ctx.runtime.check_host(ctx)  # a system the profile does not know stops here (exit 4)
        checks = ctx.runtime.preflight_checks(self.role)
        ignored = {name.lower() for name in ctx.settings.ignore_preflight_errors}
        errors: List[str] = []
        warnings: List[str] = []
        for item in checks:
            problem = item.probe(ctx)
            if problem is None:
                continue
            hint = item.hint(ctx) if callable(item.hint) else item.hint
            line = f"[{item.name}] {problem}. {hint}"
            if not item.fatal or item.name.lower() in ignored or "all" in ignored:
                warnings.append(line)
                log.warning("preflight: %s", line)
            else:
                errors.append(line)
        if errors:
            raise PreflightFailed(
                "preflight found problems:\n  " + "\n  ".join(errors),
                hint="Fix them, or skip a check with --ignore-preflight-errors NAME.",
            )
        summary = f"{len(checks)} checks passed"
        if warnings:
            summary += "; warnings: " + " ".join(warnings)
        return Check.ok(summary)


# --- settings that depend on this host (made before any step, even the lock) ------
NODE_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NETWORK_HINT = (
    "Pick a range that none of this host's addresses or routes fall in "
    "('ip -4 addr' and 'ip -4 route' show them)."
)


def _label(key: str) -> str:
    flag = SCHEMA[key].flag
    return f"{key} ({flag})" if flag else key


def _parsed(values: List[str]) -> List[str]:
    """The values ipaddress reads (a line iproute2 prints otherwise is no address)."""
    kept = []
    for value in values:
        try:
            ipaddress.IPv4Network(value, strict=False)
        except ValueError:
            continue
        kept.append(value)
    return kept


def check_settings_on_host(ctx: Context) -> None:
    """What only this host can tell about the settings: the pod and service ranges
    clash with none of its addresses and routes, the addresses given are its own,
    its name can be a node's. Skipped once a cluster is installed here (its bridge
    and routes are then inside the pod range, by design)."""
    if ctx.host.exists(ADMIN_CONF) or ctx.host.exists(KUBELET_CONF):
        return
    name = node_name(ctx)
    if len(name) > 253 or not NODE_NAME_RE.match(name):
        raise PreflightFailed(
            f"the hostname {ctx.facts.hostname()!r} cannot be a Kubernetes node name "
            "(a lowercase RFC 1123 name: letters, digits, '-' and '.')",
            hint="Rename the host, e.g. hostnamectl set-hostname node-1 (and /etc/hosts).",
        )
    addresses = [ipaddress.IPv4Address(a) for a in _parsed(ctx.facts.ipv4_addresses())]
    routes = [ipaddress.IPv4Network(d, strict=False) for d in _parsed(ctx.facts.ipv4_networks())]
    settings = ctx.settings
    for key in ("advertise_address", "node_ip"):
        value = getattr(settings, key)
        if value and ipaddress.IPv4Address(value) not in addresses:
            raise ConfigError(
                f"{_label(key)}: {value} is not an address of this host "
                f"(it has {', '.join(map(str, addresses)) or 'none'})",
                hint=SCHEMA[key].hint,
            )
    for key in ("pod_cidr", "service_cidr"):
        network = ipaddress.IPv4Network(getattr(settings, key))
        for address in addresses:
            if address in network:
                raise ConfigError(
                    f"{_label(key)}: {network} holds this host's address {address}",
                    hint=NETWORK_HINT,
                )
        for route in routes:
            on_link = any(address in route for address in addresses)
            if route.subnet_of(network) or (on_link and network.subnet_of(route)):
                raise ConfigError(
                    f"{_label(key)}: {network} overlaps the route to {route}", hint=NETWORK_HINT
                )
