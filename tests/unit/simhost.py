"""A simulated host for unit tests: a scratch root directory for files, and a
command runner that imitates what the installer relies on (package
managers, systemd, docker, kubeadm, kubectl, modprobe, sysctl).

It is a test stand-in only. It keeps the state those programs would keep and
changes it the way they would, so a whole plan can be applied, re-run,
interrupted and resumed without a real machine.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import ipaddress
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple

import yaml

from frakti_install import runtimes
from frakti_install.config import Settings
from frakti_install.context import Context
from frakti_install.host import CommandResult, Host
from frakti_install.runtimes import Runtime


def frakti() -> Runtime:
    """The frakti profile, whose plans the frakti tests run."""
    return runtimes.runtime_for(Settings())


def kata() -> Runtime:
    """The kata profile, whose plans the kata tests run."""
    return runtimes.runtime_for(Settings(runtime="kata"))

OS_RELEASE = {
    (
        "ubuntu",
        "16.04",
    ): 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="16.04"\nPRETTY_NAME="Ubuntu 16.04.7 LTS"\n',
    (
        "ubuntu",
        "18.04",
    ): 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="18.04"\nPRETTY_NAME="Ubuntu 18.04.6 LTS"\n',
    (
        "ubuntu",
        "20.04",
    ): 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="20.04"\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\n',
    (
        "ubuntu",
        "22.04",
    ): 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n',
    (
        "ubuntu",
        "24.04",
    ): 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n',
    (
        "debian",
        "11",
    ): 'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="11"\nPRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\n',
    (
        "debian",
        "12",
    ): 'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
    (
        "centos",
        "7",
    ): 'NAME="CentOS Linux"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\nPRETTY_NAME="CentOS Linux 7 (Core)"\n',
    (
        "rocky",
        "8.9",
    ): 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="8.9"\nPRETTY_NAME="Rocky Linux 8.9 (Green Obsidian)"\n',
    (
        "rocky",
        "9.3",
    ): 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\nPRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\n',
    (
        "almalinux",
        "8.9",
    ): 'NAME="AlmaLinux"\nID="almalinux"\nID_LIKE="rhel centos fedora"\nVERSION_ID="8.9"\nPRETTY_NAME="AlmaLinux 8.9 (Midnight Oncilla)"\n',
    (
        "almalinux",
        "9.4",
    ): 'NAME="AlmaLinux"\nID="almalinux"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\nPRETTY_NAME="AlmaLinux 9.4 (Seafoam Ocelot)"\n',
    (
        "rhel",
        "8.10",
    ): 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="8.10"\nPRETTY_NAME="Red Hat Enterprise Linux 8.10 (Ootpa)"\n',
    (
        "rhel",
        "9.4",
    ): 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\nPRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"\n',
}
SUPPORTED = sorted(OS_RELEASE)

# Units that packages bring, and the port a running unit listens on.
PACKAGE_UNITS = {
    "docker.io": "docker.service",
    "docker": "docker.service",
    "docker-ce": "docker.service",
    "hypercontainer": "hyperd.service",
    "hyper-container": "hyperd.service",
}
PACKAGE_BINARIES = {"docker.io": "docker", "docker": "docker", "docker-ce": "docker"}


def sim_qemu(machines: str, devices: str) -> str:
    """A simulated QEMU binary: what `-machine help` and `-device help` print."""
    return f"#!/bin/sh\n# sim-qemu\n{machines}\n---devices---\n{devices}\n"


# Upstream QEMU (Debian/Ubuntu qemu-system-x86; QEMU 8.2 still has pc-i440fx-2.1,
# deprecated in 8.2 and removed in 9.1) and hyper's qemu-hyper 2.4.1 (virtfs on).
QEMU_UPSTREAM = sim_qemu(
    "Supported machines are:\n"
    "pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-8.2)\n"
    "pc-i440fx-8.2        Standard PC (i440FX + PIIX, 1996) (default)\n"
    "pc-i440fx-2.1        Standard PC (i440FX + PIIX, 1996) (deprecated)\n"
    "q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-8.2)",
    'name "virtio-9p-pci", bus PCI, alias "virtio-9p"\n'
    'name "virtio-serial-pci", bus PCI, alias "virtio-serial"',
)
# EL's /usr/libexec/qemu-kvm: RHEL machine types only, no virtio-9p-pci (machine
# list as `qemu-kvm -machine help` prints it on EL9, Coopydood/ultimate-macOS-KVM#71;
# no 9p on EL7/EL8/EL9: kubernetes#35421, arighi/virtme-ng#63).
QEMU_KVM_EL = sim_qemu(
    "Supported machines are:\n"
    "pc                   RHEL 7.6.0 PC (i440FX + PIIX, 1996) (alias of pc-i440fx-rhel7.6.0)\n"
    "pc-i440fx-rhel7.6.0  RHEL 7.6.0 PC (i440FX + PIIX, 1996) (default) (deprecated)\n"
    "q35                  RHEL-9.2.0 PC (Q35 + ICH9, 2009) (alias of pc-q35-rhel9.2.0)\n"
    "pc-q35-rhel9.2.0     RHEL-9.2.0 PC (Q35 + ICH9, 2009)",
    'name "virtio-serial-pci", bus PCI, alias "virtio-serial"',
)
PACKAGE_FILES = {
    "qemu-system-x86": {"/usr/bin/qemu-system-x86_64": QEMU_UPSTREAM},
    "qemu-kvm": {"/usr/libexec/qemu-kvm": QEMU_KVM_EL},
    "qemu-hyper": {"/usr/bin/qemu-system-x86_64": QEMU_UPSTREAM},
}
UNIT_PORTS = {"hyperd.service": [22318], "frakti.service": [22521]}
TOKEN_FILE = "/var/lib/sim/kubeadm-token"
# What each daemon reads at start: a running unit should have read the current files.
UNIT_INPUTS = {
    "hyperd.service": ("/etc/hyper/config",),
    "frakti.service": (
        "/usr/bin/frakti",
        "/lib/systemd/system/frakti.service",
        "/usr/lib/systemd/system/frakti.service",
    ),
    "kubelet.service": (
        "/etc/default/kubelet",
        "/etc/sysconfig/kubelet",
        "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
    ),
    "frakti-routes-sync.timer": ("/etc/systemd/system/frakti-routes-sync.timer",),
}
# What a daemon writes under /var once it runs (so that reset must clear it).
UNIT_STATE = {
    "docker.service": ("/var/lib/docker/engine-id", "/var/lib/containerd/io.containerd.content.v1.content/ingest/.keep"),
    "containerd.service": ("/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db",),
    "hyperd.service": ("/var/lib/hyper/hyper.db", "/var/log/hyper/hyperd.INFO"),
    "frakti.service": ("/var/lib/frakti/state",),
    "kubelet.service": ("/var/lib/kubelet/cpu_manager_state",),
}


# --- what the real programs know (tests/unit/fixtures/*/README.md says where from) ---
FIXTURES = Path(__file__).parent / "fixtures"
# Names third-party repositories offer, while their file is in place (the kata sim
# also wants an `apt-get update` after kubernetes.list appears).
REPO_PACKAGES = {
    "/etc/yum.repos.d/docker-ce.repo": frozenset({"docker-ce", "docker-ce-cli", "containerd.io"}),
    "/etc/yum.repos.d/kubernetes.repo": frozenset(
        {"kubelet", "kubeadm", "kubectl", "kubernetes-cni", "cri-tools"}
    ),
    "/etc/apt/sources.list.d/kubernetes.list": frozenset(
        {"kubelet", "kubeadm", "kubectl", "kubernetes-cni", "cri-tools"}
    ),
}
KERNEL_RELEASE = "6.1.0-50-amd64"  # the Debian 12 kernel the module list is from


@functools.lru_cache(maxsize=None)
def distro_packages(os_id: str, version: str) -> FrozenSet[str]:
    """The names the system's own repositories offer (fixtures/packages)."""
    folder = FIXTURES / "packages"
    if os_id == "debian":
        return frozenset(json.loads((folder / f"debian-{version}.json").read_text())["packages"])
    key = f"ubuntu-{version}" if os_id == "ubuntu" else f"el-{version.split('.')[0]}"
    return frozenset(json.loads((folder / "unconfirmed.json").read_text())["systems"][key])


