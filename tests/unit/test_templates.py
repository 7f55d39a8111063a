"""Golden files for every rendered file on each family, and validation of
what can be validated: JSON parses with upstream's fields; units pass
systemd-analyze verify."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from frakti_install import plans, session
from tests.unit.simhost import SimMachine, frakti

GOLDEN = Path(__file__).parent.parent / "golden" / "files"
SYSTEMS = {
    "debian": ("debian", "12"),
    "ubuntu-16.04": ("ubuntu", "16.04"),
    "centos-7": ("centos", "7"),
    "rocky-9": ("rocky", "9.3"),
}
RENDERED = [
    "etc/hyper/config",
    "etc/cni/net.d/10-mynet.conf",
    "etc/cni/net.d/99-loopback.conf",
    "etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
    "etc/modules-load.d/frakti-install.conf",
    "etc/sysctl.d/90-frakti-install.conf",
    "etc/systemd/system/frakti-routes-sync.service",
    "etc/systemd/system/frakti-routes-sync.timer",
]
UNIT_DIRS = {"debian": "lib/systemd/system", "rhel": "usr/lib/systemd/system"}
ENV_FILES = {"debian": "etc/default/kubelet", "rhel": "etc/sysconfig/kubelet"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    machines = {}
    for name, (os_id, version) in SYSTEMS.items():
        m = SimMachine(tmp_path_factory.mktemp(name), os_id, version)
        session.raise_for(session.execute(plans.allinone(frakti()), m.context(), dry_run=False))
        machines[name] = m
    return machines


def files_of(m: SimMachine):
    family = "debian" if m.os_id in ("debian", "ubuntu") else "rhel"
    paths = RENDERED + [
        f"{UNIT_DIRS[family]}/frakti.service",
        f"{UNIT_DIRS[family]}/kubelet.service",
        ENV_FILES[family],
    ]
    if m.os_id == "rocky":
        paths.append("etc/yum.repos.d/docker-ce.repo")
    return paths


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_rendered_files_match_golden(installed, name):
    m = installed[name]
    for rel in files_of(m):
        actual = m.p(rel).read_text()
        golden = GOLDEN / name / rel
        if os.environ.get("UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(actual)
        assert actual == golden.read_text(), f"{name}: {rel} differs from its golden file"


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_cni_configs_have_upstreams_fields(installed, name):
    m = installed[name]
    mynet = json.loads(m.p("etc/cni/net.d/10-mynet.conf").read_text())
    assert mynet["cniVersion"] == "0.3.0" and mynet["name"] == "mynet"
    assert (mynet["type"], mynet["bridge"], mynet["isGateway"], mynet["ipMasq"]) == (
        "bridge",
        "cni0",
        True,
        True,
    )
    assert mynet["ipam"] == {
        "type": "host-local",
        "subnet": "10.244.0.0/24",  # allocated by the cluster
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    assert json.loads(m.p("etc/cni/net.d/99-loopback.conf").read_text())["type"] == "loopback"


def test_frakti_unit_carries_upstreams_settings(installed):
    unit = installed["debian"].p("lib/systemd/system/frakti.service").read_text()
    for expected in (
        "--cgroup-driver=cgroupfs",
        "--listen=/var/run/frakti.sock",
        "--hyper-endpoint=127.0.0.1:22318",
        "--cni-plugin-dir=/usr/lib/cni",
        "MountFlags=shared",
        "TasksMax=8192",
        "LimitNOFILE=1048576",
        "Restart=on-abnormal",
        "WantedBy=multi-user.target",
    ):
        assert expected in unit
    assert (
        "--cni-plugin-dir=/opt/cni/bin"
        in installed["centos-7"].p("usr/lib/systemd/system/frakti.service").read_text()
    )


def test_kubelet_env_points_at_frakti(installed):
    env = installed["centos-7"].p("etc/sysconfig/kubelet").read_text()
    assert "--container-runtime=remote" in env
    assert "--container-runtime-endpoint=unix:///var/run/frakti.sock" in env
    assert "--cgroup-driver=cgroupfs" in env
    dropin = (
        installed["centos-7"].p("etc/systemd/system/kubelet.service.d/10-kubeadm.conf").read_text()
    )
    assert dropin.splitlines()[2] == "[Service]"
    assert "EnvironmentFile=-/etc/sysconfig/kubelet" in dropin


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", ["debian", "centos-7"])
def test_units_pass_systemd_analyze_verify(installed, name, tmp_path):
    m = installed[name]
    family = "debian" if name == "debian" else "rhel"
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    # verify resolves ExecStart binaries: point them at stand-in executables
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for binary in ("frakti", "kubelet", "frakti-install"):
        (bindir / binary).write_text("#!/bin/sh\n")
        (bindir / binary).chmod(0o755)
    for unit in ("frakti.service", "kubelet.service"):
        text = m.p(f"{UNIT_DIRS[family]}/{unit}").read_text().replace("/usr/bin/", f"{bindir}/")
        (unit_dir / unit).write_text(text)
    for unit in ("frakti-routes-sync.service", "frakti-routes-sync.timer"):
        text = m.p(f"etc/systemd/system/{unit}").read_text()
        (unit_dir / unit).write_text(text.replace("/usr/local/bin/", f"{bindir}/"))
    dropin_dir = unit_dir / "kubelet.service.d"
    dropin_dir.mkdir()
    (dropin_dir / "10-kubeadm.conf").write_text(
        m.p("etc/systemd/system/kubelet.service.d/10-kubeadm.conf")
        .read_text()
        .replace("/usr/bin/", f"{bindir}/")
    )
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            str(unit_dir / "frakti.service"),
            str(unit_dir / "kubelet.service"),
            str(unit_dir / "frakti-routes-sync.service"),
            str(unit_dir / "frakti-routes-sync.timer"),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit_dir}:"),
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if any(
            name in line
            for name in ("frakti.service", "kubelet.service", "10-kubeadm", "frakti-routes-sync")
        )
    ]
    assert result.returncode == 0 and not problems, result.stderr
