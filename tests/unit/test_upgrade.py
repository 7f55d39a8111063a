"""`upgrade` on simulated kata hosts: the target and the version skew policy
(patch, minor, two minors refused, worker before master refused, downgrade
refused), kubeadm's procedure in order, a kill at every command then resume,
a second run that changes nothing, and status and reset afterwards."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from frakti_install import datafiles, joining, plans, session, versions
from frakti_install import upgrade as upgrading
from frakti_install.engine import Status
from frakti_install.errors import ConfigError
from tests.unit.simhost import Killed, SimCluster, SimMachine, kata
from tests.unit.simkata import KataSimMachine
from tests.unit.test_allinone_sim import render_plan
from tests.unit.test_reset import host_listing

REVIEWED = datetime.date.fromisoformat(datafiles.load("kata")["kubernetes"]["reviewed"])
MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"


@pytest.fixture(autouse=True)
def reviewed_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judge end of life on the table's reviewed day (v1.35, v1.36, v1.37 supported)."""
    monkeypatch.setattr(versions, "today", lambda: REVIEWED)


def install(m: KataSimMachine, **settings: Any) -> None:
    report = session.execute(
        plans.allinone(kata()), m.context(m.settings(**settings)), dry_run=False
    )
    session.raise_for(report)


def target(m: KataSimMachine, wanted: Optional[str] = None, **recorded: Any):
    ctx = m.context(m.settings(**recorded))
    settings, why = upgrading.target_settings(ctx.settings, ctx, wanted, None)
    assert why is None
    return settings


def upgrade(
    m: KataSimMachine, wanted: Optional[str] = None, dry_run: bool = False, **recorded: Any
) -> session.Report:
    settings = target(m, wanted, **recorded)
    ctx = m.context(settings)
    report = session.execute(plans.upgrade(ctx.runtime), ctx, dry_run=dry_run)
    session.raise_for(report)
    return report


def node(m: KataSimMachine, name: str = "node-1") -> dict:
    return m.state.cluster.node(name)


def changed(report: session.Report) -> set:
    return {r.name for r in report.steps if r.status is Status.CHANGE}


def purged(m: KataSimMachine, settings: Any) -> dict:
    """The host's files after `reset --purge` with these settings."""
    ctx = m.context(settings)
    report = session.execute(plans.reset(ctx.runtime, purge=True), ctx, dry_run=False)
    session.raise_for(report)
    # the sim's purge forgets a package but leaves its files (their content is its version)
    return {k: v for k, v in host_listing(m).items() if not k.startswith("usr/bin/kube")}


@pytest.fixture
def master(tmp_path: Path) -> KataSimMachine:
    return KataSimMachine(tmp_path / "master", "ubuntu", "26.04")


# --- the plan for each case ------------------------------------------------------------
def test_patch_upgrade_is_the_default_and_keeps_the_repository(master):
    install(master, kubernetes_version="v1.35.2")
    installed = master.runner.mutations
    plan = render_plan(upgrade(master, dry_run=True, kubernetes_version="v1.35.2").steps)
    assert "kubeadm upgrade plan v1.35.9" in plan and "kubeadm upgrade apply v1.35.9 --yes" in plan
    assert "kubeadm=1.35.9-1.1" in plan and "kubelet=1.35.9-1.1 kubectl=1.35.9-1.1" in plan
    assert master.runner.mutations == installed  # a dry run changes nothing
    report = upgrade(master, kubernetes_version="v1.35.2")
    assert "kubernetes-repo" not in changed(report)  # a patch stays in the v1.35 repository
    assert master.state.cluster.version == "v1.35.9"
    assert node(master)["status"]["nodeInfo"]["kubeletVersion"] == "v1.35.9"
    assert {master.state.packages[n] for n in ("kubeadm", "kubelet", "kubectl")} == {"1.35.9-1.1"}
    assert {"kubeadm", "kubelet", "kubectl"} <= set(master.kata.holds)
    assert "unschedulable" not in node(master)["spec"]
    assert master.runner.mutations > installed


def test_kubeadm_procedure_runs_in_the_documented_order(master):
    install(master)
    installed = len(master.runner.calls)
    upgrade(master, "v1.36")
    ran = [" ".join(c) for c in master.runner.calls[installed:]]

    def first(fragment: str) -> int:
        return next(i for i, call in enumerate(ran) if fragment in call)

    order = [
        "apt-mark unhold kubeadm", "kubeadm=1.36.4-1.1", "apt-mark hold kubeadm",
        "kubeadm upgrade plan v1.36.4", "kubeadm upgrade apply v1.36.4 --yes",
        "drain node-1 --ignore-daemonsets --timeout=300s", "kubelet=1.36.4-1.1",
        "systemctl daemon-reload", "systemctl restart kubelet.service", "uncordon node-1",
    ]  # fmt: skip
    positions = [first(fragment) for fragment in order]
    assert positions == sorted(positions), list(zip(order, positions))