def distro_versions(os_id: str, version: str) -> Dict[str, str]:
    """name -> the candidate version the system's own repositories offer, where a
    list was captured (Debian); empty for the unconfirmed lists."""
    if os_id != "debian":
        return {}
    folder = FIXTURES / "packages"
    return dict(json.loads((folder / f"debian-{version}.json").read_text())["packages"])


@functools.lru_cache(maxsize=None)
def kernel_modules() -> Dict[str, bool]:
    """Module name -> built in, of a real Debian 12 kernel (fixtures/kernel)."""
    text = gzip.decompress((FIXTURES / "kernel" / "debian-12-modules.txt.gz").read_bytes())
    found = {}
    for line in text.decode().splitlines():
        name, _, builtin = line.partition(" ")
        found[name] = bool(builtin)
    return found


@functools.lru_cache(maxsize=None)
def sysctl_keys() -> FrozenSet[str]:
    """The sysctl keys of a real kernel with br_netfilter loaded (fixtures/kernel)."""
    text = gzip.decompress((FIXTURES / "kernel" / "sysctl-keys.txt.gz").read_bytes())
    return frozenset(text.decode().split())


def module_name(name: str) -> str:
    return name.replace("-", "_")  # modprobe and modinfo treat - and _ alike


class Killed(BaseException):
    """Raised by the runner to imitate SIGKILL at a chosen command."""


@dataclass
class UnitState:
    enabled: bool = False
    active: bool = False
    starts: int = 0
    loaded: str = ""  # digest of the files the unit read when it last started


@dataclass
class SimState:
    packages: Dict[str, str] = field(default_factory=dict)
    units: Dict[str, UnitState] = field(default_factory=dict)
    cluster: SimCluster = field(default_factory=lambda: SimCluster())
    inits: List[List[str]] = field(default_factory=list)
    docker_driver: str = "cgroupfs"
    docker_min_api: str = "1.24"  # Docker 25-28; 29 says 1.44
    other_listeners: Set[int] = field(default_factory=set)  # ports held by something else
    routes: Dict[str, str] = field(default_factory=dict)
    iptables: str = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.9.9.9/32 -j DROP\nCOMMIT\n"


def apt_operands(args: Sequence[str]) -> List[str]:
    """apt-get's package operands: not options, nor the value of -o/-c/-t (apt's
    CommandLine takes the next word as their argument, wherever they stand)."""
    operands, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-o", "-c", "-t"):
            skip = True
        elif not arg.startswith("-"):
            operands.append(arg)
    return operands


