"""The whole allinone plan against a simulated host of every supported system:
fresh plan (golden), apply, no-op re-run, crash and resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List

import pytest

from frakti_install import plans, session
from frakti_install.engine import Status, StepResult
from frakti_install.errors import ConfigError
from tests.unit.simhost import SUPPORTED, TOKEN_FILE, Killed, SimMachine, frakti

GOLDEN = Path(__file__).parent.parent / "golden" / "plans"


def render_plan(results: List[StepResult]) -> str:
    lines = []
    for result in results:
        lines.append(f"{result.name}: {result.status.value}")
        lines += [f"  - {change}" for change in result.changes]
        if result.status is not Status.CHANGE:
            lines.append(f"  = {result.detail}")
    return "\n".join(lines) + "\n"


def apply(m: SimMachine, **settings: object) -> session.Report:
    ctx = m.context(m.settings(**settings))
    report = session.execute(plans.allinone(frakti()), ctx, dry_run=False)
    session.raise_for(report)
    return report


@pytest.mark.parametrize("os_id,version", SUPPORTED, ids=[f"{i}-{v}" for i, v in SUPPORTED])
def test_fresh_plan_matches_golden(machine, os_id, version):
    m = machine(os_id, version)
    report = session.execute(plans.allinone(frakti()), m.context(), dry_run=True)
    text = render_plan(report.steps)
    golden = GOLDEN / f"{os_id}-{version}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"plan for {os_id} {version} changed:\n{text}"
    # a dry run changes nothing at all
    assert not m.p("/etc/hyper").exists() and m.runner.mutations == 0


@pytest.mark.parametrize("os_id,version", SUPPORTED, ids=[f"{i}-{v}" for i, v in SUPPORTED])
def test_apply_then_rerun_changes_nothing(machine, os_id, version):
    m = machine(os_id, version)
    first = apply(m)
    expected = {
        "kernel",
        "hyperd",
        "docker",
        "frakti",
        "cni",
        "kubernetes",
        "kubelet",
        "kubeadm-init",
        "pod-network",
        "untaint",
        "settings",
        "routes-sync",
    }
    if os_id not in ("debian", "ubuntu"):
        expected.add("selinux")
        if os_id != "centos":
            expected.add("repos")  # EL8/9: docker-ce from Docker's signed repo
    changed = {r.name for r in first.steps if r.status is Status.CHANGE}
    assert changed == expected, render_plan(first.steps)
    assert len(m.state.inits) == 1
    assert m.state.cluster.node("node-1")["spec"]["taints"] == []
    before = m.snapshot()
    assert before["#stale-daemons"] == "", "a daemon runs on files older than the current ones"
    mutations = m.runner.mutations
    starts = {u: s.starts for u, s in m.state.units.items()}

    second = apply(m)

    for result in second.steps:
        assert result.status in (Status.OK, Status.SKIP), render_plan(second.steps)
        assert result.detail, f"{result.name} gives no reason for doing nothing"
    assert m.runner.mutations == mutations, "the re-run ran a changing command"
    assert {u: s.starts for u, s in m.state.units.items()} == starts
    assert m.snapshot() == before


def test_rhel_family_sets_selinux_permissive_and_docker_repo(machine):
    m = machine("rocky", "9.3")
    apply(m)
    assert m.p("/sys/fs/selinux/enforce").read_text() == "0\n"
    assert "SELINUX=permissive" in m.p("/etc/selinux/config").read_text()
    repo = m.p("/etc/yum.repos.d/docker-ce.repo").read_text()
    assert "gpgcheck=1" in repo and "gpgkey=https://" in repo
    assert m.p("/etc/sysconfig/kubelet").exists() and not m.p("/etc/default/kubelet").exists()
    assert "docker-ce" in m.state.packages


def count_mutations(m: SimMachine) -> int:
    apply(m)
    return m.runner.mutations


@pytest.mark.parametrize("os_id,version", [("debian", "12"), ("centos", "7")])
def test_killed_at_every_command_then_rerun_converges(machine, tmp_path, os_id, version):
    reference = machine(os_id, version)
    total = count_mutations(reference)
    expected = reference.snapshot()
    assert expected["#stale-daemons"] == ""
    assert total > 10
    for kill_at in range(total):
        m = SimMachine(tmp_path / f"kill-{kill_at}", os_id, version)
        m.runner.kill_at = kill_at
        with pytest.raises(Killed):
            apply(m)
        m.runner.kill_at = None
        apply(m)
        assert m.snapshot() == expected, f"killed at command {kill_at}"
        assert len(m.state.inits) == 1 or _reset_in_between(m), kill_at


def _reset_in_between(m: SimMachine) -> bool:
    return any(call[:2] == ["kubeadm", "reset"] for call in m.runner.calls)


def test_interrupted_init_is_reset_and_cni_config_restored(machine):
    m = machine()
    apply(m)
    # what a killed `kubeadm init` leaves: manifests, no admin.conf; reset wipes CNI too
    m.p("/etc/kubernetes/admin.conf").unlink()
    m.state.cluster.nodes.clear()
    report = session.execute(plans.allinone(frakti()), m.context(), dry_run=True)
    init = next(r for r in report.steps if r.name == "kubeadm-init")
    assert init.changes[0].startswith("clean up an unfinished init: kubeadm reset -f")
    apply(m)
    assert m.p("/etc/cni/net.d/10-mynet.conf").exists()
    assert len(m.state.inits) == 2


def test_changed_node_subnet_touches_only_the_pod_network(machine):
    m = machine()
    apply(m)
    starts = {u: s.starts for u, s in m.state.units.items()}
    report = apply(m, node_subnet="10.244.7.0/24")
    changed = {r.name: r.changes for r in report.steps if r.status is Status.CHANGE}
    assert changed == {
        "pod-network": [
            "update /etc/cni/net.d/10-mynet.conf",
            "publish the hand-picked pod subnet: kubectl --kubeconfig /etc/kubernetes/admin.conf"
            " annotate --overwrite node node-1 frakti-install/pod-subnet=10.244.7.0/24",
        ],
        # the record of the install's settings (what status and the routes timer read)
        "settings": ["update /var/lib/frakti-install/settings.yaml"],
    }
    saved = m.p("/var/lib/frakti-install/settings.yaml").read_text()
    assert "node_subnet: 10.244.7.0/24" in saved
    annotations = m.state.cluster.node("node-1")["metadata"]["annotations"]
    assert annotations == {"frakti-install/pod-subnet": "10.244.7.0/24"}
    assert (
        json.loads(m.p("/etc/cni/net.d/10-mynet.conf").read_text())["ipam"]["subnet"]
        == "10.244.7.0/24"
    )
    assert {u: s.starts for u, s in m.state.units.items()} == starts


def test_changed_cgroup_driver_restarts_frakti_and_kubelet_only(machine):
    m = machine()
    apply(m)
    m.state.docker_driver = "systemd"
    starts = {u: s.starts for u, s in m.state.units.items()}
    report = apply(m)
    changed = [r.name for r in report.steps if r.status is Status.CHANGE]
    assert changed == ["frakti", "kubelet"]
    assert "--cgroup-driver=systemd" in m.p("/lib/systemd/system/frakti.service").read_text()
    assert "--cgroup-driver=systemd" in m.p("/etc/default/kubelet").read_text()
    after = {u: s.starts for u, s in m.state.units.items()}
    assert after["frakti.service"] == starts["frakti.service"] + 1
    assert after["kubelet.service"] == starts["kubelet.service"] + 1
    assert after["hyperd.service"] == starts["hyperd.service"]


def test_other_pod_cidr_on_existing_cluster_is_refused(machine):
    m = machine()
    apply(m)
    with pytest.raises(ConfigError, match="initialised with pod CIDR 10.244.0.0/16"):
        apply(m, pod_cidr="10.32.0.0/16", node_subnet="10.32.1.0/24")
    assert len(m.state.inits) == 1


def test_replaced_files_are_backed_up_and_journaled(machine):
    m = machine()
    m.runner.write("/etc/hyper/config", "Kernel=/old\n")
    apply(m)
    journal = [
        json.loads(line)
        for line in m.p("/var/lib/frakti-install/journal.jsonl").read_text().splitlines()
    ]
    write = next(
        e for e in journal if e.get("event") == "file" and e["path"] == "/etc/hyper/config"
    )
    assert write["created"] is False
    assert m.p(write["backup"]).read_text() == "Kernel=/old\n"
    assert "gRPCHost=127.0.0.1:22318" in m.p("/etc/hyper/config").read_text()
    assert {e["event"] for e in journal} >= {"run-start", "start", "action", "change", "run-end"}


def test_join_token_never_reaches_log_or_journal(machine, caplog):
    m = machine()
    with caplog.at_level("DEBUG", logger="frakti_install"):
        apply(m)
    token = m.p(TOKEN_FILE).read_text()
    assert token and f"--token={token}" in m.state.inits[0]  # kubeadm init got it
    assert not [argv for argv in m.runner.calls if token in " ".join(argv)]  # not on argv
    assert token not in caplog.text
    assert "<redacted>" in caplog.text
    assert token not in m.p("/var/lib/frakti-install/journal.jsonl").read_text()


def test_corrupted_download_stops_before_installing(machine):
    m = machine()
    frakti_url = "https://github.com/kubernetes/frakti/releases/download/v1.12.0/frakti"
    m.downloader.corrupt.add(frakti_url)
    ctx = m.context()
    report = session.execute(plans.allinone(frakti()), ctx, dry_run=False)
    failed = [r for r in report.steps if r.status is Status.FAIL]
    assert [r.name for r in failed] == ["frakti"]
    assert "sha256 mismatch" in failed[0].detail
    assert not m.p("/usr/bin/frakti").exists()
    assert report.steps[-1].name == "frakti", "the run must stop at the failed step"


def test_advertise_address_and_node_ip_reach_kubeadm_and_kubelet(machine):
    m = machine()
    apply(m, advertise_address="192.168.56.10", node_ip="192.168.56.10")
    assert "--apiserver-advertise-address=192.168.56.10" in m.state.inits[0]
    assert "--node-ip=192.168.56.10" in m.p("/etc/default/kubelet").read_text()


def test_cluster_made_without_pod_cidr_is_refused_at_once(machine):
    m = machine()
    apply(m)
    m.runner.write("/etc/kubernetes/manifests/kube-controller-manager.yaml", "    - --v=2\n")
    with pytest.raises(ConfigError, match="initialised without --pod-network-cidr"):
        apply(m)
    apply(m, node_subnet="10.244.0.0/24")  # a hand-picked subnet works
