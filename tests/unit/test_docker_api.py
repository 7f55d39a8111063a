"""frakti v1.12.0's docker client speaks API 1.31 and only negotiates down
(kubernetes-retired/frakti@v1.12.0:vendor/github.com/docker/docker/api/common.go,
client/client.go; vendor/k8s.io/kubernetes/pkg/kubelet/dockershim/libdocker/
kube_docker_client.go); Docker 29 accepts API 1.44 and up (docker/docs#23773:
"API version: 1.52 (minimum version 1.44)")."""

from __future__ import annotations

import pytest

from frakti_install import plans, session
from frakti_install.errors import PreflightFailed, VerifyFailed
from tests.unit.simhost import SimMachine, frakti


def apply(m: SimMachine) -> session.Report:
    report = session.execute(plans.allinone(frakti()), m.context(), dry_run=False)
    session.raise_for(report)
    return report


@pytest.mark.parametrize("os_id,version", [("rocky", "9.3"), ("almalinux", "8.9")])
def test_el8_el9_install_docker_ce_below_29(machine, os_id, version):
    m = machine(os_id, version)
    apply(m)
    installs = [c for c in m.runner.calls if c[:3] == ["dnf", "install", "-y"]]
    docker = [c for c in installs if any(a.startswith("docker-ce") for a in c)]
    assert docker == [["dnf", "install", "-y", "docker-ce-3:2[0-8].*", "docker-ce-cli-1:2[0-8].*"]]
    assert m.state.packages["docker-ce"].startswith("28.")


def test_reset_removes_the_pinned_packages_by_name(machine):
    m = machine("rocky", "9.3")
    apply(m)
    reset = session.execute(plans.reset(frakti(), purge=True), m.context(), dry_run=False)
    session.raise_for(reset)
    assert "docker-ce" not in m.state.packages and "docker-ce-cli" not in m.state.packages


def test_installed_docker_29_is_refused_before_any_change(machine):
    m = machine("rocky", "9.3")
    m.state.packages["docker-ce"] = "29.0.4-1.el9"
    with pytest.raises(PreflightFailed) as caught:
        apply(m)
    text = str(caught.value)
    assert "[DockerAPI] docker-ce 29.0.4-1.el9 installed" in text
    assert "refuse API 1.31" in text and "frakti v1.12.0" in text
    assert m.runner.mutations == 0


def test_running_docker_with_a_higher_minimum_api_is_refused(machine):
    m = machine("debian", "12")
    m.runner._install(["docker.io"])  # starts docker.service, as the package does
    m.state.docker_min_api = "1.44"
    with pytest.raises(PreflightFailed, match=r"accepts API 1\.44 and up, not 1\.31"):
        apply(m)


def test_ubuntu_docker_io_that_refuses_1_31_fails_the_docker_step(machine):
    # Ubuntu backports new Docker majors to its LTS releases: the distro's
    # docker.io may be 29; the docker step's verify checks what docker accepts
    m = machine("ubuntu", "24.04")
    m.state.docker_min_api = "1.44"
    with pytest.raises(VerifyFailed) as caught:
        apply(m)
    assert "frakti cannot use this docker" in str(caught.value)
    assert "apt-mark hold docker.io" in (caught.value.hint or "")