class SimRunner:
    READ_ONLY = {
        "dpkg-query",
        "rpm",
        "apt-cache",
        "uname",
        "id",
        "docker",
        "getent",
        "iptables-save",
        "qemu-system-x86_64",
        "qemu-kvm",
    }

    def __init__(self, root: Path, state: SimState, ip: str = "10.0.0.1") -> None:
        self.root = root
        self.state = state
        self.ip = ip
        self.calls: List[List[str]] = []
        self.kill_at: Optional[int] = None  # index among mutating commands
        self.last_input: Optional[str] = None
        self.kubeadm_configs: List[Tuple[str, int, str]] = []  # (path, mode, text) of each --config kubeadm read
        self.mutations = 0
        self.system = ("debian", "12")  # whose package lists apt/yum/dnf offer
        self.candidate_versions: Dict[str, str] = {}  # name -> apt's candidate, over the lists
        self.kernel_modules: Set[str] = set(kernel_modules())  # what modprobe can load
        self.unit_aliases: Dict[str, str] = {}  # alias -> the unit's Id (an Alias= link)
        self.euid = 0  # what `id -u` answers: another user's uid for a run without sudo

    # helpers -------------------------------------------------------------
    def p(self, target: str) -> Path:
        return self.root / target.lstrip("/")

    def write(self, target: str, text: str, mode: int = 0o644) -> None:
        path = self.p(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, mode)

    def ok(self, argv: Sequence[str], out: str = "") -> CommandResult:
        return CommandResult(list(argv), 0, out, "")

    def fail(self, argv: Sequence[str], err: str, code: int = 1) -> CommandResult:
        return CommandResult(list(argv), code, "", err)

    def mutating(self, argv: Sequence[str]) -> bool:
        if os.path.basename(argv[0]) in self.READ_ONLY or list(argv[:4]) == ["ip", "-4", "route", "show"]:
            return False
        if argv[0] == "systemctl" and argv[1] == "show":
            return False
        return not (argv[0] == "kubectl" and "get" in argv)

    def _refresh_ports(self) -> None:
        lines = ["  sl  local_address rem_address   st"]
        lines += [
            f"   0: 00000000:{port:04X} 00000000:0000 0A"
            for port in sorted(self.state.other_listeners)
        ]
        for unit, ports in UNIT_PORTS.items():
            if self.state.units.get(unit, UnitState()).active:
                for port in ports:
                    lines.append(f"   0: 00000000:{port:04X} 00000000:0000 0A")
        self.write("/proc/net/tcp", "\n".join(lines) + "\n")

    def unit_exists(self, unit: str) -> bool:
        if unit in {PACKAGE_UNITS[p] for p in self.state.packages if p in PACKAGE_UNITS}:
            return True
        return any(
            self.p(d).joinpath(unit).exists()
            for d in ("/lib/systemd/system", "/usr/lib/systemd/system", "/etc/systemd/system")
        )

    # the runner ------------------------------------------------------------
    def __call__(
        self,
        argv: Sequence[str],
        env: Optional[Mapping[str, str]],
        input: Optional[str],
        timeout: Optional[float],
    ) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        self.last_input = input
        if self.mutating(argv):
            if self.kill_at is not None and self.mutations == self.kill_at:
                raise Killed(" ".join(argv))
            self.mutations += 1
        # an absolute path runs the command of its base name
        name = os.path.basename(argv[0]).replace("-", "_").replace(".", "_")
        handler = getattr(self, "cmd_" + name, None)
        if handler is None:
            return self.fail(argv, f"{argv[0]}: command not found", 127)
        result: CommandResult = handler(argv)
        self._refresh_ports()
        return result

    def cmd_uname(self, argv: List[str]) -> CommandResult:
        return self.ok(argv, "x86_64\n")

    def cmd_id(self, argv: List[str]) -> CommandResult:
        return self.ok(argv, f"{self.euid}\n")

    def cmd_dpkg_query(self, argv: List[str]) -> CommandResult:
        names = [a for a in argv[3:]]
        holds = getattr(self, "holds", ())  # dpkg's want flag: h(old) or i(nstall)
        lines = [
            f"{n}\t{'h' if n in holds else 'i'}i \t{self.state.packages[n]}"
            for n in names
            if n in self.state.packages
        ]
        missing = [n for n in names if n not in self.state.packages]
        return CommandResult(
            argv,
            1 if missing else 0,
            "\n".join(lines) + "\n",
            "".join(f"dpkg-query: no packages found matching {n}\n" for n in missing),
        )

    def cmd_rpm(self, argv: List[str]) -> CommandResult:
        names = argv[4:]
        out = []
        for n in names:
            out.append(
                f"{n}\t{self.state.packages[n]}"
                if n in self.state.packages
                else f"package {n} is not installed"
            )
        return self.ok(argv, "\n".join(out) + "\n")

    # --- which names the repositories offer ---------------------------------------
    def repo_offers(self) -> Set[str]:
        offered: Set[str] = set()
        for path, names in REPO_PACKAGES.items():
            if self.p(path).exists():
                offered |= names
        return offered

    def offered(self) -> Set[str]:
        """Names apt/yum can find: the indexes' and the installed ones (dpkg's status)."""
        return set(distro_packages(*self.system)) | self.repo_offers() | set(self.state.packages)

    def package_name(self, item: str) -> str:
        """The name in an install argument: NAME, NAME=VERSION (apt), NAME-VERSION (yum),
        NAME-EPOCH:VERSION-GLOB (dnf matches globs in the version: docker-ce-3:2[0-8].*)."""
        if "=" in item:
            return item.split("=", 1)[0]
        match = re.match(r"^(.+?)-\d[\w.:~+*?\[\]-]*$", item)
        if match and item not in self.offered():
            return match.group(1)
        return item

    def unknown(self, items: Sequence[str]) -> List[str]:
        offered = self.offered()
        return [i for i in items if "/" not in i and self.package_name(i) not in offered]

    def apt_refuses(self, argv: List[str], items: Sequence[str]) -> Optional[CommandResult]:
        """apt 2.6: every name it cannot find, then exit 100 with nothing done."""
        missing = self.unknown(items)
        if not missing:
            return None
        lines = "".join(f"E: Unable to locate package {self.package_name(i)}\n" for i in missing)
        return CommandResult(argv, 100, "Reading package lists...\n", lines)

    def dnf_refuses(self, argv: List[str], items: Sequence[str]) -> Optional[CommandResult]:
        """dnf 4 (strict=True, its default): any unknown name and nothing is done."""
        missing = self.unknown(items)
        if not missing:
            return None
        err = "".join(f"No match for argument: {i}\n" for i in missing)
        return CommandResult(argv, 1, "", err + f"Error: Unable to find a match: {' '.join(missing)}\n")

    def yum_skips(self, argv: List[str], items: Sequence[str]) -> Tuple[List[str], str]:
        """yum 3 (CentOS 7, skip_missing_names_on_install=1): unknown names are skipped."""
        missing = self.unknown(items)
        return [i for i in items if i not in missing], "".join(
            f"No package {i} available.\n" for i in missing
        )

    def candidate_version(self, name: str) -> str:
        """What apt-cache policy gives as NAME's candidate: the captured list's
        version, else the sim's own (candidate_versions; "1.0-1" where nobody
        said: the unconfirmed lists have names only)."""
        return (
            self.candidate_versions.get(name)
            or distro_versions(*self.system).get(name)
            or "1.0-1"
        )

    def cmd_apt_cache(self, argv: List[str]) -> CommandResult:
        # apt-cache policy prints nothing for a name no index has
        offered = self.offered()
        return self.ok(
            argv,
            "".join(
                f"{n}:\n  Installed: {self.state.packages.get(n, '(none)')}\n"
                f"  Candidate: {self.candidate_version(n)}\n  Version table:\n"
                for n in argv[2:]
                if n in offered
            ),
        )

    def cmd_apt_get(self, argv: List[str]) -> CommandResult:
        if argv[1] == "update":
            return self.ok(argv)
        items = apt_operands(argv[2:])
        if argv[1] == "purge":
            return self.apt_refuses(argv, items) or self._remove(items)
        return self.apt_refuses(argv, items) or self._install(items)

    def cmd_yum(self, argv: List[str]) -> CommandResult:
        if argv[1] == "remove":
            return self._remove(argv[3:])
        items = [a for a in argv[2:] if not a.startswith("-")]
        if os.path.basename(argv[0]) == "dnf":
            return self.dnf_refuses(argv, items) or self._install(items)
        found, skipped = self.yum_skips(argv, items)
        if not found:
            return CommandResult(argv, 1, skipped, "Error: Nothing to do\n")
        result = self._install(found)
        return CommandResult(argv, result.returncode, skipped + result.stdout, result.stderr)

    cmd_dnf = cmd_yum

    def started(self, unit: str) -> None:
        for path in UNIT_STATE.get(unit, ()):
            if not self.p(path).exists():
                self.write(path, f"state of {unit}\n")

    def inputs_digest(self, unit: str) -> str:
        digest = hashlib.sha256()
        for path in UNIT_INPUTS.get(unit, ()):
            digest.update(self.p(path).read_bytes() if self.p(path).exists() else b"-")
        return digest.hexdigest()[:12]

    def _install(self, items: List[str]) -> CommandResult:
        for item in items:
            if "/" in item:  # a package file: name_version from the file name
                base = os.path.basename(item)
                name = base.split("_")[0] if base.endswith(".deb") else base.rsplit("-", 2)[0]
                version = (
                    base.split("_")[1] if base.endswith(".deb") else base.rsplit("-", 2)[1] + "-1"
                )
                self.state.packages[name] = version
            elif re.match(r"^.+?-\d+:", item):  # dnf's name-epoch:version-glob spec
                item = re.sub(r"-\d+:.*$", "", item)
                self.state.packages[item] = "28.5.2-1.el9"
            else:
                self.state.packages[item] = "1.0-1"
            binary = PACKAGE_BINARIES.get(item)
            if binary:
                self.write(f"/usr/bin/{binary}", "#!/bin/sh\n", 0o755)
            for path, text in PACKAGE_FILES.get(item, {}).items():
                self.write(path, text, 0o755)
            name = os.path.basename(item).split("_")[0].split("-1")[0]
            unit = PACKAGE_UNITS.get(name) or PACKAGE_UNITS.get(item)
            if unit:  # like a Debian postinst: the package starts its daemon at once
                st = self.state.units.setdefault(unit, UnitState())
                st.enabled = st.active = True
                st.starts += 1
                st.loaded = self.inputs_digest(unit)
                self.started(unit)
        return self.ok(["install", *items])

    def _remove(self, names: List[str]) -> CommandResult:
        for name in names:
            self.state.packages.pop(name, None)
            binary = PACKAGE_BINARIES.get(name)
            if binary:
                self.p(f"/usr/bin/{binary}").unlink(missing_ok=True)
            for path in PACKAGE_FILES.get(name, {}):
                self.p(path).unlink(missing_ok=True)
        return self.ok(["remove", *names])

    def cmd_ip(self, argv: List[str]) -> CommandResult:
        if argv[1:3] == ["link", "delete"]:
            (self.p(f"/sys/class/net/{argv[3]}")).rmdir()
        elif argv[1:] == ["-4", "route", "show", "table", "local"]:
            return self.ok(argv, "".join(
                f"local {address} dev {dev} proto kernel scope host src {address}\n"
                for address, dev in (("127.0.0.1", "lo"), (self.ip, "eth0"))
            ))  # fmt: skip
        elif argv[1:4] == ["-4", "route", "show"]:
            network = ipaddress.IPv4Network(f"{self.ip}/24", strict=False)
            lines = ["default via 10.0.0.254 dev eth0"]
            lines += [f"{network} dev eth0 proto kernel scope link src {self.ip}"]
            lines += [f"{dst} via {via} dev eth0" for dst, via in sorted(self.state.routes.items())]
            return self.ok(argv, "\n".join(lines) + "\n")
        elif argv[1:3] == ["route", "replace"]:
            self.state.routes[argv[3]] = argv[5]
        elif argv[1:3] == ["route", "del"] and self.state.routes.pop(argv[3], None) is None:
            return self.fail(argv, "RTNETLINK answers: No such process", 2)
        return self.ok(argv)

    def cmd_iptables_save(self, argv: List[str]) -> CommandResult:
        return self.ok(argv, self.state.iptables)

    def cmd_iptables_restore(self, argv: List[str]) -> CommandResult:
        self.state.iptables = self.last_input or ""
        return self.ok(argv)

    def cmd_dpkg(self, argv: List[str]) -> CommandResult:
        return self.ok(argv)

    def cmd_systemctl(self, argv: List[str]) -> CommandResult:
        verb = argv[1]
        if verb == "show":
            return self.ok(argv, self.systemctl_show(argv))
        if verb == "daemon-reload":
            return self.ok(argv)
        unit = argv[2]
        if verb in ("disable", "stop"):
            st = self.state.units.setdefault(unit, UnitState())
            if verb == "disable":
                st.enabled = False
            else:
                st.active = False
                if unit == "frakti.service":
                    self.p("/var/run/frakti.sock").unlink(missing_ok=True)
            return self.ok(argv)
        if not self.unit_exists(unit):
            return self.fail(argv, f"Failed to {verb} {unit}: Unit {unit} not found.", 5)
        st = self.state.units.setdefault(unit, UnitState())
        if verb == "enable":
            st.enabled = True
        elif verb in ("start", "restart"):
            if verb == "restart" or not st.active:
                st.starts += 1
                st.loaded = self.inputs_digest(unit)
            st.active = True
            self.started(unit)
            if unit == "frakti.service":
                self.write("/var/run/frakti.sock", "")
        return self.ok(argv)

    def systemctl_show(self, argv: List[str]) -> str:
        """As systemd: names mangled (a bare name is NAME.service), one block per name in
        the order given (systemctl-util.c expand_unit_names: names without a glob keep
        their order), each block the unit's properties under its canonical Id (an
        alias answers with the unit it names), only those -p asked for and in the
        order of systemd's D-Bus interfaces (Unit, then Service), not -p's."""
        wanted: Optional[Set[str]] = None
        names: List[str] = []
        words = iter(argv[2:])
        for word in words:
            if word in ("-p", "--property"):
                wanted = (wanted or set()) | set(next(words).split(","))
            elif word.startswith("--property="):
                wanted = (wanted or set()) | set(word.split("=", 1)[1].split(","))
            elif not word.startswith("-"):
                names.append(word if "." in word else word + ".service")
        blocks = []
        for name in names:
            unit = self.unit_aliases.get(name, name)
            st = self.state.units.get(unit, UnitState())
            exists = self.unit_exists(unit)
            fragment = next(
                (
                    f"{d}/{unit}"
                    for d in ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
                    if self.p(d).joinpath(unit).exists()
                ),
                "",
            )
            props = [
                ("Id", unit),
                ("LoadState", "loaded" if exists else "not-found"),
                ("ActiveState", "active" if st.active else "inactive"),
                ("FragmentPath", fragment),
                ("UnitFileState", ("enabled" if st.enabled else "disabled") if exists else ""),
            ]
            if unit.endswith(".service"):
                props.append(("MainPID", str(4000 + len(unit)) if st.active else "0"))
            blocks.append(
                "".join(f"{k}={v}\n" for k, v in props if wanted is None or k in wanted)
            )
        return "\n".join(blocks)

    def cmd_docker(self, argv: List[str]) -> CommandResult:
        if not self.state.units.get("docker.service", UnitState()).active:
            return self.fail(argv, "Cannot connect to the Docker daemon")
        if argv[1:2] == ["version"]:  # --format {{.Server.MinAPIVersion}}
            return self.ok(argv, self.state.docker_min_api + "\n")
        return self.ok(argv, self.state.docker_driver + "\n")

    def _real(self, target: str) -> Path:
        """target under the root, its links followed inside the root."""
        path = self.p(target)
        for _ in range(8):
            if not path.is_symlink():
                break
            link = os.readlink(path)
            path = self.p(link) if link.startswith("/") else path.parent / link
        return path

    def cmd_qemu_system_x86_64(self, argv: List[str]) -> CommandResult:
        path = self._real(argv[0]) if "/" in argv[0] else None
        if path is None or not path.is_file() or "# sim-qemu" not in path.read_text():
            return self.fail(argv, f"{argv[0]}: No such file or directory", 127)
        machines, _, devices = path.read_text().split("# sim-qemu\n", 1)[1].partition(
            "---devices---\n"
        )
        if argv[1:] == ["-machine", "help"]:
            return self.ok(argv, machines)
        if argv[1:] == ["-device", "help"]:
            return self.ok(argv, devices)
        return self.fail(argv, f"qemu: unknown option {' '.join(argv[1:])}")

    cmd_qemu_kvm = cmd_qemu_system_x86_64

    def cmd_getent(self, argv: List[str]) -> CommandResult:
        hosts = self.p("/etc/hosts").read_text() if self.p("/etc/hosts").exists() else ""
        for line in hosts.splitlines():
            if argv[2] in line.split()[1:]:
                return self.ok(argv, line + "\n")
        return CommandResult(argv, 2, "", "")

    def cmd_swapoff(self, argv: List[str]) -> CommandResult:
        self.write("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n")
        return self.ok(argv)

    def cmd_modprobe(self, argv: List[str]) -> CommandResult:
        name = module_name(argv[-1])
        if name not in self.kernel_modules:
            return self.fail(
                argv, f"modprobe: FATAL: Module {argv[-1]} not found in directory "
                f"/lib/modules/{KERNEL_RELEASE}\n", 1
            )
        if kernel_modules().get(name):  # built in: nothing to load, no error
            return self.ok(argv)
        self.p(f"/sys/module/{name}").mkdir(parents=True, exist_ok=True)
        if name == "br_netfilter":  # the module brings its sysctls
            for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
                self.write(f"/proc/sys/net/bridge/{key}", "0\n")
        return self.ok(argv)

    def sysctl_exists(self, key: str) -> bool:
        path = "/proc/sys/" + key.replace(".", "/")
        if self.p(path).exists():
            return True
        if key.startswith("net.bridge."):  # br_netfilter registers net/bridge when loaded
            return False
        return key in sysctl_keys()

    def cmd_sysctl(self, argv: List[str]) -> CommandResult:
        """`sysctl -p FILE` as procps-ng 4.0.2: unknown keys are reported, the rest set, exit 1."""
        source = self.p(argv[-1])
        if not source.is_file():
            return self.fail(argv, f'sysctl: cannot open "{argv[-1]}": No such file or directory\n')
        errors = []
        for line in source.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith(("#", ";")):
                key, value = (s.strip() for s in line.split("=", 1))
                path = "/proc/sys/" + key.replace(".", "/")
                if not self.sysctl_exists(key):
                    errors.append(f"sysctl: cannot stat {path}: No such file or directory\n")
                    continue
                self.write(path, value + "\n")
        return self.fail(argv, "".join(errors)) if errors else self.ok(argv)

    def cmd_setenforce(self, argv: List[str]) -> CommandResult:
        self.write("/sys/fs/selinux/enforce", argv[1] + "\n")
        return self.ok(argv)

    def _kube_files(self, admin: bool) -> None:
        self.write("/etc/kubernetes/kubelet.conf", "kubeconfig\n", 0o600)
        if admin:
            self.write("/etc/kubernetes/admin.conf", "kubeconfig\n", 0o600)
        self.p("/sys/class/net/cni0").mkdir(parents=True, exist_ok=True)
        self.state.iptables = self.state.iptables.replace(
            "COMMIT",
            ":KUBE-SERVICES - [0:0]\n:CNI-abc - [0:0]\n"
            "-A INPUT -j KUBE-SERVICES\n-A CNI-abc -j ACCEPT\nCOMMIT",
        )
        kubelet = self.state.units.setdefault("kubelet.service", UnitState())
        kubelet.active, kubelet.starts = True, kubelet.starts + 1
        kubelet.loaded = self.inputs_digest("kubelet.service")
        self.started("kubelet.service")

    # kubeadm --config, as kubeadm 1.12 reads it: the schema it knows, and the
    # flags its ValidateMixedArguments lets stand beside --config (v1alpha3-era
    # cmd/kubeadm/app/apis/kubeadm/validation/validation.go; skip-* too).
    KUBEADM_SCHEMAS: Sequence[str] = ("kubeadm.k8s.io/v1alpha3",)
    KUBEADM_WITH_CONFIG: Sequence[str] = (
        "config", "ignore-preflight-errors", "dry-run", "kubeconfig", "v", "rootfs",
    )  # fmt: skip

    def kubeadm_argv(self, argv: List[str]) -> Tuple[List[str], str]:
        """argv with a --config file's settings as the flags they stand for, or
        the error kubeadm gives for the file (an unknown schema, mixed flags)."""
        config = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
        if config is None:
            return argv, ""
        mixed = [
            a[2:].split("=", 1)[0]
            for a in argv[2:]
            if a.startswith("--") and a[2:].split("=", 1)[0] not in self.KUBEADM_WITH_CONFIG
            and not a.startswith("--skip-")
        ]
        if mixed:
            return argv, f"can not mix '--config' with arguments [{' '.join(mixed)}]"
        path = self.p(config)
        if not path.exists():
            return argv, f"open {config}: no such file or directory"
        self.kubeadm_configs.append((config, path.stat().st_mode & 0o777, path.read_text()))
        flags: Dict[str, str] = {}
        for doc in yaml.safe_load_all(path.read_text()):
            version, kind = doc.get("apiVersion"), doc.get("kind")
            if version not in self.KUBEADM_SCHEMAS:
                return argv, f'no kind "{kind}" is registered for version "{version}"'
            registration = doc.get("nodeRegistration") or {}
            discovery = doc.get("discovery", {}).get("bootstrapToken", {})
            endpoint = doc.get("apiEndpoint") or doc.get("localAPIEndpoint") or {}
            found = {
                "token": ((doc.get("bootstrapTokens") or [{}])[0].get("token")
                          or doc.get("token") or discovery.get("token")),
                "node-name": registration.get("name"),
                "cri-socket": registration.get("criSocket"),
                "apiserver-advertise-address": endpoint.get("advertiseAddress"),
                "pod-network-cidr": doc.get("networking", {}).get("podSubnet"),
                "service-cidr": doc.get("networking", {}).get("serviceSubnet"),
                "kubernetes-version": doc.get("kubernetesVersion"),
                "discovery-token-ca-cert-hash": (doc.get("discoveryTokenCACertHashes")
                                                 or discovery.get("caCertHashes") or [None])[0],
                "endpoint": (doc.get("discoveryTokenAPIServers")
                             or [discovery.get("apiServerEndpoint")])[0],
            }  # fmt: skip
            flags.update({k: v for k, v in found.items() if v})
        endpoint_arg = [flags.pop("endpoint")] if "endpoint" in flags else []
        rest = [a for a in argv[2:] if not a.startswith("--config=")]
        return argv[:2] + endpoint_arg + rest + [f"--{k}={v}" for k, v in flags.items()], ""

    def cmd_kubeadm(self, argv: List[str]) -> CommandResult:
        argv, error = self.kubeadm_argv(argv)
        if error:
            return self.fail(argv, error)
        cluster = self.state.cluster
        flags = dict(a[2:].split("=", 1) for a in argv[2:] if a.startswith("--") and "=" in a)
        if argv[1] == "reset":
            # kubeadm reset.go: the contents of these, and of /var/lib/etcd when the
            # etcd manifest is there (a local etcd)
            dirs = ["/etc/cni/net.d", "/var/lib/kubelet", "/var/lib/dockershim", "/var/run/kubernetes"]
            if self.p("/etc/kubernetes/manifests/etcd.yaml").exists():
                dirs.append("/var/lib/etcd")
            for d in ["/etc/kubernetes/manifests", *dirs]:
                for child in self.p(d).glob("*"):
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            master = self.p("/etc/kubernetes/admin.conf").exists()
            for f in ("/etc/kubernetes/admin.conf", "/etc/kubernetes/kubelet.conf"):
                self.p(f).unlink(missing_ok=True)
            if master:
                cluster.nodes.clear()
            return self.ok(argv)
        if argv[1] in ("init", "join"):
            manifests = self.p("/etc/kubernetes/manifests")
            if manifests.exists() and any(manifests.iterdir()):
                return self.fail(argv, "[ERROR DirAvailable--etc-kubernetes-manifests]")
            if self.p("/etc/kubernetes/kubelet.conf").exists():
                return self.fail(argv, "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]")
            if not self.p(flags["cri-socket"]).exists():
                return self.fail(argv, "[ERROR CRI]: container runtime is not running")
        if argv[1] == "init":
            self.state.inits.append(argv)
            self.write(TOKEN_FILE, flags["token"])
            cluster.cidr = flags["pod-network-cidr"]
            cluster.tokens.add(flags["token"])
            self.write(
                "/etc/kubernetes/manifests/kube-controller-manager.yaml",
                f"    - --cluster-cidr={flags['pod-network-cidr']}\n",
            )
            self.write("/etc/kubernetes/manifests/etcd.yaml", "    - --data-dir=/var/lib/etcd\n")
            self.write("/var/lib/etcd/member/snap/db", "etcd\n")
            self._kube_files(admin=True)
            cluster.add_node(flags["node-name"], self.ip, master=True)
            return self.ok(argv, f"kubeadm join {self.ip}:6443 --token {flags['token']}\n")
        if argv[1] == "join":
            if flags.get("token") not in cluster.tokens:
                return self.fail(argv, "error: the bootstrap token is not valid")
            self.state.inits.append(argv)
            self._kube_files(admin=False)
            cluster.add_node(flags["node-name"], self.ip, master=False)
            return self.ok(argv, "This node has joined the cluster\n")
        if argv[1:3] == ["token", "create"]:
            given = argv[3] if len(argv) > 3 and not argv[3].startswith("-") else None
            token = given or f"{os.urandom(3).hex()}.{os.urandom(8).hex()}"  # kubeadm makes one
            cluster.tokens.add(token)
            return self.ok(
                argv,
                f"kubeadm join {self.ip}:6443 --token {token} "
                f"--discovery-token-ca-cert-hash sha256:{'ab' * 32}\n",
            )
        return self.fail(argv, "unknown kubeadm command")

    def cmd_kubectl(self, argv: List[str]) -> CommandResult:
        """kubectl by verb and resource; what it does not know it refuses as kubectl does."""
        verb, words, flags = kubectl_words(argv)
        if verb not in KUBECTL_VERBS:
            return self.fail(argv, f'error: unknown command "{verb}" for "kubectl"\n')
        cluster = self.state.cluster
        kubeconfig = flags.get("kubeconfig", "")
        if not cluster.nodes or not self.p(kubeconfig).exists():
            return self.fail(argv, "The connection to the server localhost:6443 was refused")
        if verb == "apply":
            return self.kubectl_apply(argv, flags)
        if verb == "wait":
            return self.kubectl_wait(argv, words, flags)
        if not words:
            return self.fail(argv, "error: you must specify the type of resource to get\n")
        kind, name = resource_and_name(words)
        if KUBECTL_RESOURCES.get(kind) is None:
            return self.fail(argv, f'error: the server doesn\'t have a resource type "{kind}"\n')
        kind = KUBECTL_RESOURCES[kind]
        args = words[1:] if "/" in words[0] else words[2:]
        if verb == "get":
            return self.kubectl_get(argv, kind, name, flags)
        if kind != "nodes":
            return self.fail(argv, f"unsupported in the simulation: {verb} {kind}")
        node = cluster.nodes.get(name or "")
        if node is None:
            return self.fail(argv, f'Error from server (NotFound): nodes "{name}" not found')
        if verb == "taint":
            return self.kubectl_taint(argv, node, name or "", args)
        if verb in ("annotate", "label"):
            where = "annotations" if verb == "annotate" else "labels"
            return self.kubectl_mark(argv, node, name or "", where, args, "overwrite" in flags)
        return self.fail(argv, f"unsupported in the simulation: {verb} {kind}")

    def kubectl_get(
        self, argv: List[str], kind: str, name: Optional[str], flags: Dict[str, str]
    ) -> CommandResult:
        objects = self.state.cluster.nodes if kind == "nodes" else {}
        if name is not None and name not in objects:
            return self.fail(argv, f'Error from server (NotFound): {kind} "{name}" not found')
        found: Any = objects[name] if name is not None else {
            "apiVersion": "v1", "kind": "List", "items": list(objects.values())
        }
        output = flags.get("o", flags.get("output", ""))
        if output == "json":
            return self.ok(argv, json.dumps(found))
        if output.startswith("jsonpath="):
            return self.ok(argv, jsonpath(found, output[len("jsonpath="):]))
        if output == "name":
            names = [name] if name is not None else list(objects)
            return self.ok(argv, "".join(f"{kind[:-1]}/{n}\n" for n in names))
        return self.fail(argv, f"unsupported in the simulation: -o {output!r}")

    def kubectl_taint(
        self, argv: List[str], node: dict, name: str, args: List[str]
    ) -> CommandResult:
        if not args:
            return self.fail(argv, "error: at least one taint update is required\n")
        taints = node["spec"]["taints"]
        for arg in args:
            if arg.endswith("-"):
                key = arg[:-1].split(":")[0].split("=")[0]
                if not any(t["key"] == key for t in taints):
                    return self.fail(argv, f'error: taint "{arg[:-1]}" not found')
                taints[:] = [t for t in taints if t["key"] != key]
                continue
            if ":" not in arg:
                return self.fail(argv, f'error: invalid taint spec: {arg}, unknown effect')
            key_value, effect = arg.rsplit(":", 1)
            taints.append({"key": key_value.split("=")[0], "effect": effect})
        removed = all(a.endswith("-") for a in args)
        return self.ok(argv, f"node/{name} {'untainted' if removed else 'tainted'}\n")

    def kubectl_mark(
        self, argv: List[str], node: dict, name: str, where: str, args: List[str], overwrite: bool
    ) -> CommandResult:
        marks = node["metadata"].setdefault(where, {})
        for arg in args:
            if arg.endswith("-"):
                marks.pop(arg[:-1], None)
                continue
            key, _, value = arg.partition("=")
            if key in marks and marks[key] != value and not overwrite:
                return self.fail(
                    argv,
                    f"error: --overwrite is false but found the following declared "
                    f"{where[:-1]}(s): '{key}' already has a value ({marks[key]})\n",
                )
            marks[key] = value
        done = "annotated" if where == "annotations" else "labeled"
        return self.ok(argv, f"node/{name} {done}\n")

    def kubectl_wait(
        self, argv: List[str], words: List[str], flags: Dict[str, str]
    ) -> CommandResult:
        kind, name = resource_and_name(words)
        if KUBECTL_RESOURCES.get(kind) != "nodes" or name is None:
            return self.fail(argv, "unsupported in the simulation: wait for " + " ".join(words))
        node = self.state.cluster.nodes.get(name)
        if node is None:
            return self.fail(argv, f'Error from server (NotFound): nodes "{name}" not found')
        condition = flags.get("for", "")
        if not condition.startswith("condition="):
            return self.fail(argv, f"error: unrecognized condition: {condition!r}\n")
        wanted = condition.split("=", 1)[1]
        met = any(
            c["type"] == wanted and c["status"] == "True" for c in node["status"]["conditions"]
        )
        if not met:
            return self.fail(argv, f"error: timed out waiting for the condition on nodes/{name}\n")
        return self.ok(argv, f"node/{name} condition met\n")

    def kubectl_apply(self, argv: List[str], flags: Dict[str, str]) -> CommandResult:
        if flags.get("f") != "-" and flags.get("filename") != "-":
            return self.fail(argv, "unsupported in the simulation: apply without -f -")
        lines = []
        for obj in yaml.safe_load_all(self.last_input or ""):
            if not obj:
                continue
            kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
            if not kind or not name:
                return self.fail(argv, "error: error validating data: kind or name not set\n")
            key = (kind, name)
            old = self.state.cluster.objects.get(key)
            self.state.cluster.objects[key] = obj
            state = "created" if old is None else ("unchanged" if old == obj else "configured")
            lines.append(f"{kind.lower()}/{name} {state}\n")
        return self.ok(argv, "".join(lines))