def test_minor_upgrade_switches_the_repository_and_records_the_release(master):
    install(master)
    report = upgrade(master, "v1.36")
    assert {"kubernetes-repo", "kubeadm-package", "kubeadm-upgrade", "drain"} <= changed(report)
    assert "/v1.36/deb/" in master.p("/etc/apt/sources.list.d/kubernetes.list").read_text()
    assert "registry.k8s.io/kube-apiserver:v1.36.4" in master.p(MANIFEST).read_text()
    recorded = yaml.safe_load(master.p("/var/lib/frakti-install/settings.yaml").read_text())
    assert recorded["kubernetes_version"] == "v1.36.4"


def test_two_minors_at_once_are_refused_before_any_change(master):
    install(master)
    mutations = master.runner.mutations
    with pytest.raises(ConfigError, match="1 minor version at a time") as refused:
        upgrade(master, "v1.37")
    assert "--kubernetes-version v1.36" in refused.value.hint
    assert master.runner.mutations == mutations


def test_a_downgrade_is_refused(master):
    install(master)
    with pytest.raises(ConfigError, match="a downgrade"):
        upgrade(master, "v1.35.2")


def test_an_unknown_or_end_of_life_target_is_refused(master, monkeypatch):
    install(master)
    with pytest.raises(ConfigError, match="not a released patch"):
        target(master, "v1.36.9")
    monkeypatch.setattr(versions, "today", lambda: datetime.date(2027, 7, 1))
    assert target(master, "v1.36", allow_eol=True).kubernetes_version == "v1.36.4"
    with pytest.raises(ConfigError, match="end of life"):
        target(master, "v1.36")


