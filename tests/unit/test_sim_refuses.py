"""The simulated host refuses what the real programs refuse (tests/unit/fixtures/
packages, kernel, probes): a misspelled package, sysctl key or module, an unknown
kubectl verb or resource, so that a wrong name in the installer fails a test."""

from __future__ import annotations

import pytest

from frakti_install import plans, session
from frakti_install.errors import FraktiInstallError
from frakti_install.steps import kernel
from tests.unit.simhost import SimMachine, frakti, kernel_modules, sysctl_keys


def apply(m: SimMachine) -> session.Report:
    report = session.execute(plans.allinone(frakti()), m.context(), dry_run=False)
    session.raise_for(report)
    return report


def failure(m: SimMachine) -> str:
    """What the failed install said: its error and the failed command's output."""
    with pytest.raises(FraktiInstallError) as caught:
        apply(m)
    result = getattr(caught.value, "result", None)
    return str(caught.value) + (result.stderr if result is not None else "")


def last(m: SimMachine, program: str):  # the last command line of that program
    return next(argv for argv in reversed(m.runner.calls) if argv[0] == program)


# --- packages ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "os_id,version,manager,message",
    [
        # apt-cache policy shows no candidate: the installer stops before apt-get
        ("debian", "12", "apt-cache", "the package repositories offer no conntrak"),
        ("debian", "11", "apt-cache", "the package repositories offer no conntrak"),
        ("ubuntu", "22.04", "apt-cache", "the package repositories offer no conntrak"),
        ("rocky", "9.3", "dnf", "Error: Unable to find a match: conntrak"),
    ],
)
def test_a_misspelled_package_fails_the_install(
    machine, monkeypatch, os_id, version, manager, message
) -> None:
    from frakti_install import profiles

    real = profiles.Profile.__init__

    def misspelled(self, *args, **kwargs):  # every profile asks for "conntrak"
        real(self, *args, **kwargs)
        self.packages["kube_deps"] = [
            "conntrak" if n.startswith("conntrack") else n for n in self.packages["kube_deps"]
        ]

    monkeypatch.setattr(profiles.Profile, "__init__", misspelled)
    m = machine(os_id, version)
    assert message in failure(m)
    assert "conntrak" in last(m, manager)
    assert "conntrak" not in m.state.packages and "socat" not in m.state.packages


def test_apt_refuses_unknown_names_and_installs_nothing(machine) -> None:
    m = machine("debian", "12")
    result = m.runner(
        ["apt-get", "install", "-y", "socat", "ebtable", "docker-io"], None, None, None
    )
    assert result.returncode == 100
    assert result.stderr.splitlines() == [
        "E: Unable to locate package ebtable",
        "E: Unable to locate package docker-io",
    ]
    assert m.state.packages == {}
    policy = m.runner(["apt-cache", "policy", "socat", "ebtable"], None, None, None)
    assert policy.stdout.startswith("socat:\n") and "ebtable" not in policy.stdout


def test_packages_of_one_release_only(machine) -> None:
    # containerd.io is Docker's, not Debian's; kubelet needs pkgs.k8s.io's repository
    m = machine("debian", "12")
    for name in ("containerd.io", "kubelet"):
        assert m.runner(["apt-get", "install", "-y", name], None, None, None).returncode == 100
    assert m.runner(["apt-get", "install", "-y", "containerd"], None, None, None).ok


def test_yum_skips_unknown_names_dnf_refuses(machine) -> None:
    centos = machine("centos", "7")
    before = set(centos.state.packages)  # what the machine came with (qemu-hyper on EL)
    result = centos.runner(["yum", "install", "-y", "socat", "conntrack"], None, None, None)
    assert result.ok and "No package conntrack available." in result.stdout
    assert set(centos.state.packages) - before == {"socat"}
    only_unknown = centos.runner(["yum", "install", "-y", "docker-ce"], None, None, None)
    assert only_unknown.returncode == 1 and "Nothing to do" in only_unknown.stderr
    rocky = machine("rocky", "9.3")
    before = dict(rocky.state.packages)
    refused = rocky.runner(["dnf", "install", "-y", "socat", "docker"], None, None, None)
    assert refused.returncode == 1 and "Unable to find a match: docker" in refused.stderr
    assert rocky.state.packages == before


# --- sysctl -----------------------------------------------------------------------
def test_a_misspelled_sysctl_key_fails_the_kernel_step(machine, monkeypatch) -> None:
    monkeypatch.setattr(kernel, "SYSCTLS", (*kernel.SYSCTLS[:2], ("net.ipv4.ip_forwrd", "1")))
    m = machine("debian", "12")
    said = failure(m)
    assert last(m, "sysctl")[:3] == ["sysctl", "-q", "-p"]
    assert "sysctl: cannot stat /proc/sys/net/ipv4/ip_forwrd: No such file or directory" in said
    assert not m.p("/proc/sys/net/ipv4/ip_forwrd").exists()


