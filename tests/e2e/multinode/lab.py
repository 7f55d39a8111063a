"""Several booted Debian 12 hosts on one private network, for the multi-node tests.

Built on tests/e2e/testbed.py (not changed here):

- ``ensure_lab_image(base)``: the harness's cached image plus openssh-server
  (the `cluster` command reaches the hosts over SSH) and iputils-ping (pods
  ping each other), installed with apt-get in a chroot on a copy of it, and
  cached separately under the same cache root (``multinode-*``).
- ``Lab``: a network namespace this test creates (``fimn-<pid>-<label>``) holding a
  bridge, ``br0``, with 192.168.99.1/24. Each booted host already has a network
  namespace of its own (systemd-nspawn --private-network); ``attach()``
  replaces the harness's isolated eth0 with a veth whose other end is on
  br0, gives the host its address, a default route via 192.168.99.1 (so kubeadm
  and kubelet pick that address), a hostname of its own and /etc/hosts
  entries for the others. The 192.168.99.0/24 addresses exist only inside those
  namespaces. ``destroy()`` deletes the namespace (and with it br0 and the
  host ends of the veths); namespaces of dead test runs are removed first.
- ``build_lab_mirror()``: the stand-in mirror, with the kubeadm, kubelet and
  kubectl stand-ins extended by standin_multinode.py (one cluster state on
  the master, reached through its stand-in kube-apiserver on 6443; kubeadm
  join; pod CIDR allocation) and their hash files (.sha512 for v1.12) redone.
- ``add_pod()``: a network namespace on a host, plugged into the node's cni0
  by Debian's real CNI bridge plugin (``CNI_COMMAND=ADD``, the node's
  /etc/cni/net.d/10-mynet.conf).
"""

from __future__ import annotations

import hashlib
import inspect
import ipaddress
import json
import os
import py_compile
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import testbed

HERE = Path(__file__).resolve().parent
PATCH = HERE / "standin_multinode.py"
EXTRA_PACKAGES = ("openssh-server", "iputils-ping")
NETNS_PREFIX = "fimn-"
SUBNET = ipaddress.IPv4Network("192.168.99.0/24")
GATEWAY = "192.168.99.1"
CNI_CONF = "/etc/cni/net.d/10-mynet.conf"
CNI_BIN = "/usr/lib/cni"  # Debian's containernetworking-plugins
KUBE_PROGRAMS = ("kubeadm", "kubelet", "kubectl")


# --------------------------------------------------------------------------- the image


def _customize_lab_image(root: Path, log: Path) -> None:
    """Install EXTRA_PACKAGES in the copied image (its source is part of the cache key)."""
    policy = root / "usr/sbin/policy-rc.d"  # start no service inside the chroot
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    install = ("install", "-y", "-q", "--no-install-recommends", *EXTRA_PACKAGES)
    try:
        with testbed.host_network(root):
            try:
                testbed.chroot_apt(root, log, *install)
            except testbed.TestbedError:
                # The image's package lists went stale: refresh them, and the offline
                # cache of what the installer asks apt for, so both agree again.
                testbed.chroot_apt(root, log, "update", "-q")
                testbed.chroot_apt(root, log, *install)
                testbed.download_into_cache(root, log, testbed.OFFLINE_PACKAGES)
    finally:
        policy.unlink()
    conf = root / "etc/ssh/sshd_config.d/frakti-e2e.conf"
    conf.write_text(
        "# frakti-install multi-node e2e hosts: keys only\n"
        "PasswordAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n"
    )
    if not (root / "usr/sbin/sshd").exists() or not (root / "usr/bin/ping").exists():
        raise testbed.TestbedError(
            "openssh-server or iputils-ping is missing after apt-get install"
        )


def ensure_lab_image(base: Path, prefix: str = "multinode") -> Path:
    """The base image plus EXTRA_PACKAGES, built once per base image (~30 s);
    a suite with another base gives its own prefix (the cache keeps one image
    per prefix)."""
    recipe = {"packages": EXTRA_PACKAGES, "customize": inspect.getsource(_customize_lab_image)}
    return testbed.derived_image(prefix, base, recipe, _customize_lab_image)


# --------------------------------------------------------------------------- the mirror


