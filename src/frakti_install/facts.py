"""What is true of the host now. Each probe is cheap, run at most once until
`invalidate()` (the runner calls it after a step changed something)."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple, TypeVar

import distro

from frakti_install import probes, profiles
from frakti_install.host import Host

T = TypeVar("T")

ARCH_NAMES = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass(frozen=True)
class Unit:
    name: str
    load_state: str  # loaded | not-found | masked ...
    active_state: str  # active | inactive | failed | activating ...
    enabled: str  # enabled | disabled | static | "" ...
    main_pid: int
    fragment: str

    @property
    def exists(self) -> bool:
        return self.load_state == "loaded"

    @property
    def active(self) -> bool:
        return self.active_state == "active"

    @property
    def is_enabled(self) -> bool:
        return self.enabled in ("enabled", "static", "enabled-runtime", "alias")


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def cached(method: Callable[..., T]) -> Callable[..., T]:
    """Cache a probe on the Facts instance, per arguments, until invalidate()."""

    @functools.wraps(method)
    def wrapper(self: Facts, *args: Any, **kwargs: Any) -> T:
        key = (
            method.__name__,
            tuple(_hashable(a) for a in args),
            tuple(sorted((k, _hashable(v)) for k, v in kwargs.items())),
        )
        if key not in self._cache:
            self._cache[key] = method(self, *args, **kwargs)
        return self._cache[key]

    return wrapper


class Facts:
    def __init__(self, host: Host) -> None:
        self.host = host
        self._cache: Dict[Any, Any] = {}
        self._units: Dict[str, Unit] = {}

    def invalidate(self) -> None:
        self._cache.clear()
        self._units.clear()

    # --- system --------------------------------------------------------------
    @cached
    def os(self) -> profiles.OsInfo:
        root = str(self.host.root)
        info = distro.LinuxDistribution(
            include_lsb=False, include_uname=False, root_dir=None if root == "/" else root
        )
        return profiles.identify(info.id(), info.version(best=False), info.name(pretty=True))

    @cached
    def euid(self) -> str:
        return self.host.run(["id", "-u"]).stdout.strip()

    @cached
    def machine(self) -> str:
        return self.host.run(["uname", "-m"]).stdout.strip()

    def arch(self) -> str:
        return ARCH_NAMES.get(self.machine(), self.machine())

    @cached
    def hostname(self) -> str:
        return (self.host.read_text("/proc/sys/kernel/hostname") or "").strip()

    @cached
    def init_system(self) -> str:
        if self.host.exists("/run/systemd/system"):
            return "systemd"
        comm = (self.host.read_text("/proc/1/comm") or "").strip()
        return comm or "unknown"

    @cached
    def cgroup_version(self) -> int:
        """2 on a unified hierarchy; 1 on legacy or hybrid (v1 controllers)."""
        return 2 if self.host.exists("/sys/fs/cgroup/cgroup.controllers") else 1

    @cached
    def cpu_flags(self) -> Set[str]:
        for line in (self.host.read_text("/proc/cpuinfo") or "").splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
        return set()

    @cached
    def cpu_count(self) -> int:
        cpuinfo = self.host.read_text("/proc/cpuinfo") or ""
        return sum(1 for line in cpuinfo.splitlines() if line.startswith("processor")) or 1

    @cached
    def memory_mb(self) -> int:
        for line in (self.host.read_text("/proc/meminfo") or "").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
        return 0

    def hardware_virtualization(self) -> bool:
        return bool(self.cpu_flags() & {"vmx", "svm"})

    def kvm_problem(self) -> Optional[str]:
        """Why KVM cannot be used here, or None when it can."""
        if self.kvm_usable():
            return None
        if not self.hardware_virtualization():
            return "the CPU shows no vmx/svm flag"
        return "/dev/kvm is missing or not usable"

    @cached
    def kvm_usable(self) -> bool:
        return self.hardware_virtualization() and self.host.access("/dev/kvm", os.R_OK | os.W_OK)

    @cached
    def swap_devices(self) -> List[str]:
        lines = (self.host.read_text("/proc/swaps") or "").splitlines()[1:]
        return [line.split()[0] for line in lines if line.strip()]

    def sysctl(self, key: str) -> Optional[str]:
        value = self.host.read_text("/proc/sys/" + key.replace(".", "/"))
        return None if value is None else value.strip()

    @cached
    def filesystems(self) -> Set[str]:
        text = self.host.read_text("/proc/filesystems") or ""
        return {line.split()[-1] for line in text.splitlines() if line.strip()}

    def module_loaded(self, name: str) -> bool:
        return self.host.exists(f"/sys/module/{name}")

    def module_present(self, name: str) -> bool:
        """Loaded, or its device node is there (opening it loads the module)."""
        return self.module_loaded(name) or self.host.exists("/dev/" + name.replace("_", "-"))

    @cached
    def module_loadable(self, name: str) -> bool:
        """Present, or modinfo finds it for the running kernel."""
        if self.module_present(name):
            return True
        result = self.host.run(["modinfo", "-F", "filename", name], check=False)
        return result.ok and probes.parse_modinfo_filename(result.stdout) is not None

    @cached
    def listening_ports(self) -> Set[int]:
        ports: Set[int] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in (self.host.read_text(table) or "").splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "0A":  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports

    @cached
    def ipv4_routes(self) -> Dict[str, str]:
        """Destination -> gateway, of the kernel's IPv4 routes via a gateway."""
        result = self.host.run(["ip", "-4", "route", "show"], check=False)
        return probes.parse_ip_routes(result.stdout)

    @cached
    def ipv4_networks(self) -> List[str]:
        """The destinations of the kernel's IPv4 routes (links and gateways), but the default."""
        result = self.host.run(["ip", "-4", "route", "show"], check=False)
        return probes.parse_route_destinations(result.stdout)

    @cached
    def ipv4_addresses(self) -> List[str]:
        """This host's own IPv4 addresses (not loopback's)."""
        result = self.host.run(["ip", "-4", "route", "show", "table", "local"], check=False)
        return probes.parse_local_addresses(result.stdout)

    @cached
    def selinux_mode(self) -> Optional[str]:
        enforce = self.host.read_text("/sys/fs/selinux/enforce")
        if enforce is None:
            return None
        return "enforcing" if enforce.strip() == "1" else "permissive"

    @cached
    def hostname_resolves(self) -> bool:
        name = self.hostname()
        return bool(name) and self.host.run(["getent", "hosts", name], check=False).ok

    def free_disk_gb(self, target: str) -> float:
        """Free space for root on the filesystem holding target (or its nearest parent)."""
        return self.host.free_bytes(target) / 1e9

    def binary(self, name: str) -> Optional[str]:
        return self.host.which(name)

    @cached
    def runs(self, argv: tuple, timeout: float = 30) -> Tuple[bool, str]:
        """Does the command succeed, and what did it say (stderr, else stdout)?"""
        result = self.host.run(list(argv), check=False, timeout=timeout)
        return result.ok, result.stderr.strip() or result.stdout.strip()

    @cached
    def iptables_save(self) -> Optional[probes.IptablesDump]:
        """The rules, or None when there is no iptables-save or it fails."""
        if not self.host.which("iptables-save"):
            return None
        result = self.host.run(["iptables-save"], check=False)
        return probes.parse_iptables_save(result.stdout) if result.ok else None

    # --- packages and services ----------------------------------------------
    @cached
    def packages(self, manager_name: str, names: tuple) -> Dict[str, Optional[str]]:
        from frakti_install.packages import manager  # local: packages imports host only

        return manager(manager_name).installed(self.host, names)

    @cached
    def apt_holds(self) -> FrozenSet[str]:
        result = self.host.run(["apt-mark", "showhold"], check=False)
        return probes.parse_showhold(result.stdout)

    def units(self, names: Sequence[str]) -> Dict[str, Unit]:
        """One `systemctl show` for every unit not probed yet."""
        missing = [name for name in names if name not in self._units]
        if missing:
            result = self.host.run(
                [
                    "systemctl",
                    "show",
                    "--no-pager",
                    "-p",
                    "Id,LoadState,ActiveState,UnitFileState,MainPID,FragmentPath",
                    *missing,
                ],
                check=False,
            )
            blocks = probes.parse_systemctl_blocks(result.stdout)
            by_id = probes.parse_systemctl_show(result.stdout)
            for position, name in enumerate(missing):
                # An alias answers with its canonical Id=: then its block is the one at
                # the same position (systemctl answers one block per unit, in order).
                positional = blocks[position] if len(blocks) == len(missing) else {}
                props = by_id.get(name) or positional
                pid = props.get("MainPID", "0")
                self._units[name] = Unit(
                    name=name,
                    load_state=props.get("LoadState", "not-found"),
                    active_state=props.get("ActiveState", "inactive"),
                    enabled=props.get("UnitFileState", ""),
                    main_pid=int(pid) if pid.isdigit() else 0,
                    fragment=props.get("FragmentPath", ""),
                )
        return {name: self._units[name] for name in names}

    def unit(self, name: str) -> Unit:
        return self.units([name])[name]

    @cached
    def docker_cgroup_driver(self) -> Optional[str]:
        if not self.host.which("docker"):
            return None
        result = self.host.run(
            ["docker", "info", "--format", "{{.CgroupDriver}}"], check=False, timeout=30
        )
        return probes.parse_docker_info_value(result.returncode, result.stdout)

    @cached
    def docker_configured_cgroup_driver(self) -> Optional[str]:
        """native.cgroupdriver from /etc/docker/daemon.json (what docker will use)."""
        return probes.parse_docker_cgroup_driver(self.host.read_text("/etc/docker/daemon.json"))

    # --- containerd ---------------------------------------------------------
    @cached
    def containerd_config(self, config_path: str) -> probes.ContainerdDump:
        """`containerd config dump`: the files merged as containerd merges them."""
        result = self.host.run(
            ["containerd", "--config", config_path, "config", "dump"], check=False, timeout=60
        )
        return probes.parse_containerd_dump(result.stdout, result.returncode, result.stderr)

    @cached
    def containerd_version(self) -> Optional[Tuple[int, int, int]]:
        """The installed containerd's release, or None (not installed, or unreadable)."""
        if not self.host.which("containerd"):
            return None
        result = self.host.run(["containerd", "--version"], check=False, timeout=30)
        return probes.parse_containerd_version(result.stdout) if result.ok else None

    # --- Kubernetes ---------------------------------------------------------
    @cached
    def nodes(self, kubeconfig: str) -> Optional[List[Dict[str, Any]]]:
        """The cluster's nodes, or None when the API cannot be asked."""
        if not (self.host.which("kubectl") and self.host.exists(kubeconfig)):
            return None
        result = self.host.run(
            ["kubectl", "--kubeconfig", kubeconfig, "get", "nodes", "-o", "json"],
            check=False,
            timeout=30,
        )
        if not result.ok:
            return None
        try:
            return list(json.loads(result.stdout).get("items", []))
        except ValueError:
            return None

    @cached
    def server_version(self, kubeconfig: str) -> Optional[str]:
        """The API server's gitVersion (`kubectl version -o json`), or None when it
        cannot be asked."""
        if not (self.host.which("kubectl") and self.host.exists(kubeconfig)):
            return None
        result = self.host.run(
            ["kubectl", "--kubeconfig", kubeconfig, "version", "-o", "json"],
            check=False,
            timeout=30,
        )
        try:
            answer = json.loads(result.stdout) if result.stdout.strip() else {}
        except ValueError:
            return None
        version = (answer.get("serverVersion") or {}).get("gitVersion")
        return str(version) if version else None

    @cached
    def kubeadm_version(self) -> Optional[str]:
        """`kubeadm version -o short` (v1.36.4), or None without a kubeadm that answers."""
        if not self.host.which("kubeadm"):
            return None
        result = self.host.run(["kubeadm", "version", "-o", "short"], check=False, timeout=30)
        return result.stdout.strip() or None if result.ok else None

    @cached
    def runtime_class(self, kubeconfig: str, name: str) -> Optional[Dict[str, Any]]:
        """The RuntimeClass, or None when it is absent or the API cannot be asked."""
        if not (self.host.exists(kubeconfig) and self.host.which("kubectl")):
            return None
        result = self.host.run(
            ["kubectl", "--kubeconfig", kubeconfig, "get", "runtimeclass", name, "-o", "json"],
            check=False,
            timeout=60,
        )
        return probes.parse_kubectl_json(result.returncode, result.stdout, result.stderr).obj

    @cached
    def server_dry_run(self, kubeconfig: str, manifest: str) -> probes.DryRun:
        """What the API server would store for the manifest (`apply --dry-run=server`)."""
        result = self.host.run(
            ["kubectl", "--kubeconfig", kubeconfig, "apply", "--dry-run=server", "-o", "json"]
            + ["-f", "-"],
            input=manifest,
            check=False,
            timeout=60,
        )
        return probes.parse_kubectl_json(result.returncode, result.stdout, result.stderr)
