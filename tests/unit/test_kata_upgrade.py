"""A newer Kata on simulated kata hosts: each release in a tree of its own,
/opt/kata switched to it in one rename (the shim link and containerd's
ConfigPath go through /opt/kata), the old tree kept until the node is Ready
again; a host of the in-place layout (/opt/kata a directory) migrated without
a moment where the shim is missing; killed at every command, the re-run
converges; reset removes every tree."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from frakti_install import datafiles, fsio, plans, session, versions
from frakti_install import host as host_module
from frakti_install import upgrade as upgrading
from frakti_install.engine import Status
from frakti_install.errors import ConfigError
from frakti_install.steps.node import NodeReady
from tests.unit.simhost import Killed, kata
from tests.unit.simkata import KataSimMachine, kata_tarball
from tests.unit.test_allinone_sim import render_plan
from tests.unit.test_upgrade import purged

REVIEWED = datetime.date.fromisoformat(datafiles.load("kata")["kubernetes"]["reviewed"])
OLD, NEW = "3.31.0", "3.32.0"
SHIM = "/usr/local/bin/containerd-shim-kata-v2"
MANIFEST = "/var/lib/frakti-install/kata-files.json"
JOURNAL = "/var/lib/frakti-install/journal.jsonl"
DROP_IN = "/etc/containerd/conf.d/90-frakti-install.toml"
ENTRY_SHIM = "/opt/kata/frakti-install/containerd-shim-kata-v2"
ENTRY_CONFIG = "/opt/kata/frakti-install/configuration.toml"
GO_CONFIG = "/opt/kata/share/defaults/kata-containers/configuration-qemu.toml"


@pytest.fixture(autouse=True)
def reviewed_day(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "today", lambda: REVIEWED)


def sums(release: str) -> Dict[str, str]:
    return {"kata": hashlib.sha256(kata_tarball(version=release)).hexdigest()}


def install(m: KataSimMachine, release: str = OLD) -> None:
    settings = m.settings(kata_version=release, checksums=sums(release))
    session.raise_for(session.execute(plans.allinone(kata()), m.context(settings), dry_run=False))


def upgrade(
    m: KataSimMachine, release: str = NEW, kubernetes: Optional[str] = None
) -> session.Report:
    """`upgrade --kata-version RELEASE --checksum kata=SUM` on what `install` recorded."""
    recorded = m.settings(kata_version=OLD, checksums=sums(OLD))
    ctx = m.context(recorded)
    settings, why = upgrading.target_settings(recorded, ctx, kubernetes, release, sums(release))
    assert why is None
    ctx = m.context(settings)
    report = session.execute(plans.upgrade(ctx.runtime), ctx, dry_run=False)
    session.raise_for(report)
    return report


def changed(report: session.Report) -> set:
    return {r.name for r in report.steps if r.status is Status.CHANGE}


def shim_runs(m: KataSimMachine) -> bool:
    return m.kata.resolve(SHIM).is_file()


def active(m: KataSimMachine) -> str:
    return os.readlink(m.p("/opt/kata"))


def release_of(m: KataSimMachine) -> str:
    """The release the shim link reaches (the sim tarball names it in every file)."""
    return m.kata.resolve(SHIM).read_text().rsplit(" ", 1)[-1].strip()


@pytest.fixture
def master(tmp_path: Path) -> KataSimMachine:
    return KataSimMachine(tmp_path / "master", "debian", "12")


def test_install_unpacks_into_a_tree_and_links_opt_kata(master):
    install(master)
    assert active(master) == f"kata-versions/{OLD}"
    assert os.readlink(master.p(SHIM)) == ENTRY_SHIM
    assert release_of(master) == OLD
    manifest = json.loads(master.p(MANIFEST).read_text())
    assert list(manifest["trees"]) == [f"/opt/kata-versions/{OLD}"]


def test_a_newer_kata_switches_in_one_rename_and_the_old_tree_goes_when_ready(
    master, monkeypatch
):
    install(master)
    drop_in = master.p("/etc/containerd/conf.d/90-frakti-install.toml").read_text()
    seen: List[str] = []
    real_remove_tree, real_ready = host_module.Host.remove_tree, NodeReady.check

    def remove_tree(self: host_module.Host, target: str) -> None:
        seen.append(f"remove {target}, {active(master)} active")
        real_remove_tree(self, target)

    def ready(step: NodeReady, ctx: Any) -> Any:
        seen.append(f"node-ready, {OLD} kept: {master.p(f'/opt/kata-versions/{OLD}').is_dir()}")
        return real_ready(step, ctx)

    monkeypatch.setattr(host_module.Host, "remove_tree", remove_tree)
    monkeypatch.setattr(NodeReady, "check", ready)
    report = upgrade(master)
    assert {"drain", "kata", "kata-prune", "uncordon"} <= changed(report), render_plan(
        report.steps
    )
    assert active(master) == f"kata-versions/{NEW}" and release_of(master) == NEW
    assert seen == [
        f"node-ready, {OLD} kept: True",
        f"remove /opt/kata-versions/{OLD}, kata-versions/{NEW} active",
    ]
    assert not master.p(f"/opt/kata-versions/{OLD}").exists()
    # the paths containerd uses did not change: only the link under them did
    assert master.p("/etc/containerd/conf.d/90-frakti-install.toml").read_text() == drop_in
    assert os.readlink(master.p(SHIM)) == ENTRY_SHIM
    manifest = json.loads(master.p(MANIFEST).read_text())
    assert list(manifest["trees"]) == [f"/opt/kata-versions/{NEW}"]
    again = upgrade(master)
    assert changed(again) == set(), render_plan(again.steps)


def test_3_x_to_4_x_moves_to_runtime_rs_with_one_switch(tmp_path):
    """4.x keeps its shim and configuration elsewhere (runtime-rs): the shim
    link and the drop-in's ConfigPath stay as they are, the entry links of the
    new tree reach runtime-rs, and the one rename of /opt/kata switches all."""
    m = KataSimMachine(tmp_path / "m", "ubuntu", "26.04")  # containerd 2.x
    install(m)
    drop_in = m.p(DROP_IN).read_text()
    assert f'ConfigPath = "{ENTRY_CONFIG}"' in drop_in
    renames: List[str] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_replace(src, dst, *args, **kwargs)
        if str(dst).startswith(str(m.root)) and not str(dst).startswith(str(m.p("/var"))):
            renames.append(str(dst)[len(str(m.root)):])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", replace)
        report = upgrade(m, release="4.1.0")
    assert "kata" in changed(report), render_plan(report.steps)
    assert active(m) == "kata-versions/4.1.0" and release_of(m) == "4.1.0"
    assert m.kata.resolve(SHIM).samefile(
        m.p("/opt/kata-versions/4.1.0/runtime-rs/bin/containerd-shim-kata-v2")
    )
    assert m.kata.resolve(ENTRY_CONFIG).samefile(
        m.p(
            "/opt/kata-versions/4.1.0/share/defaults/kata-containers/runtime-rs/"
            "configuration-qemu-runtime-rs.toml"
        )
    )
    assert os.readlink(m.p(SHIM)) == ENTRY_SHIM
    assert m.p(DROP_IN).read_text() == drop_in
    # outside the new tree, the one rename that made the node run 4.1.0
    outside = [path for path in renames if not path.startswith("/opt/kata-versions/")]
    assert outside == ["/opt/kata"], renames
    again = upgrade(m, release="4.1.0")
    assert changed(again) == set(), render_plan(again.steps)


def test_a_tree_from_before_the_entry_links_gets_them_without_a_new_unpack(master):
    install(master)
    make_without_entries(master)
    report = upgrade(master, release=OLD)
    plan = render_plan(report.steps)
    assert "link /opt/kata-versions/3.31.0/frakti-install/" in plan
    assert "download, verify and unpack" not in plan
    assert os.readlink(master.p(SHIM)) == ENTRY_SHIM
    assert f'ConfigPath = "{ENTRY_CONFIG}"' in master.p(DROP_IN).read_text()
    assert release_of(master) == OLD
    manifest = json.loads(master.p(MANIFEST).read_text())
    links = manifest["trees"][f"/opt/kata-versions/{OLD}"]["links"]
    assert links[f"/opt/kata-versions/{OLD}/frakti-install/configuration.toml"] == (
        "../share/defaults/kata-containers/configuration-qemu.toml"
    )
    again = upgrade(master, release=OLD)
    assert changed(again) == set(), render_plan(again.steps)


def test_killed_at_every_command_of_a_kata_upgrade_converges(tmp_path):
    # containerd 2.x: Kubernetes 1.36 supports no containerd 1.x (Debian 12's)
    reference = KataSimMachine(tmp_path / "ref", "ubuntu", "26.04")
    install(reference)
    start = reference.runner.mutations
    upgrade(reference, kubernetes="v1.36")
    total, expected = reference.runner.mutations - start, reference.snapshot()
    assert total > 8
    for kill_at in range(total):
        m = KataSimMachine(tmp_path / f"kill-{kill_at}", "ubuntu", "26.04")
        install(m)
        m.runner.kill_at = m.runner.mutations + kill_at
        with pytest.raises(Killed):
            upgrade(m, kubernetes="v1.36")
        assert shim_runs(m), f"killed at {kill_at}: no shim"
        m.runner.kill_at = None
        upgrade(m, kubernetes="v1.36")
        assert m.snapshot() == expected, f"killed at upgrade command {kill_at}"
        assert changed(upgrade(m, kubernetes="v1.36")) == set(), f"killed at {kill_at}"


# --- the in-place layout of earlier installs ---------------------------------------------
def make_without_entries(m: KataSimMachine, tree: str = f"/opt/kata-versions/{OLD}") -> None:
    """What an install before the entry links left: no frakti-install/ in the
    tree (nor in its manifest), the shim link and ConfigPath naming the Go
    layout's paths under /opt/kata."""
    for name in ("containerd-shim-kata-v2", "configuration.toml"):
        m.p(f"{tree}/frakti-install/{name}").unlink()
    m.p(f"{tree}/frakti-install").rmdir()
    manifest = json.loads(m.p(MANIFEST).read_text())
    links = manifest["trees"][tree]["links"]
    for link in [link for link in links if "/frakti-install/" in link]:
        del links[link]
    m.p(MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    m.p(SHIM).unlink()
    os.symlink("/opt/kata/bin/containerd-shim-kata-v2", m.p(SHIM))
    drop_in = m.p(DROP_IN).read_text()
    assert ENTRY_CONFIG in drop_in
    m.p(DROP_IN).write_text(drop_in.replace(ENTRY_CONFIG, GO_CONFIG))


def make_in_place(m: KataSimMachine) -> None:
    """What an install before the tree layout left: /opt/kata a directory, its
    files in the manifest and the journal under /opt/kata."""
    tree = f"/opt/kata-versions/{OLD}"
    make_without_entries(m, tree)
    m.p("/opt/kata").unlink()
    shutil.move(str(m.p(tree)), str(m.p("/opt/kata")))
    m.p("/opt/kata-versions").rmdir()
    entry = json.loads(m.p(MANIFEST).read_text())["trees"][tree]
    moved = json.loads(json.dumps(entry).replace(tree, "/opt/kata"))
    m.p(MANIFEST).write_text(json.dumps(moved, indent=1, sort_keys=True) + "\n")
    lines = []
    for line in m.p(JOURNAL).read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "tree" or event.get("path") == "/opt/kata":
            continue
        lines.append(line.replace(tree, "/opt/kata"))
    m.p(JOURNAL).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_the_in_place_layout_is_migrated_and_the_shim_is_never_missing(
    master, monkeypatch, exchange
):
    install(master)
    make_in_place(master)
    assert master.p("/opt/kata").is_dir() and not master.p("/opt/kata").is_symlink()
    if not exchange:
        monkeypatch.setattr(fsio, "exchange", lambda first, second: False)
    missing: List[str] = []
    real = {name: getattr(os, name) for name in ("rename", "replace")}

    def watched(name: str) -> Any:
        def call(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            real[name](src, dst, *args, **kwargs)
            if str(master.root) in str(dst) and not shim_runs(master):
                missing.append(f"{name} {src} -> {dst}")

        return call

    for name in real:
        monkeypatch.setattr(os, name, watched(name))
    report = upgrade(master, release=OLD)  # same release: only the layout moves
    for name, function in real.items():
        monkeypatch.setattr(os, name, function)
    assert missing == []
    assert "kata" in changed(report) and "kata-prune" in changed(report)
    assert active(master) == f"kata-versions/{OLD}" and release_of(master) == OLD
    assert os.listdir(master.p("/opt/kata-versions")) == [OLD]
    again = upgrade(master, release=OLD)
    assert changed(again) == set(), render_plan(again.steps)


def test_reset_removes_every_tree_after_a_migration_and_an_upgrade(tmp_path):
    def reset(m: KataSimMachine, release: str) -> dict:
        return purged(m, m.settings(kata_version=release, checksums=sums(release)))

    plain = KataSimMachine(tmp_path / "plain", "debian", "12")
    install(plain)
    moved = KataSimMachine(tmp_path / "moved", "debian", "12")
    install(moved)
    make_in_place(moved)
    upgrade(moved, release=OLD)
    upgrade(moved)
    assert reset(moved, NEW) == reset(plain, OLD)
    assert not moved.p("/opt/kata").exists() and not moved.p("/opt/kata").is_symlink()
    assert not moved.p("/opt/kata-versions").exists()


def test_a_kata_release_without_a_known_sum_is_refused_before_any_change(master):
    install(master)
    recorded = master.settings(kata_version=OLD, checksums=sums(OLD))
    ctx = master.context(recorded)
    with pytest.raises(ConfigError, match="older than the installed 3.31.0: a downgrade"):
        upgrading.target_settings(recorded, ctx, None, "3.30.0", {})
    # 3.31.0's recorded sum is of the installed tarball: dropped for another release
    settings, _ = upgrading.target_settings(recorded, ctx, None, "4.0.0", {})
    assert "kata" not in settings.checksums
    ctx = master.context(settings)
    mutations = master.runner.mutations
    with pytest.raises(ConfigError, match="no sha256 given for kata") as refused:
        session.raise_for(session.execute(plans.upgrade(ctx.runtime), ctx, dry_run=False))
    assert "--checksum kata=SHA256" in refused.value.hint
    assert master.runner.mutations == mutations and active(master) == f"kata-versions/{OLD}"


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_migration_killed_inside_the_exchange_is_finished_by_the_next_run(
    master, monkeypatch, when
):
    """Killed with the new link made but not yet exchanged, or just after the
    exchange: the next run ends with /opt/kata linked, nothing left beside it."""
    install(master)
    make_in_place(master)
    real = fsio.exchange

    def killed(first: Any, second: Any) -> bool:
        if when == "after":
            real(first, second)
        raise KeyboardInterrupt

    monkeypatch.setattr(fsio, "exchange", killed)
    with pytest.raises(KeyboardInterrupt):
        upgrade(master, release=OLD)
    assert shim_runs(master)
    monkeypatch.setattr(fsio, "exchange", real)
    upgrade(master, release=OLD)
    assert sorted(os.listdir(master.p("/opt"))) == ["cni", "kata", "kata-versions"]
    assert active(master) == f"kata-versions/{OLD}"
    assert os.listdir(master.p("/opt/kata-versions")) == [OLD]
    assert changed(upgrade(master, release=OLD)) == set()


@pytest.mark.parametrize("kind", ["directory", "link"])
def test_a_kata_frakti_install_did_not_install_is_refused_and_left_alone(master, kind):
    """kata-deploy's /opt/kata (or a hand install): preflight refuses before any change;
    neither moved aside nor pruned."""
    if kind == "directory":
        master.runner.write("/opt/kata/bin/containerd-shim-kata-v2", "kata-deploy's\n")
    else:
        master.runner.write("/srv/kata/bin/containerd-shim-kata-v2", "by hand\n")
        master.p("/opt").mkdir(exist_ok=True)
        os.symlink("../srv/kata", master.p("/opt/kata"))
    before = master.snapshot()
    settings = master.settings(kata_version=OLD, checksums=sums(OLD))
    report = session.execute(plans.allinone(kata()), master.context(settings), dry_run=False)
    failed = [r for r in report.steps if r.status is Status.FAIL]
    assert [r.name for r in failed] == ["preflight"], render_plan(report.steps)
    detail = failed[0].detail
    assert "KataPrefix" in detail, detail
    assert "did not install it" in detail or "not to a tree of ours" in detail, detail
    assert master.runner.mutations == 0 and master.snapshot() == before


def test_an_in_place_unpack_killed_before_its_manifest_is_still_ours(master):
    install(master)
    make_in_place(master)
    master.p(MANIFEST).unlink()  # the old unpack wrote it last
    upgrade(master, release=OLD)
    assert active(master) == f"kata-versions/{OLD}" and release_of(master) == OLD
    assert os.listdir(master.p("/opt/kata-versions")) == [OLD]


def test_a_wrong_kata_checksum_stops_the_upgrade_before_the_drain(master):
    """The new tarball is downloaded and verified first (upgrade-downloads): a
    mirror's rebuild or a mistyped --checksum fails with the node untouched,
    not after kubeadm upgraded it and the drain emptied it."""
    install(master)
    before = master.runner.mutations
    recorded = master.settings(kata_version=OLD, checksums=sums(OLD))
    ctx = master.context(recorded)
    settings, _ = upgrading.target_settings(recorded, ctx, None, NEW, {"kata": "0" * 64})
    ctx = master.context(settings)
    report = session.execute(plans.upgrade(ctx.runtime), ctx, dry_run=False)
    failed = [step for step in report.steps if step.status is Status.FAIL]
    assert [step.name for step in failed] == ["upgrade-downloads"], render_plan(report.steps)
    assert "sha256" in failed[0].detail
    assert master.runner.mutations == before, "a command ran before the download was verified"
    assert release_of(master) == OLD and shim_runs(master)


def test_the_downloads_step_is_a_no_op_once_the_tree_is_in_place(master):
    install(master)
    report = upgrade(master)
    assert "upgrade-downloads" in changed(report)
    again = upgrade(master)
    step = next(s for s in again.steps if s.name == "upgrade-downloads")
    assert step.status is Status.OK, step.detail


def test_a_rebuilt_tarball_of_the_same_release_is_unpacked_beside_the_tree_in_use(
    master, monkeypatch
):
    """A mirror's rebuild (same release, another sha256, given with --checksum)
    goes into a tree of its own and is switched to; the tree in use is never
    written, and is removed once the node is Ready."""
    install(master)
    url = (
        "https://github.com/kata-containers/kata-containers/releases/download/"
        f"{OLD}/kata-static-{OLD}-amd64.tar.zst"
    )
    rebuilt = kata_tarball(version=OLD, extra=[("file", "./opt/kata/bin/rebuilt", "")])
    master.downloader.replace[url] = rebuilt
    digest = hashlib.sha256(rebuilt).hexdigest()
    old_tree = f"/opt/kata-versions/{OLD}"
    written: List[str] = []
    real_install = host_module.Host.install_file

    def install_file(self: host_module.Host, source: Any, target: str, mode: int) -> Any:
        written.append(target)
        return real_install(self, source, target, mode)

    monkeypatch.setattr(host_module.Host, "install_file", install_file)
    settings = master.settings(kata_version=OLD, checksums={"kata": digest})
    report = session.execute(plans.allinone(kata()), master.context(settings), dry_run=False)
    session.raise_for(report)
    new_tree = f"{old_tree}+{digest[:12]}"
    assert active(master) == f"kata-versions/{OLD}+{digest[:12]}"
    assert written and all(path.startswith(new_tree + "/") for path in written), written
    assert master.p(f"{new_tree}/bin/rebuilt").is_file()
    assert not master.p(old_tree).exists()
    assert os.readlink(master.p(SHIM)) == ENTRY_SHIM and release_of(master) == OLD
    manifest = json.loads(master.p(MANIFEST).read_text())
    assert list(manifest["trees"]) == [new_tree]
    assert manifest["trees"][new_tree]["sha256"] == digest
    again = session.execute(plans.allinone(kata()), master.context(settings), dry_run=False)
    assert changed(again) == set(), render_plan(again.steps)