def test_sysctl_keys_are_a_real_kernels(machine) -> None:
    assert "net.ipv4.ip_forward" in sysctl_keys() and "net.ipv4.ip_forwrd" not in sysctl_keys()
    m = machine("debian", "12")
    m.runner.write("/etc/sysctl.d/x.conf", "net.bridge.bridge-nf-call-iptables = 1\n")
    before = m.runner(["sysctl", "-q", "-p", "/etc/sysctl.d/x.conf"], None, None, None)
    assert before.returncode == 1  # net.bridge.* exists once br_netfilter is loaded
    assert m.runner(["modprobe", "br_netfilter"], None, None, None).ok
    assert m.runner(["sysctl", "-q", "-p", "/etc/sysctl.d/x.conf"], None, None, None).ok
    assert m.p("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text() == "1\n"
    missing = m.runner(["sysctl", "-q", "-p", "/etc/sysctl.d/none.conf"], None, None, None)
    assert (
        missing.stderr
        == 'sysctl: cannot open "/etc/sysctl.d/none.conf": No such file or directory\n'
    )


# --- modules ----------------------------------------------------------------------
def test_a_misspelled_module_fails_the_kernel_step(machine, monkeypatch) -> None:
    monkeypatch.setattr(kernel, "MODULES", ("overlay", "br_netfiltr"))
    m = machine("debian", "12")
    said = failure(m)
    assert last(m, "modprobe") == ["modprobe", "br_netfiltr"]
    assert "modprobe: FATAL: Module br_netfiltr not found in directory /lib/modules/" in said


def test_modules_are_a_real_kernels() -> None:
    modules = kernel_modules()
    assert {"overlay", "br_netfilter", "vhost_vsock", "vhost_net"} <= set(modules)
    assert modules["unix"] is True and modules["br_netfilter"] is False  # built in / loadable
    assert "br_netfiltr" not in modules


# --- kubectl ----------------------------------------------------------------------
@pytest.fixture
def cluster(machine) -> SimMachine:
    m = machine("debian", "12")
    apply(m)
    return m


def kubectl(m: SimMachine, *words: str):
    return m.runner(
        ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", *words], None, None, None
    )


def test_kubectl_refuses_unknown_verbs_and_resources(cluster) -> None:
    verb = kubectl(cluster, "gte", "nodes")
    assert (verb.returncode, verb.stderr) == (1, 'error: unknown command "gte" for "kubectl"\n')
    kind = kubectl(cluster, "get", "nodez", "-o", "json")
    assert kind.returncode == 1
    assert kind.stderr == 'error: the server doesn\'t have a resource type "nodez"\n'
    name = kubectl(cluster, "get", "node", "node-2", "-o", "json")
    assert 'nodes "node-2" not found' in name.stderr


def test_kubectl_answers_by_verb_and_resource(cluster) -> None:
    import json

    listed = json.loads(kubectl(cluster, "get", "nodes", "-o", "json").stdout)
    assert [n["metadata"]["name"] for n in listed["items"]] == ["node-1"]
    one = json.loads(kubectl(cluster, "get", "node", "node-1", "-o", "json").stdout)
    assert one["metadata"]["name"] == "node-1"  # one object, not a list
    cidr = kubectl(cluster, "get", "node", "node-1", "-o", "jsonpath={.spec.podCIDR}")
    assert cidr.stdout == one["spec"]["podCIDR"]
    assert json.loads(kubectl(cluster, "get", "pods", "-o", "json").stdout)["items"] == []
    assert kubectl(cluster, "wait", "--for=condition=Ready", "node/node-1").ok
    assert kubectl(cluster, "label", "node", "node-1", "a=b").ok
    clash = kubectl(cluster, "label", "node", "node-1", "a=c")
    assert clash.returncode == 1 and "--overwrite is false" in clash.stderr
    assert not kubectl(cluster, "taint", "nodes", "node-1", "nope:NoSchedule-").ok


# --- systemctl show ---------------------------------------------------------------
def test_systemctl_show_answers_as_systemd(machine) -> None:
    from frakti_install.facts import Facts

    m = machine("debian", "12")
    m.runner.write("/lib/systemd/system/ssh.service", "[Service]\n")
    m.runner.unit_aliases["sshd.service"] = "ssh.service"
    shown = m.runner(
        ["systemctl", "show", "-p", "MainPID,Id,LoadState", "sshd", "nope.service"],
        None,
        None,
        None,
    ).stdout
    # systemd's property order, not -p's; the alias answers with the unit's Id
    assert shown == (
        "Id=ssh.service\nLoadState=loaded\nMainPID=0\n\n"
        "Id=nope.service\nLoadState=not-found\nMainPID=0\n"
    )
    facts = Facts(m.context().host)
    units = facts.units(["sshd.service", "nope.service"])
    assert units["sshd.service"].exists and not units["nope.service"].exists
