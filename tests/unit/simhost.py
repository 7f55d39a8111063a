"""A simulated host for unit tests: a scratch root directory for files, and a
command runner that imitates what the installer relies on (package
managers, systemd, docker, kubeadm, kubectl, modprobe, sysctl).

It is a test stand-in only. It keeps the state those programs would keep and
changes it the way they would, so a whole plan can be applied, re-run,
interrupted and resumed without a real machine.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Set

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
    other_listeners: Set[int] = field(default_factory=set)  # ports held by something else
    routes: Dict[str, str] = field(default_factory=dict)
    iptables: str = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.9.9.9/32 -j DROP\nCOMMIT\n"


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
    }

    def __init__(self, root: Path, state: SimState, ip: str = "10.0.0.1") -> None:
        self.root = root
        self.state = state
        self.ip = ip
        self.calls: List[List[str]] = []
        self.kill_at: Optional[int] = None  # index among mutating commands
        self.last_input: Optional[str] = None
        self.mutations = 0

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
        if argv[0] in self.READ_ONLY or list(argv[:4]) == ["ip", "-4", "route", "show"]:
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
        return self.ok(argv, "0\n")

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

    def cmd_apt_cache(self, argv: List[str]) -> CommandResult:
        return self.ok(
            argv, "".join(f"{n}:\n  Installed: (none)\n  Candidate: 1.0-1\n" for n in argv[2:])
        )

    def cmd_apt_get(self, argv: List[str]) -> CommandResult:
        if argv[1] == "update":
            return self.ok(argv)
        if argv[1] == "purge":
            return self._remove([a for a in argv[2:] if not a.startswith("-")])
        return self._install([a for a in argv[2:] if not a.startswith("-") and "Dpkg::" not in a])

    def cmd_yum(self, argv: List[str]) -> CommandResult:
        if argv[1] == "remove":
            return self._remove(argv[3:])
        return self._install([a for a in argv[2:] if not a.startswith("-")])

    cmd_dnf = cmd_yum

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
            else:
                self.state.packages[item] = "1.0-1"
            binary = PACKAGE_BINARIES.get(item)
            if binary:
                self.write(f"/usr/bin/{binary}", "#!/bin/sh\n", 0o755)
            name = os.path.basename(item).split("_")[0].split("-1")[0]
            unit = PACKAGE_UNITS.get(name) or PACKAGE_UNITS.get(item)
            if unit:  # like a Debian postinst: the package starts its daemon at once
                st = self.state.units.setdefault(unit, UnitState())
                st.enabled = st.active = True
                st.starts += 1
                st.loaded = self.inputs_digest(unit)
        return self.ok(["install", *items])

    def _remove(self, names: List[str]) -> CommandResult:
        for name in names:
            self.state.packages.pop(name, None)
            binary = PACKAGE_BINARIES.get(name)
            if binary:
                self.p(f"/usr/bin/{binary}").unlink(missing_ok=True)
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
            units = [a for a in argv[2:] if a.endswith((".service", ".timer"))]
            blocks = []
            for unit in units:
                st = self.state.units.get(unit, UnitState())
                loaded = "loaded" if self.unit_exists(unit) else "not-found"
                blocks.append(
                    f"Id={unit}\nLoadState={loaded}\n"
                    f"ActiveState={'active' if st.active else 'inactive'}\n"
                    f"UnitFileState={'enabled' if st.enabled else 'disabled'}\nMainPID=0\n"
                )
            return self.ok(argv, "\n".join(blocks))
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
            if unit == "frakti.service":
                self.write("/var/run/frakti.sock", "")
        return self.ok(argv)

    def cmd_docker(self, argv: List[str]) -> CommandResult:
        if not self.state.units.get("docker.service", UnitState()).active:
            return self.fail(argv, "Cannot connect to the Docker daemon")
        return self.ok(argv, self.state.docker_driver + "\n")

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
        self.p(f"/sys/module/{argv[1]}").mkdir(parents=True, exist_ok=True)
        if argv[1] == "br_netfilter":  # the module brings its sysctls
            for key in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
                self.write(f"/proc/sys/net/bridge/{key}", "0\n")
        return self.ok(argv)

    def cmd_sysctl(self, argv: List[str]) -> CommandResult:
        for line in self.p(argv[-1]).read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = (s.strip() for s in line.split("=", 1))
                self.write("/proc/sys/" + key.replace(".", "/"), value + "\n")
        return self.ok(argv)

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

    def cmd_kubeadm(self, argv: List[str]) -> CommandResult:
        cluster = self.state.cluster
        flags = dict(a[2:].split("=", 1) for a in argv[2:] if a.startswith("--") and "=" in a)
        if argv[1] == "reset":
            for d in ("/etc/kubernetes/manifests", "/etc/cni/net.d"):
                for child in self.p(d).glob("*"):
                    child.unlink()
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
            cluster.tokens.add(argv[3])
            return self.ok(
                argv,
                f"kubeadm join {self.ip}:6443 --token {argv[3]} "
                f"--discovery-token-ca-cert-hash sha256:{'ab' * 32}\n",
            )
        return self.fail(argv, "unknown kubeadm command")

    def cmd_kubectl(self, argv: List[str]) -> CommandResult:
        cluster = self.state.cluster
        kubeconfig = argv[argv.index("--kubeconfig") + 1]
        if not cluster.nodes or not self.p(kubeconfig).exists():
            return self.fail(argv, "The connection to the server localhost:6443 was refused")
        if "get" in argv:
            return self.ok(argv, json.dumps({"items": list(cluster.nodes.values())}))
        verb_at = 3
        verb, name = (
            argv[verb_at],
            argv[verb_at + 2 if argv[verb_at + 1] == "nodes" else verb_at + 3],
        )
        node = cluster.nodes.get(name)
        if node is None:
            return self.fail(argv, f'Error from server (NotFound): nodes "{name}" not found')
        if verb == "taint":
            key = argv[-1].rstrip("-").split(":")[0]
            taints = node["spec"]["taints"]
            if not any(t["key"] == key for t in taints):
                return self.fail(argv, f'error: taint "{key}" not found')
            node["spec"]["taints"] = [t for t in taints if t["key"] != key]
            return self.ok(argv, f"node/{name} untainted\n")
        if verb == "annotate":
            key, value = argv[-1].split("=", 1)
            node["metadata"].setdefault("annotations", {})[key] = value
            return self.ok(argv, f"node/{name} annotated\n")
        return self.fail(argv, "unsupported")


class SimCluster:
    """The API server's view, shared by the SimMachines of one cluster."""

    def __init__(self) -> None:
        self.cidr = ""
        self.nodes: Dict[str, dict] = {}
        self.tokens: Set[str] = set()

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
    ) -> None:
        """hyper_packages_cached: the operator has put the hyperd packages in the
        download cache (no public download of hyperd 1.x is known), as a copy or a
        bundle would; without it the install needs --mirror hyper=URL."""
        self.root = root
        self.os_id = os_id
        self.state = SimState(cluster=cluster or SimCluster())
        self.runner = SimRunner(root, self.state, ip)
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
