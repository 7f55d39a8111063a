"""Self-test of the end-to-end test bed and of the stand-ins, without frakti-install.

These must pass on their own: when a scenario of test_allinone.py fails, they
tell whether the test bed and the stand-ins are sound. They also show that the
stand-ins fail where the real programs fail, which is what lets the scenario
tests fail.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest
import testbed

pytestmark = pytest.mark.e2e

FETCH = """
import hashlib, sys, urllib.request
for url in sys.argv[1:]:
    print(hashlib.sha256(urllib.request.urlopen(url).read()).hexdigest(), url)
"""
DOWNLOAD = "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])"
FRAKTI_SOCKET = "/var/run/frakti.sock"


def test_boot_run_and_teardown(image: Path, run_dir: Path) -> None:
    machine = testbed.boot_machine(image, run_dir, "selftest-boot")
    try:
        assert machine.run(["systemctl", "is-system-running"], check=False).stdout.strip() in (
            "running",
            "degraded",
        )
        assert "VERSION_CODENAME=bookworm" in machine.run(["cat", "/etc/os-release"]).stdout
        assert machine.run(["hostname"]).stdout.strip() == testbed.HOSTNAME
        links = machine.run(["ip", "-o", "link"]).stdout
        assert {"lo", "eth0@eth0-peer", "eth0-peer@eth0"} <= {
            line.split(": ")[1] for line in links.splitlines()
        }
        assert "default via 10.0.2.2 dev eth0" in machine.run(["ip", "route"]).stdout
        # No way out: the Debian archive cannot be reached from inside.
        archive = urllib.parse.urlsplit(testbed.debian_mirror()).hostname
        probe = machine.run(
            ["python3", "-c", f"import socket; socket.create_connection(({archive!r}, 80), 3)"],
            check=False,
        )
        assert probe.returncode != 0
        # The packages the installer needs are in apt's cache, not installed.
        status = machine.run(["dpkg-query", "-W", "-f=${Status}", "docker.io"], check=False).stdout
        assert "install ok installed" not in status
        debs = machine.run(["sh", "-c", "ls /var/cache/apt/archives/*.deb"]).stdout
        for pkg in (
            "docker.io_",
            "qemu-system-x86_",
            "containernetworking-plugins_",
            "socat_",
            "conntrack_",
        ):
            assert pkg in debs
        # Files in and out.
        machine.write("/root/secret", b"\x00binary\xff", 0o600)
        assert machine.read("/root/secret") == b"\x00binary\xff"
        assert machine.path("/root/secret").stat().st_mode & 0o777 == 0o600
        machine.write("/run/in-tmpfs", "through the container's own mounts")
        assert machine.read("/run/in-tmpfs") == b"through the container's own mounts"
        with pytest.raises(FileNotFoundError):
            machine.read("/nonexistent")
        with pytest.raises(testbed.TestbedError):
            machine.run(["false"])
        assert machine.run(["sh", "-c", "echo $FOO"], env={"FOO": "bar"}).stdout == "bar\n"
    finally:
        machine.stop()
    assert machine.proc is not None and machine.proc.poll() is not None
    assert not machine.dir.exists()
    assert not testbed._mounts_under(machine.dir)


@pytest.fixture(scope="module")
def standin_host(request: pytest.FixtureRequest, boot_host) -> testbed.Machine:  # type: ignore[no-untyped-def]
    return boot_host(request, "standins")


def install_from_mirror(machine: testbed.Machine, mirror: dict, name: str, dest: str) -> None:
    machine.run(["python3", "-c", DOWNLOAD, f"{mirror['url']}/{mirror['paths'][name]}", dest])
    machine.run(["chmod", "0755", dest])


def test_mirror_serves_the_standins(standin_host: testbed.Machine, mirror: dict) -> None:
    paths, sums = mirror["paths"], mirror["sha256"]
    urls = [f"{mirror['url']}/{p}" for p in paths.values()]
    got = dict(
        line.split()[::-1]
        for line in standin_host.run(["python3", "-c", FETCH, *urls]).stdout.splitlines()
    )
    for name, path in paths.items():
        assert got[f"{mirror['url']}/{path}"] == sums[name], name
    # Beside the binaries, what dl.k8s.io publishes for v1.12.10: .sha512
    # (kubernetes/release#630), and no .sha256 before v1.16.0 (kubernetes/kubernetes#68555).
    check_sums = (
        "import hashlib, sys, urllib.error, urllib.request\n"
        "url = sys.argv[1]\n"
        "binary = urllib.request.urlopen(url).read()\n"
        "published = urllib.request.urlopen(url + '.sha512').read().decode().split()[0]\n"
        "print(published == hashlib.sha512(binary).hexdigest())\n"
        "try:\n"
        "    urllib.request.urlopen(url + '.sha256')\n"
        "    print('sha256 served')\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code)\n"
    )
    for name in ("kubeadm", "kubelet", "kubectl"):
        url = f"{mirror['url']}/{paths[name]}"
        answer = standin_host.run(["python3", "-c", check_sums, url]).stdout.split()
        assert answer == ["True", "404"], (name, answer)
    missing = standin_host.run(
        ["python3", "-c", f"import urllib.request; urllib.request.urlopen('{mirror['url']}/nope')"],
        check=False,
    )
    assert missing.returncode != 0 and "404" in missing.stderr


def test_hyperd_package(standin_host: testbed.Machine, mirror: dict) -> None:
    m = standin_host
    for name in ("hypercontainer", "hyperstart"):
        m.run(
            [
                "python3",
                "-c",
                DOWNLOAD,
                f"{mirror['url']}/{mirror['paths'][name]}",
                f"/root/{name}.deb",
            ]
        )
    m.run(["dpkg", "-i", "/root/hypercontainer.deb", "/root/hyperstart.deb"])
    for name in ("hypercontainer", "hyperstart"):
        assert m.run(["dpkg-query", "-W", "-f=${Status}", name]).stdout == "install ok installed"
    assert (
        "/etc/hyper/config"
        in m.run(["dpkg-query", "-W", "-f=${Conffiles}", "hypercontainer"]).stdout
    )
    assert (
        "ExecStart=/usr/bin/hyperd --log_dir=/var/log/hyper"
        in m.read("/lib/systemd/system/hyperd.service").decode()
    )
    assert "gRPCHost=" not in [
        line[:9] for line in m.read("/etc/hyper/config").decode().splitlines()
    ]
    # Like the real package: installed, neither enabled nor started.
    assert m.run(["systemctl", "is-enabled", "hyperd"], check=False).stdout.strip() == "disabled"
    assert not m.is_active("hyperd")
    # Started without qemu, hyperd fails like the real one.
    m.run(["systemctl", "start", "hyperd"])
    m.wait_for(["sh", "-c", "! systemctl is-active --quiet hyperd"], timeout=15)
    assert "qemu-system-x86_64" in m.run(["journalctl", "-u", "hyperd", "--no-pager"]).stdout
    # qemu from apt's cache, offline, as the installer will do it.
    m.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "qemu-system-x86"],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=600,
    )
    m.run(["systemctl", "restart", "hyperd"])
    m.wait_for(["hyperctl", "version"], timeout=15)
    assert m.is_active("hyperd")
    assert not m.tcp_open(22318), "hyperd must not serve gRPC without gRPCHost"
    m.write("/etc/hyper/config", m.read("/etc/hyper/config") + b"gRPCHost=127.0.0.1:22318\n")
    m.run(["systemctl", "restart", "hyperd"])
    m.wait_tcp(22318, timeout=15)


def test_frakti_and_crictl(standin_host: testbed.Machine, mirror: dict) -> None:
    m = standin_host
    install_from_mirror(m, mirror, "frakti", "/usr/local/bin/frakti")
    m.run(
        [
            "python3",
            "-c",
            DOWNLOAD,
            f"{mirror['url']}/{mirror['paths']['crictl']}",
            "/root/crictl.tgz",
        ]
    )
    m.run(["tar", "-xzf", "/root/crictl.tgz", "-C", "/usr/local/bin"])
    assert m.run(["crictl", "--version"]).stdout.strip() == "crictl version v1.12.0"
    bad = m.run(["frakti", "--enable-alpha-features"], check=False)
    assert bad.returncode == 2 and "unknown flag: --enable-alpha-features" in bad.stderr
    # Privileged runtime on (the default) needs docker, which is not installed here.
    nodocker = m.run(["frakti", "--listen=/run/x.sock"], check=False, timeout=30)
    assert nodocker.returncode != 0 and "failed to get info from docker" in nodocker.stderr
    assert m.run(["test", "-S", "/run/x.sock"], check=False).returncode != 0
    nohyperd = m.run(
        ["frakti", "--hyper-endpoint=127.0.0.1:22399", "--enable-privileged-runtime=false"],
        check=False,
        timeout=30,
    )
    assert nohyperd.returncode != 0 and "Initialize hyper runtime failed" in nohyperd.stderr
    m.run(
        [
            "systemd-run",
            "--unit=frakti",
            "--quiet",
            "/usr/local/bin/frakti",
            "--v=3",
            "--log-dir=/var/log/frakti",
            "--logtostderr=false",
            "--cgroup-driver=cgroupfs",
            f"--listen={FRAKTI_SOCKET}",
            "--hyper-endpoint=127.0.0.1:22318",
            "--enable-privileged-runtime=false",
        ]
    )
    m.wait_for(["crictl", "-r", FRAKTI_SOCKET, "info"], timeout=15)
    info = json.loads(m.run(["crictl", "-r", FRAKTI_SOCKET, "info"]).stdout)
    conditions = {c["type"]: c for c in info["status"]["conditions"]}
    assert conditions["RuntimeReady"]["status"] is True
    assert conditions["NetworkReady"]["status"] is False  # no CNI config yet
    assert m.tcp_open(22521, "10.0.2.15")  # streaming server on the host's address
    refused = m.run(["crictl", "-r", "/var/run/nothing.sock", "info"], check=False)
    assert refused.returncode == 1 and "context deadline exceeded" in refused.stderr


KUBELET_UNIT = """[Unit]
Description=kubelet (hand-written for the stand-in self-test)
[Service]
ExecStart=/usr/local/bin/kubelet
Restart=always
RestartSec=1
[Install]
WantedBy=multi-user.target
"""
# kubeadm 1.12's drop-in, as its kubelet package ships it (binary path aside)
KUBELET_DROPIN = "\n".join(
    [
        "[Service]",
        'Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/'
        'bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"',
        'Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"',
        "EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env",
        "EnvironmentFile=-/etc/default/kubelet",
        "ExecStart=",
        "ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS "
        "$KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS",
        "",
    ]
)
CNI = json.dumps(
    {
        "cniVersion": "0.3.0",
        "name": "mynet",
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": True,
        "ipMasq": True,
        "ipam": {"type": "host-local", "subnet": "10.244.1.0/24", "routes": [{"dst": "0.0.0.0/0"}]},
    }
)
ADMIN = ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"]


def nodes(m: testbed.Machine) -> list[dict]:
    return json.loads(m.run([*ADMIN, "get", "nodes", "-o", "json"]).stdout)["items"]


def test_kubelet_refuses_to_start_without_its_config(
    standin_host: testbed.Machine, mirror: dict
) -> None:
    m = standin_host
    install_from_mirror(m, mirror, "kubelet", "/usr/local/bin/kubelet")
    assert m.run(["kubelet", "--version"]).stdout.strip() == "Kubernetes v1.12.10"
    result = m.run(
        [
            "kubelet",
            "--config=/var/lib/kubelet/config.yaml",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--container-runtime=remote",
            f"--container-runtime-endpoint={FRAKTI_SOCKET}",
        ],
        check=False,
        timeout=30,
    )
    assert result.returncode != 0
    assert "failed to load Kubelet config file /var/lib/kubelet/config.yaml" in result.stderr
    # With a config, a cgroup driver other than frakti's is refused too.
    m.write("/root/kubelet-config.yaml", "kind: KubeletConfiguration\ncgroupDriver: cgroupfs\n")
    mismatch = m.run(
        [
            "kubelet",
            "--config=/root/kubelet-config.yaml",
            "--cgroup-driver=systemd",
            "--container-runtime=remote",
            f"--container-runtime-endpoint={FRAKTI_SOCKET}",
        ],
        check=False,
        timeout=30,
    )
    assert mismatch.returncode != 0
    assert (
        'misconfiguration: kubelet cgroup driver: "systemd" is different from runtime '
        'cgroup driver: "cgroupfs"'
    ) in mismatch.stderr


def test_standin_cluster_lifecycle(standin_host: testbed.Machine, mirror: dict) -> None:
    """A host prepared by hand (not by the installer) gets a Ready node, and loses it on reset."""
    m = standin_host
    for name in ("kubeadm", "kubectl"):
        install_from_mirror(m, mirror, name, f"/usr/local/bin/{name}")
    nocluster = m.run([*ADMIN, "get", "nodes"], check=False)
    assert nocluster.returncode == 1 and "no such file or directory" in nocluster.stderr
    refused = m.run(["kubectl", "--server=https://127.0.0.1:6443", "get", "nodes"], check=False)
    assert "The connection to the server 127.0.0.1:6443 was refused" in refused.stderr
    # localhost:8080 is the stand-in mirror here: it answers, but is no API server.
    wrong = m.run(["kubectl", "get", "nodes"], check=False)
    assert wrong.returncode == 1 and "the server doesn't have a resource type" in wrong.stderr
    init = [
        "kubeadm",
        "init",
        "--pod-network-cidr=10.244.0.0/16",
        "--kubernetes-version=v1.12.10",
        f"--cri-socket={FRAKTI_SOCKET}",
    ]
    # Not prepared: ip_forward is 0 and the kubelet unit is missing.
    early = m.run(init, check=False)
    assert early.returncode == 2, early.stderr
    assert "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]" in early.stderr
    assert "[WARNING Service-Kubelet]" in early.stderr
    assert not m.exists("/etc/kubernetes/manifests/kube-apiserver.yaml")
    m.write("/etc/systemd/system/kubelet.service", KUBELET_UNIT)
    m.write("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", KUBELET_DROPIN)
    m.run(["systemctl", "daemon-reload"])
    m.run(["systemctl", "enable", "--now", "kubelet"])
    m.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    ok = m.run(init, timeout=120, env={"STANDIN_KUBEADM_TIMEOUT": "60"})
    assert "Your Kubernetes master has initialized successfully!" in ok.stdout
    assert "kubeadm join 10.0.2.15:6443 --token" in ok.stdout
    log = [
        json.loads(line)
        for line in m.read("/var/log/standin-kubeadm-init.log").decode().splitlines()
    ]
    assert [e["pod_network_cidr"] for e in log] == [
        "10.244.0.0/16",
        "10.244.0.0/16",
    ]  # the refused one too
    assert (
        "--service-cluster-ip-range=10.96.0.0/12"
        in m.read("/etc/kubernetes/manifests/kube-apiserver.yaml").decode()
    )
    assert m.path("/etc/kubernetes/admin.conf").stat().st_mode & 0o777 == 0o600
    assert m.read("/var/lib/kubelet/kubeadm-flags.env").decode() == (
        "KUBELET_KUBEADM_ARGS=--container-runtime=remote "
        f"--container-runtime-endpoint={FRAKTI_SOCKET}\n"
    )
    [node] = nodes(m)
    assert node["metadata"]["name"] == testbed.HOSTNAME
    assert node["spec"]["podCIDR"] == "10.244.0.0/24"
    assert {"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"} in node["spec"][
        "taints"
    ]
    ready = node["status"]["conditions"][0]
    assert ready["status"] == "False" and "cni config uninitialized" in ready["message"]
    m.write("/etc/cni/net.d/10-mynet.conf", CNI)
    m.wait_for(["sh", "-c", " ".join(ADMIN) + " get nodes | grep -w Ready"], timeout=15)
    m.run(
        [*ADMIN, "taint", "nodes", testbed.HOSTNAME, "node-role.kubernetes.io/master:NoSchedule-"]
    )
    assert "taints" not in nodes(m)[0]["spec"]
    again = m.run(
        [*ADMIN, "taint", "nodes", testbed.HOSTNAME, "node-role.kubernetes.io/master:NoSchedule-"],
        check=False,
    )
    assert (
        again.returncode == 1
        and 'taint "node-role.kubernetes.io/master:NoSchedule" not found' in again.stderr
    )
    annotate = [*ADMIN, "annotate", "node", testbed.HOSTNAME, "example.org/subnet=10.244.1.0/24"]
    m.run(annotate)
    again = m.run(annotate, check=False)
    assert again.returncode == 1 and "--overwrite is false" in again.stderr
    m.run([*annotate, "--overwrite"])
    assert nodes(m)[0]["metadata"]["annotations"] == {"example.org/subnet": "10.244.1.0/24"}
    join = m.run(["kubeadm", "token", "create", "--print-join-command"]).stdout
    assert join.startswith("kubeadm join 10.0.2.15:6443 --token ")
    # A second init without reset fails preflight like the real one.
    second = m.run(init, check=False)
    assert second.returncode == 2
    assert "[ERROR Port-6443]: Port 6443 is in use" in second.stderr
    assert "[ERROR DirAvailable--etc-kubernetes-manifests]" in second.stderr
    # reset wipes the control plane, the kubelet config and the CNI config (frakti issue #154).
    m.run(["kubeadm", "reset", "-f"])
    assert not m.is_active("kubelet")
    for gone in (
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "/etc/kubernetes/pki/ca.crt",
        "/var/lib/kubelet/config.yaml",
        "/etc/cni/net.d/10-mynet.conf",
        "/var/lib/standin-k8s/cluster.json",
    ):
        assert not m.exists(gone), gone
    # Without its config the kubelet now crash-loops (Restart=always), as before init.
    m.run(["systemctl", "start", "kubelet"])
    m.wait_for(
        [
            "sh",
            "-c",
            "journalctl -u kubelet --no-pager | grep -q 'failed to load Kubelet config file'",
        ],
        timeout=15,
    )
    assert not m.tcp_open(10250)


def test_docker_from_cache_and_frakti_driver_check(standin_host: testbed.Machine) -> None:
    """Real dockerd from apt's cache; frakti refuses a cgroup driver other than docker's."""
    m = standin_host
    m.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker.io"],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=600,
    )
    m.wait_for(["docker", "info"], timeout=60)
    info = m.run(["docker", "info", "--format", "{{.CgroupDriver}} {{.Driver}}"]).stdout.split()
    assert info == ["cgroupfs", "overlay2"]
    second = ["frakti", "--listen=/run/frakti2.sock", "--streaming-server-port=22531"]
    mismatch = m.run([*second, "--cgroup-driver=systemd"], check=False, timeout=30)
    assert mismatch.returncode != 0
    assert (
        'misconfiguration: frakti cgroup driver: "systemd" is different from docker cgroup driver: '
        '"cgroupfs"'
    ) in mismatch.stderr
    # The hostile scenario's precondition: daemon.json really switches docker to systemd.
    m.write("/etc/docker/daemon.json", '{"exec-opts": ["native.cgroupdriver=systemd"]}\n')
    m.run(["systemctl", "restart", "docker"], timeout=120)
    m.wait_for(["docker", "info"], timeout=60)
    assert m.run(["docker", "info", "--format", "{{.CgroupDriver}}"]).stdout.strip() == "systemd"
