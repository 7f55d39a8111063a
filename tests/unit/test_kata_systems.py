"""Today's kata systems on simulated hosts: Debian 13 (containerd 1.7, config
version 2), Ubuntu 26.04 (containerd 2.2, config version 3) and Rocky, Alma
and RHEL 10 (no runc and no CNI plugins in the distro: Docker's containerd.io
and pkgs.k8s.io's kubernetes-cni bring them), and the refusal of a cgroup v1
host for the Kubernetes releases whose kubelet refuses one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from frakti_install import datafiles, plans, session
from frakti_install.engine import Status
from frakti_install.errors import PreflightFailed
from frakti_install.steps.preflight import Preflight
from tests.unit.simhost import kata
from tests.unit.simkata import KataSimMachine, tomllib
from tests.unit.test_kata_sim import apply

NEW_SYSTEMS = [
    ("debian", "13"),
    ("ubuntu", "26.04"),
    ("rocky", "10.0"),
    ("almalinux", "10.0"),
    ("rhel", "10.0"),
]
EL10 = [s for s in NEW_SYSTEMS if s[0] in ("rocky", "almalinux", "rhel")]
DROP_IN = "/etc/containerd/conf.d/90-frakti-install.toml"
RUNTIMES = {
    2: ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"),
    3: ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"),
}


@pytest.fixture
def machine(tmp_path: Path) -> Callable[..., KataSimMachine]:
    def make(os_id: str = "debian", version: str = "13", **kwargs: Any) -> KataSimMachine:
        return KataSimMachine(tmp_path / f"{os_id}-{version}", os_id, version, **kwargs)

    return make



def dig(table: Dict[str, Any], path: tuple) -> Any:
    for key in path:
        table = table[key]
    return table


def installed_names(m: KataSimMachine) -> set:
    """Every package name an install command asked for."""
    names = set()
    for call in m.runner.calls:
        if call[0] in ("apt-get", "dnf", "yum") and "install" in call:
            names |= {a.split("=")[0] for a in call[call.index("install") + 1 :]}
    return names


# --- each new system: a fresh install, then a re-run that changes nothing -------
@pytest.mark.parametrize(
    "os_id,version,release,config_version",
    [
        ("debian", "13", (1, 7, 24), 2),
        ("ubuntu", "26.04", (2, 2, 2), 3),
        ("rocky", "10.0", (2, 1, 5), 3),
        ("almalinux", "10.0", (2, 1, 5), 3),
        ("rhel", "10.0", (2, 1, 5), 3),
    ],
    ids=[f"{i}-{v}" for i, v in NEW_SYSTEMS],
)
def test_fresh_install_puts_kata_where_that_containerd_reads_it_and_reruns_clean(
    machine, os_id, version, release, config_version
):
    m = machine(os_id, version)
    assert m.kata.containerd_release == release
    first = apply(m)
    assert any(r.status is Status.CHANGE for r in first.steps)
    drop_in = tomllib.loads(m.p(DROP_IN).read_text())
    assert drop_in["version"] == config_version
    # the running containerd (as it last started) has the kata handler where
    # its CRI plugin reads runtimes, and runc with the systemd cgroup driver
    runtimes = dig(m.kata.containerd_loaded, RUNTIMES[min(config_version, 3)])
    assert runtimes["kata"]["runtime_type"] == "io.containerd.kata.v2"
    assert runtimes["runc"]["options"]["SystemdCgroup"] is True
    before, mutations = m.snapshot(), m.runner.mutations

    second = apply(m)

    assert all(r.status in (Status.OK, Status.SKIP) for r in second.steps)
    assert m.runner.mutations == mutations and m.snapshot() == before


@pytest.mark.parametrize("os_id,version", EL10, ids=[f"{i}-{v}" for i, v in EL10])
def test_el10_takes_runc_and_cni_plugins_from_docker_and_pkgs_k8s_io(machine, os_id, version):
    m = machine(os_id, version)
    apply(m)
    asked = installed_names(m)
    assert "containerd.io" in asked and "kubernetes-cni" in asked
    assert not asked & {"runc", "containernetworking-plugins", "containerd"}, asked
    assert m.p("/etc/yum.repos.d/docker-ce.repo").exists()
    assert m.p("/opt/cni/bin/bridge").exists()


def test_a_package_name_el10_does_not_have_is_refused_by_the_sim(machine):
    """The simulated EL10 repositories do not offer what RHEL 10 removed."""
    m = machine("rocky", "10.0")
    for name in ("containernetworking-plugins", "runc"):
        result = m.runner(["dnf", "install", "-y", name], None, None, None)
        assert result.returncode != 0 and name not in m.state.packages, name


# --- cgroup v1 -------------------------------------------------------------------
def test_cgroup_v1_host_is_refused_for_the_default_release_with_reason_and_fix(machine):
    m = machine("debian", "13", cgroup=1)
    with pytest.raises(PreflightFailed) as info:
        Preflight().check(m.context(m.settings()))
    message = str(info.value)
    assert "[CgroupV2] the host uses cgroup v1; kubelet v1.35.9 refuses to start on it" in message
    assert "failCgroupV1" in message
    assert "systemd.unified_cgroup_hierarchy=1" in message
    assert "--kubernetes-version v1.34" in message
    assert m.runner.mutations == 0


def test_cgroup_v1_host_stops_the_install_before_any_change(machine):
    m = machine("ubuntu", "26.04", cgroup=1)
    report = session.execute(plans.allinone(kata()), m.context(m.settings()), dry_run=False)
    assert report.steps[0].name == "preflight" and report.steps[0].status is Status.FAIL
    assert m.runner.mutations == 0 and not m.p("/etc/containerd").exists()


def test_cgroup_v1_host_passes_with_a_release_whose_kubelet_still_runs_there(machine):
    m = machine("debian", "13", cgroup=1)
    check = Preflight().check(
        m.context(m.settings(kubernetes_version="v1.34", allow_eol=True))
    )
    assert check.reason == "17 checks passed"


@pytest.mark.parametrize(
    "minor",
    [row["minor"] for row in datafiles.load("kata")["kubernetes"]["releases"]],
)
def test_cgroup_v1_is_refused_from_kubernetes_1_35_on(machine, minor):
    """KEP-5573: failCgroupV1 defaults to true from 1.35 (kubernetes#134298)."""
    m = machine("debian", "13", cgroup=1)
    context = m.context(m.settings(kubernetes_version=minor, allow_eol=True))
    refused = tuple(int(p) for p in minor.lstrip("v").split(".")) >= (1, 35)
    if refused:
        with pytest.raises(PreflightFailed, match=r"\[CgroupV2\]"):
            Preflight().check(context)
    else:
        Preflight().check(context)


def test_cgroup_v2_host_passes_for_every_release(machine):
    m = machine("rocky", "10.0", cgroup=2)
    Preflight().check(m.context(m.settings(kubernetes_version="v1.37")))


# --- containerd 1.x and Kubernetes 1.36+ -------------------------------------------
def test_kubernetes_1_36_on_debian_12s_containerd_1_6_is_refused_before_any_change(machine):
    """1.35 is the last minor that supports containerd 1.x (docs/upstream-facts.md);
    apt's candidate (the captured Debian 12 list: 1.6.20) says what would run."""
    m = machine("debian", "12")
    with pytest.raises(PreflightFailed) as info:
        Preflight().check(m.context(m.settings(kubernetes_version="v1.36")))
    message = " ".join(str(info.value).split())
    assert (
        "[ContainerdVersion] containerd 1.6 (package containerd 1.6.20~ds1-1+deb12u3) is older "
        "than Kubernetes v1.36.4 supports: it needs containerd 2.0 or later" in message
    )
    assert "--kubernetes-version v1.35" in message
    assert m.runner.mutations == 0


def test_an_installed_containerd_1_7_is_judged_by_its_version(machine):
    m = machine("debian", "13")
    apply(m)  # v1.35 installs, with Debian 13's containerd 1.7.24
    refused = r"\[ContainerdVersion\] containerd 1\.7 \(installed\)"
    with pytest.raises(PreflightFailed, match=refused):
        Preflight().check(m.context(m.settings(kubernetes_version="v1.37")))


@pytest.mark.parametrize("os_id,version", [("ubuntu", "26.04"), ("rocky", "10.0")])
def test_kubernetes_1_36_installs_where_containerd_is_2_x(machine, os_id, version):
    """Ubuntu 26.04's containerd 2.2 (apt's candidate); on EL dnf gives no cheap
    candidate, and Docker's containerd.io 2.1 is judged once it is installed."""
    m = machine(os_id, version)
    apply(m, kubernetes_version="v1.36")
    assert m.kata.containerd_release >= (2, 0, 0)


def test_without_a_candidate_the_containerd_step_refuses_a_1_x_before_writing(machine):
    """Where preflight could not tell (preflight ignored here, as a dnf host
    without a candidate would be), the containerd step refuses containerd 1.x
    before it writes its configuration or Kubernetes is installed."""
    m = machine("debian", "12")
    settings = m.settings(kubernetes_version="v1.36", ignore_preflight_errors=["ContainerdVersion"])
    report = session.execute(plans.allinone(kata()), m.context(settings), dry_run=False)
    failed = [step for step in report.steps if step.status is Status.FAIL]
    assert [step.name for step in failed] == ["containerd"], [s.name for s in report.steps]
    assert "older than Kubernetes v1.36.4 supports" in failed[0].detail
    assert not m.p(DROP_IN).exists()
    assert not {"kubelet", "kubeadm"} & set(m.state.packages)