def build_lab_mirror(mirror: Dict[str, object], dest: Path) -> Path:
    """The stand-in mirror with the multi-node kube stand-ins (and their new sums)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(Path(str(mirror["dir"])), dest, symlinks=True)
    patch = PATCH.read_text()
    paths = mirror["paths"]
    assert isinstance(paths, dict)
    marker = '\nif __name__ == "__main__":'
    for program in KUBE_PROGRAMS:
        path = dest / paths[program]
        text = path.read_text()
        if text.count(marker) != 1:
            raise testbed.TestbedError(f"{path}: no single `if __name__` line to insert before")
        text = text.replace(marker, "\n\n" + patch + marker)
        path.write_text(text)
        py_compile.compile(str(path), cfile=str(dest / f".{program}.pyc"), doraise=True)
        (dest / f".{program}.pyc").unlink()
        # redo the hash files dl.k8s.io has for this release (no .sha256 before v1.16)
        for algorithm in ("md5", "sha1", "sha256", "sha512"):
            hashed = path.parent / f"{program}.{algorithm}"
            if hashed.exists():
                hashed.write_text(hashlib.new(algorithm, text.encode()).hexdigest())
    return dest


# --------------------------------------------------------------------------- the network


def netns_name(label: str) -> str:
    """The lab namespace of this test run for `label` (the run's PID is in its name)."""
    return f"{NETNS_PREFIX}{os.getpid()}-{label}"


def _netns_pid(name: str) -> Optional[int]:
    match = re.match(rf"^{NETNS_PREFIX}(\d+)-", name)
    return int(match.group(1)) if match else None


def cleanup_stale_labs() -> None:
    """Delete the lab namespaces of test runs that are gone."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        pid = _netns_pid(name)
        if pid is not None and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@dataclass
class Node:
    machine: testbed.Machine
    name: str  # hostname and Kubernetes node name
    address: str  # on the lab network


class Lab:
    """One network namespace with a bridge; hosts attached to it by veth pairs."""

    def __init__(self, label: str) -> None:
        self.netns = netns_name(label)
        self.nodes: List[Node] = []

    def create(self) -> Lab:
        cleanup_stale_labs()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        for argv in (
            ["ip", "netns", "add", self.netns],
            ["ip", "-n", self.netns, "link", "set", "lo", "up"],
            ["ip", "-n", self.netns, "link", "add", "br0", "type", "bridge"],
            ["ip", "-n", self.netns, "addr", "add", f"{GATEWAY}/{SUBNET.prefixlen}", "dev", "br0"],
            ["ip", "-n", self.netns, "link", "set", "br0", "up"],
        ):
            testbed._run_host(argv)
        return self

    def destroy(self) -> None:
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)

    def address(self, index: int) -> str:
        return str(SUBNET.network_address + 10 + index)

    def attach(self, machine: testbed.Machine, name: str) -> Node:
        """Plug a booted host into br0 as its only network card, eth0."""
        index = len(self.nodes)
        address = self.address(index)
        assert machine.pid is not None
        machine.run(["ip", "link", "del", "eth0"])  # the harness's card, which leads nowhere
        testbed._run_host(
            [
                "ip",
                "-n",
                self.netns,
                "link",
                "add",
                f"veth{index}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                str(machine.pid),
            ]
        )
        testbed._run_host(
            ["ip", "-n", self.netns, "link", "set", f"veth{index}", "master", "br0", "up"]
        )
        machine.run(
            [
                "sh",
                "-euc",
                f"""
            ip addr add {address}/{SUBNET.prefixlen} dev eth0
            ip link set eth0 up
            ip route replace default via {GATEWAY} dev eth0
            echo {name} > /etc/hostname
            hostname {name}
        """,
            ]
        )
        node = Node(machine, name, address)
        self.nodes.append(node)
        return node

    def write_hosts(self) -> None:
        """/etc/hosts on every host names every host, as on a LAN with DNS."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{n.address}\t{n.name}" for n in self.nodes]
        for node in self.nodes:
            node.machine.write("/etc/hosts", "\n".join(lines) + "\n")

    def run(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        """A command on the test host, but inside the lab network (e.g. ssh, ansible)."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], **kwargs)  # type: ignore[call-overload]


def authorize_key(machine: testbed.Machine, public_key: str) -> None:
    machine.run(["mkdir", "-p", "-m", "0700", "/root/.ssh"])
    machine.write("/root/.ssh/authorized_keys", public_key, 0o600)
    machine.run(["systemctl", "enable", "--now", "ssh.service"])
    machine.wait_tcp(22)


def cluster_inventory(
    nodes: Sequence[Node], key: Path, wheel: Path, config: Dict[str, object]
) -> Dict[str, object]:
    """`cluster -f`'s inventory for these hosts (the first the master), reached
    as root with `key`, frakti-install installed from `wheel` with the hosts'
    /wheelhouse as pip's only index."""
    return {
        "apiVersion": "frakti-install/v1",
        "kind": "Cluster",
        "metadata": {"name": "e2e"},
        "spec": {
            "hosts": [
                {
                    "role": "master" if i == 0 else "worker",
                    "ssh": {"address": n.address, "user": "root", "keyPath": str(key)},
                }
                for i, n in enumerate(nodes)
            ],
            "install": {
                "fromPath": str(wheel),
                "pipArgs": ["--no-index", "--find-links=/wheelhouse"],
            },
            "config": config,
        },
    }


def ansible_env(work: Path) -> Dict[str, str]:
    """The environment ansible-playbook runs in: no host key prompts, one SSH
    connection per host kept open, plain output."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_PIPELINING="True",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=300s "
        "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR",
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(work / "cp"),
        ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
        ANSIBLE_REMOTE_TEMP="/root/.ansible/tmp",
    )
    return env


def play_cluster(
    inventory: object, netns: str, work: Path, log: Path, **options: object
) -> int:
    """frakti_install.cluster.run_cluster(inventory, yes=True, **options) with
    ansible-playbook inside the lab network, its output in `log`; the exit code."""
    from frakti_install import cluster

    def runner(argv: List[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        with open(log, "w") as out:
            return subprocess.run(  # type: ignore[call-overload]
                ["ip", "netns", "exec", netns, *argv],
                env=kwargs["env"], stdout=out, stderr=subprocess.STDOUT, timeout=1800,
            )  # fmt: skip

    options.setdefault("dry_run", False)
    return cluster.run_cluster(  # type: ignore[arg-type]
        inventory, yes=True, runner=runner, env=ansible_env(work), **options
    )


def check_playbook_log(log: str, nodes: Sequence[Node], admin_conf: str) -> None:
    """A cluster playbook's output: the master's client key (from its
    admin.conf's text) never in it, and a recap line without failures per node."""
    secret = re.search(r"client-key-data: (\S+)", admin_conf)
    assert secret is None or secret.group(1) not in log
    recap = log[log.index("PLAY RECAP") :]
    for node in nodes:
        line = next(r for r in recap.splitlines() if r.startswith(node.address))
        assert re.search(r"\bfailed=0\b", line), line


def make_key(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "id_ed25519"
    if not key.exists():
        testbed._run_host(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "frakti-e2e", "-f", str(key)]
        )
    return key


# --------------------------------------------------------------------------- pods


@dataclass
class Pod:
    node: Node
    netns: str
    address: str  # without the prefix length


def add_pod(node: Node, name: str) -> Pod:
    """A network namespace on the node, plugged into cni0 by the CNI bridge plugin."""
    machine = node.machine
    machine.run(["ip", "netns", "add", name])
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": f"e2e-{name}",
        "CNI_NETNS": f"/var/run/netns/{name}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": CNI_BIN,
    }
    result = machine.run([f"{CNI_BIN}/bridge"], env=env, input=machine.read(CNI_CONF))
    answer = json.loads(result.stdout)
    address = answer["ips"][0]["address"].split("/")[0]
    return Pod(node, name, address)


def ping(pod: Pod, target: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    return pod.node.machine.run(
        ["ip", "netns", "exec", pod.netns, "ping", "-c", str(count), "-W", "2", target],
        check=False,
        timeout=60,
    )


# --------------------------------------------------------------------------- looking


def routes(machine: testbed.Machine) -> Dict[str, str]:
    """`ip -4 route` as {destination: next hop} for the routes via a gateway."""
    found = {}
    for line in machine.run(["ip", "-4", "route", "show"]).stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "via":
            found[fields[0]] = fields[2]
    return found


def cluster_nodes(master: testbed.Machine) -> List[dict]:
    out = master.run(
        ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "get", "nodes", "-o", "json"]
    ).stdout
    return list(json.loads(out)["items"])


def wait_until(what: str, predicate, timeout: float = 60, interval: float = 1) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {timeout:.0f} s")
        time.sleep(interval)