# kubectl's verbs the simulation answers (others: `error: unknown command`), and the
# resource names (with kubectl's short names) it knows, as the API server's discovery.
KUBECTL_VERBS = {"get", "apply", "annotate", "label", "taint", "wait"}
KUBECTL_RESOURCES = {
    **dict.fromkeys(("nodes", "node", "no"), "nodes"),
    **dict.fromkeys(("pods", "pod", "po"), "pods"),
    **dict.fromkeys(("namespaces", "namespace", "ns"), "namespaces"),
    **dict.fromkeys(
        ("runtimeclasses", "runtimeclass", "runtimeclasses.node.k8s.io"), "runtimeclasses"
    ),
    **dict.fromkeys(("daemonsets", "daemonset", "ds"), "daemonsets"),
    **dict.fromkeys(("configmaps", "configmap", "cm"), "configmaps"),
}
# flags that take a value (as a separate word or after "=")
KUBECTL_VALUE_FLAGS = {
    "kubeconfig", "n", "namespace", "o", "output", "f", "filename", "l", "selector",
    "for", "timeout", "context", "server", "token",
}


def kubectl_words(argv: Sequence[str]) -> Tuple[str, List[str], Dict[str, str]]:
    """(verb, the other positional words, flags) of a kubectl command line."""
    words: List[str] = []
    flags: Dict[str, str] = {}
    items = iter(argv[1:])
    for item in items:
        if item.startswith("-") and item != "-":
            name, eq, value = item.lstrip("-").partition("=")
            if not eq and name in KUBECTL_VALUE_FLAGS:
                value = next(items, "")
            flags[name] = value
        else:
            words.append(item)
    return (words[0] if words else ""), words[1:], flags