def test_a_worker_waits_for_its_master_then_follows_it(tmp_path: Path) -> None:
    shared = SimCluster()
    master = KataSimMachine(tmp_path / "m", "ubuntu", "26.04", hostname="master", cluster=shared)
    install(master)
    line = joining.create_join_line(master.context(master.settings()))
    worker = KataSimMachine(
        tmp_path / "w", "ubuntu", "26.04", hostname="worker", ip="10.0.0.2", cluster=shared
    )
    join = {"join_endpoint": line.endpoint, "join_token": line.token,
            "join_ca_hash": line.ca_hash}  # fmt: skip
    session.raise_for(
        session.execute(plans.node(kata()), worker.context(worker.settings(**join)), dry_run=False)
    )
    with pytest.raises(ConfigError, match="newer than the control plane's v1.35.9"):
        upgrade(worker, "v1.36")

    upgrade(master, "v1.36")
    mutations = worker.runner.mutations
    with pytest.raises(ConfigError, match="no kubeconfig to drain it with") as refused:
        upgrade(worker)  # its kubelet's credentials cannot evict pods
    assert "--kubeconfig" in refused.value.hint and "cluster -f" in refused.value.hint
    assert worker.runner.mutations == mutations
    with pytest.raises(ConfigError, match="--kubeconfig /root/admin.conf: no such file"):
        upgrade(worker, drain_kubeconfig="/root/admin.conf")
    worker.p("/root").mkdir(exist_ok=True)
    shutil.copy(master.p("/etc/kubernetes/admin.conf"), worker.p("/root/admin.conf"))
    first = len(worker.runner.calls)
    report = upgrade(worker, drain_kubeconfig="/root/admin.conf")  # the control plane's
    assert worker.kata.node_upgrades == ["v1.36.4"]
    assert {"drain", "uncordon"} <= changed(report)
    ran = [" ".join(c) for c in worker.runner.calls[first:]]
    drains = [c for c in ran if " drain " in c or " uncordon " in c]
    assert drains == [
        "kubectl --kubeconfig /root/admin.conf drain worker --ignore-daemonsets --timeout=300s",
        "kubectl --kubeconfig /root/admin.conf uncordon worker",
    ]
    assert "unschedulable" not in shared.node("worker")["spec"]
    assert shared.node("worker")["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.4"
    again = upgrade(worker)  # nothing changes under its pods: no kubeconfig needed
    assert changed(again) == set(), render_plan(again.steps)


def test_drain_options_are_settings(master):
    install(master)
    first = len(master.runner.calls)
    upgrade(master, "v1.36", drain_timeout=120, drain_delete_emptydir_data=True,
            drain_grace_period=30, drain_force=True)  # fmt: skip
    drain = [" ".join(c) for c in master.runner.calls[first:] if "drain" in c]
    assert drain == [
        "kubectl --kubeconfig /etc/kubernetes/admin.conf drain node-1 --ignore-daemonsets "
        "--timeout=120s --delete-emptydir-data --grace-period=30 --force"
    ]
    with pytest.raises(ConfigError, match="drain_grace_period"):
        target(master, drain_grace_period=-2)


# --- resumable, idempotent, and what follows ---------------------------------------------
def test_second_run_changes_nothing(master):
    install(master)
    upgrade(master, "v1.36")
    mutations, before = master.runner.mutations, master.snapshot()
    again = upgrade(master, "v1.36")
    assert changed(again) == set(), render_plan(again.steps)
    for result in again.steps:
        assert result.detail, f"{result.name} gives no reason for doing nothing"
    assert master.runner.mutations == mutations and master.snapshot() == before
    default = upgrade(master)  # the latest v1.36 patch: already there
    assert changed(default) == set()


def test_killed_at_every_command_then_rerun_converges(tmp_path):
    reference = KataSimMachine(tmp_path / "ref", "ubuntu", "26.04")
    install(reference)
    start = reference.runner.mutations
    upgrade(reference, "v1.36")
    total, expected = reference.runner.mutations - start, reference.snapshot()
    assert total > 8
    for kill_at in range(total):
        m = KataSimMachine(tmp_path / f"kill-{kill_at}", "ubuntu", "26.04")
        install(m)
        m.runner.kill_at = m.runner.mutations + kill_at
        with pytest.raises(Killed):
            upgrade(m, "v1.36")
        m.runner.kill_at = None
        upgrade(m, "v1.36")
        assert m.snapshot() == expected, f"killed at upgrade command {kill_at}"
        assert changed(upgrade(m, "v1.36")) == set(), f"killed at {kill_at}: not converged"


def test_status_after_an_upgrade_judges_by_the_new_release(master):
    install(master)
    upgrade(master, "v1.36")
    recorded = yaml.safe_load(master.p("/var/lib/frakti-install/settings.yaml").read_text())
    ctx = master.context(master.settings(kubernetes_version=recorded["kubernetes_version"]))
    status = session.execute(session.installed_plan(ctx), ctx, dry_run=True)
    assert status.drifted == [], render_plan(status.steps)
    old = master.context(master.settings())  # judged by the old release: drift
    assert "kubernetes" in session.execute(session.installed_plan(old), old, dry_run=True).drifted


def test_reset_after_an_upgrade_removes_everything(tmp_path):
    """What reset leaves after an upgrade is what it leaves after a plain install
    (the upgrade's packages, repository file, keyring and markers all journaled)."""

    def reset(m: KataSimMachine, wanted: Optional[str]) -> dict:
        return purged(m, target(m, wanted) if wanted else m.settings())

    plain = KataSimMachine(tmp_path / "plain", "ubuntu", "26.04")
    install(plain)
    upgraded = KataSimMachine(tmp_path / "upgraded", "ubuntu", "26.04")
    install(upgraded)
    upgrade(upgraded, "v1.36")
    after_plain, after_upgrade = reset(plain, None), reset(upgraded, "v1.36")
    assert after_upgrade == after_plain
    assert not upgraded.p("/etc/apt/sources.list.d/kubernetes.list").exists()
    assert not {"kubeadm", "kubelet", "kubectl"} & set(upgraded.state.packages)


def test_the_frakti_profile_says_nothing_newer(tmp_path):
    m = SimMachine(tmp_path / "f", "ubuntu", "16.04")
    ctx = m.context()
    settings, why = upgrading.target_settings(ctx.settings, ctx, None, None)
    assert why is not None and "nothing newer" in why and "v1.12.10" in why
    with pytest.raises(ConfigError, match="cannot upgrade"):
        upgrading.target_settings(ctx.settings, ctx, "v1.13.0", None)


# --- the simulated kubeadm refuses as the real one ---------------------------------------
def test_sim_kubeadm_refuses_a_skipped_minor_and_a_target_above_itself(master):
    install(master)
    skipped = master.runner(["kubeadm", "upgrade", "apply", "v1.37.1", "--yes"], None, None, None)
    assert not skipped.ok and "kubeadm can upgrade only 1 minor version at a time" in skipped.stderr
    above = master.runner(["kubeadm", "upgrade", "plan", "v1.36.4"], None, None, None)
    assert not above.ok and "higher than the kubeadm minor release (36 > 35)" in above.stderr
    assert "kube-apiserver:v1.35.9" in master.p(MANIFEST).read_text()


def test_a_minor_that_supports_no_containerd_1_x_is_refused_before_any_change(tmp_path):
    """Debian 12 runs containerd 1.6; 1.36 supports 2.0 and later only: the
    upgrade stops before the drain, the repository switch or any package."""
    m = KataSimMachine(tmp_path / "bookworm", "debian", "12")
    install(m)
    before = m.runner.mutations
    with pytest.raises(ConfigError, match=r"containerd 1\.6 \(installed\) is older than"):
        target(m, "v1.36")
    assert m.runner.mutations == before
