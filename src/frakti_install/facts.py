"""What is true of the host now. Each probe is cheap, run at most once until
`invalidate()` (the runner calls it after a step changed something)."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, TypeVar

import distro

from frakti_install import profiles
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


def cached(method: Callable[..., T]) -> Callable[..., T]:
    """Cache a probe on the Facts instance until invalidate()."""

    @functools.wraps(method)
    def wrapper(self: Facts, *args: Any) -> T:
        key = (method.__name__, args)
        if key not in self._cache:
            self._cache[key] = method(self, *args)
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
        return self.hardware_virtualization() and os.access(
            self.host.path("/dev/kvm"), os.R_OK | os.W_OK
        )

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
        path = self.host.path(target)
        while not path.exists() and path != path.parent:
            path = path.parent
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize / 1e9

    def binary(self, name: str) -> Optional[str]:
        return self.host.which(name)

    # --- packages and services ----------------------------------------------
    @cached
    def packages(self, manager_name: str, names: tuple) -> Dict[str, Optional[str]]:
        from frakti_install.packages import manager  # local: packages imports host only

        return manager(manager_name).installed(self.host, names)

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
            blocks = result.stdout.strip().split("\n\n") if result.stdout.strip() else []
            for name, block in zip(missing, blocks):
                props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
                self._units[name] = Unit(
                    name=name,
                    load_state=props.get("LoadState", "not-found"),
                    active_state=props.get("ActiveState", "inactive"),
                    enabled=props.get("UnitFileState", ""),
                    main_pid=int(props.get("MainPID", "0") or 0),
                    fragment=props.get("FragmentPath", ""),
                )
            for name in missing[len(blocks) :]:
                self._units[name] = Unit(name, "not-found", "inactive", "", 0, "")
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
        driver = result.stdout.strip()
        return driver if result.ok and driver else None

    @cached
    def docker_configured_cgroup_driver(self) -> Optional[str]:
        """native.cgroupdriver from /etc/docker/daemon.json (what docker will use)."""
        text = self.host.read_text("/etc/docker/daemon.json")
        try:
            options = json.loads(text).get("exec-opts", []) if text else []
        except (ValueError, AttributeError):
            return None
        for option in options:
            key, _, value = str(option).partition("=")
            if key.strip() == "native.cgroupdriver":
                return value.strip()
        return None

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