def resource_and_name(words: List[str]) -> Tuple[str, Optional[str]]:
    """`node NAME` or `node/NAME` or `nodes`: the resource type and the name, if any."""
    if not words:
        return "", None
    if "/" in words[0]:
        kind, name = words[0].split("/", 1)
        return kind, name
    return words[0], (words[1] if len(words) > 1 and "=" not in words[1] else None)


def jsonpath(obj: Any, template: str) -> str:
    """kubectl's -o jsonpath for plain paths ({.a.b}, {.items[0].c}); others refused."""
    match = re.fullmatch(r"\{((?:\.[\w-]+(?:\[\d+\])?)+)\}", template.strip("'\""))
    if match is None:
        raise AssertionError(f"jsonpath {template!r} is beyond the simulation")
    node = obj
    for part in re.findall(r"\.([\w-]+)(?:\[(\d+)\])?", match.group(1)):
        key, index = part
        node = node.get(key, "") if isinstance(node, dict) else ""
        if index and isinstance(node, list):
            node = node[int(index)] if int(index) < len(node) else ""
    return node if isinstance(node, str) else json.dumps(node)


class SimCluster:
    """The API server's view, shared by the SimMachines of one cluster."""

    def __init__(self) -> None:
        self.cidr = ""
        self.nodes: Dict[str, dict] = {}
        self.tokens: Set[str] = set()
        self.objects: Dict[Tuple[str, str], dict] = {}  # (kind, name) -> what apply stored

    def add_node(self, name: str, ip: str, master: bool) -> None:
        import ipaddress

        used = {n["spec"]["podCIDR"] for n in self.nodes.values()}
        free = (
            str(net)
            for net in ipaddress.IPv4Network(self.cidr).subnets(new_prefix=24)
            if str(net) not in used
        )
        taint = [{"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}]
        self.nodes[name] = {
            "metadata": {"name": name},
            "spec": {"podCIDR": next(free), "taints": taint if master else []},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": ip}],
            },
        }

    def node(self, name: str) -> dict:
        return self.nodes[name]


# What the real servers publish beside a file, by release (docs/upstream-facts.md),
# kept here apart from data/artifacts.yaml so that a wrong belief there fails:
# dl.k8s.io has .md5/.sha1 for every release, .sha512 from v1.12.0 (kubernetes/
# release#630), .sha256 only from v1.16.0 (kubernetes/kubernetes#68555, kops#7550,
# kops#8242, flavio/kuberlr#80); the CNI plugins' GitHub releases carry .sha1,
# .sha256 and .sha512 (v0.6.0, v0.7.5); frakti, crictl v1.12 and hyperd none.
_K8S_RELEASE = re.compile(r"/release/v(\d+)\.(\d+)\.(\d+)/bin/")


def upstream_hash_files(url: str) -> Set[str]:
    """The hash file suffixes upstream serves beside ``url`` (others are a 404)."""
    release = _K8S_RELEASE.search(url)
    if release:
        minor = (int(release.group(1)), int(release.group(2)))
        found = {"md5", "sha1"}
        if minor >= (1, 12):
            found.add("sha512")
        if minor >= (1, 16):
            found.add("sha256")
        return found
    if "/containernetworking/plugins/releases/download/" in url:
        return {"sha1", "sha256", "sha512"}
    return set()


# The hypercontainer-install bucket only ever held hyperd 0.8.1 packages; no public
# location of hyperd 1.x .deb/.rpm is known (docs/upstream-facts.md).
HYPER_DEFAULT_BASE = "https://hypercontainer-install.s3.amazonaws.com"


def upstream_serves(url: str) -> bool:
    return not (url.startswith(HYPER_DEFAULT_BASE + "/") and "0.8.1" not in url)


class SimDownloader:
    """Serves made-up artifact bytes, and only the hash files upstream publishes."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.fetched: List[str] = []
        self.texts: List[str] = []  # every hash file asked for, served or not
        self.corrupt: Set[str] = set()

    @staticmethod
    def content(url: str) -> bytes:
        if url.endswith((".tgz", ".tar.gz")):
            return _tarball(url)
        return f"#!/bin/sh\n# {url}\n".encode()

    @classmethod
    def sha256_for(cls, url: str) -> str:
        return hashlib.sha256(cls.content(url)).hexdigest()

    def fetch_text(self, url: str) -> str:
        from frakti_install.errors import DownloadError

        self.texts.append(url)
        target, _, suffix = url.rpartition(".")
        if suffix not in upstream_hash_files(target) or suffix == "md5":
            # as requests sees a missing object on dl.k8s.io / GitHub
            raise DownloadError(f"cannot download {url}: HTTP 404 Not Found")
        return hashlib.new(suffix, self.content(target)).hexdigest() + "\n"

    def cached(self, sha256: str) -> Optional[Path]:
        path = self.cache / sha256.lower()
        return path if path.is_file() else None

    def put_in_cache(self, url: str) -> None:
        """A file the operator copied into the cache (or a bundle carries)."""
        data = self.content(url)
        self.cache.mkdir(parents=True, exist_ok=True)
        (self.cache / hashlib.sha256(data).hexdigest()).write_bytes(data)

    def fetch(self, url: str, expected: object) -> Path:
        from frakti_install.download import Digest
        from frakti_install.errors import ChecksumMismatch, DownloadError

        want = Digest.of(expected)  # type: ignore[arg-type]
        if want.algorithm == "sha256" and self.cached(want.hexdigest):
            return self.cache / want.hexdigest  # no network, as the real cache
        self.fetched.append(url)
        if not upstream_serves(url):
            raise DownloadError(f"cannot download {url}: HTTP 404 Not Found")
        data = self.content(url) + (b"x" if url in self.corrupt else b"")
        actual = hashlib.new(want.algorithm, data).hexdigest()
        if actual != want.hexdigest:
            raise ChecksumMismatch(url, want.hexdigest, actual)
        path = self.cache / hashlib.sha256(data).hexdigest()  # keyed by sha256, as the cache
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def _tarball(url: str) -> bytes:
    import gzip
    import io
    import tarfile

    buffer = io.BytesIO()
    # mtime=0: the same bytes on every call, as a published release file is
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(
        fileobj=gz, mode="w"
    ) as archive:
        for name in ("bridge", "host-local", "loopback", "portmap", "crictl"):
            data = f"#!/bin/sh\n# {name} from {url}\n".encode()
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _resolver(os_id: str) -> object:
    from frakti_install import artifacts, versions

    fmt = "deb" if os_id in ("ubuntu", "debian") else "rpm"
    return artifacts.Artifacts(Settings(), versions.resolve(), "amd64", fmt, lambda: None)  # type: ignore[arg-type,return-value]


def given_checksums(os_id: str = "debian") -> Dict[str, str]:
    """The sums a user gives for artifacts with no published checksum."""
    resolver = _resolver(os_id)
    return {
        name: SimDownloader.sha256_for(resolver.get(name).url)  # type: ignore[attr-defined]
        for name in ("frakti", "crictl", "hypercontainer", "hyperstart")
    }


def hyper_package_urls(os_id: str = "debian") -> List[str]:
    resolver = _resolver(os_id)
    return [resolver.get(n).url for n in ("hypercontainer", "hyperstart")]  # type: ignore[attr-defined]


class SimMachine:
    """A root directory laid out like a fresh host of one supported system."""

    def __init__(
        self,
        root: Path,
        os_id: str,
        version: str,
        *,
        cgroup: int = 1,
        swap: bool = False,
        cpu_flags: str = "fpu vmx sse",
        hostname: str = "Node-1",
        selinux_enforcing: bool = True,
        ip: str = "10.0.0.1",
        cluster: Optional[SimCluster] = None,
        hyper_packages_cached: bool = True,
        qemu_hyper: bool = True,
    ) -> None:
        """hyper_packages_cached: the operator has put the hyperd packages in the
        download cache (no public download of hyperd 1.x is known), as a copy or a
        bundle would; without it the install needs --mirror hyper=URL.
        qemu_hyper: on EL, the operator has installed hyper's qemu-hyper rpm (no EL
        repository has a QEMU hyperd can run)."""
        self.root = root
        self.os_id = os_id
        self.state = SimState(cluster=cluster or SimCluster())
        self.runner = SimRunner(root, self.state, ip)
        self.runner.system = (os_id, version)
        self.downloader = SimDownloader(root / "var/cache/sim")
        if hyper_packages_cached:
            for url in hyper_package_urls(os_id):
                self.downloader.put_in_cache(url)
        w = self.runner.write
        w("/etc/os-release", OS_RELEASE[(os_id, version)])
        w("/proc/sys/kernel/hostname", hostname + "\n")
        w("/etc/hosts", f"127.0.0.1 localhost\n{ip} {hostname}\n")
        w(
            "/etc/fstab",
            "UUID=abc / ext4 defaults 0 1\n" + ("/swapfile none swap sw 0 0\n" if swap else ""),
        )
        for binary in ("ip", "mount", "nsenter", "tc", "touch", "iptables-save"):
            w(f"/usr/bin/{binary}", "#!/bin/sh\n", 0o755)
        w("/usr/local/bin/frakti-install", "#!/bin/sh\n", 0o755)  # bootstrap.py's link
        w(
            "/proc/cpuinfo",
            "".join(f"processor\t: {i}\nflags\t\t: {cpu_flags}\n\n" for i in range(4)),
        )
        w("/proc/meminfo", "MemTotal:        8000000 kB\n")
        w(
            "/proc/swaps",
            "Filename\tType\tSize\tUsed\tPriority\n"
            + ("/swapfile file 1024 0 -2\n" if swap else ""),
        )
        w("/proc/sys/net/ipv4/ip_forward", "0\n")
        w("/proc/filesystems", "nodev\tsysfs\nnodev\tproc\n\text4\n")
        w("/dev/kvm", "")
        self.p("/run/systemd/system").mkdir(parents=True)
        self.p("/sys/fs/cgroup").mkdir(parents=True)
        if cgroup == 2:
            w("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n")
        if os_id not in ("ubuntu", "debian") and qemu_hyper:
            self.runner._install(["qemu-hyper"])
            self.state.packages["qemu-hyper"] = "2.4.1-3.el7.centos"
        if os_id not in ("ubuntu", "debian"):
            w("/sys/fs/selinux/enforce", "1\n" if selinux_enforcing else "0\n")
            w("/etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n")
        self.runner._refresh_ports()

    def p(self, target: str) -> Path:
        return self.root / target.lstrip("/")

    def settings(self, **overrides: object) -> Settings:
        from frakti_install import config

        values: Dict[str, object] = {"checksums": given_checksums(self.os_id)}
        values.update(overrides)
        return config.validate(Settings(**values))  # type: ignore[arg-type]

    def context(self, settings: Optional[Settings] = None) -> Context:
        ctx = Context(
            host=Host(root=self.root, runner=self.runner), settings=settings or self.settings()
        )
        ctx.downloader_factory = lambda: self.downloader
        return ctx

    def snapshot(self) -> Dict[str, str]:
        """Every file under /etc, /usr, /lib and /opt with its content hash, plus sim state."""
        files = {}
        for top in ("etc", "usr", "lib", "opt"):
            for path in sorted(self.p(top).rglob("*")) if self.p(top).exists() else []:
                if path.is_file():
                    files[str(path.relative_to(self.root))] = hashlib.sha256(
                        path.read_bytes()
                    ).hexdigest()[:12]
        files["#packages"] = ",".join(sorted(self.state.packages))
        files["#units"] = ",".join(
            sorted(
                f"{u}:{s.enabled}:{s.active}"
                for u, s in self.state.units.items()
                if s.enabled or s.active
            )
        )
        files["#stale-daemons"] = ",".join(
            sorted(
                unit
                for unit, st in self.state.units.items()
                if st.active and st.loaded != self.runner.inputs_digest(unit)
            )
        )
        files["#iptables"] = self.state.iptables
        files["#routes"] = json.dumps(self.state.routes, sort_keys=True)
        files["#links"] = ",".join(sorted(p.name for p in self.p("/sys/class/net").glob("*")))
        files["#nodes"] = json.dumps(self.state.cluster.nodes, sort_keys=True)
        return files
