"""The kata runtime profile (containerd + Kata Containers on current Kubernetes)
against simulated hosts of every kata system: golden plans, apply and no-op
re-run, crash and resume, the user's containerd settings, cgroup drivers,
verified downloads, the RuntimeClass, preflight and profile fit."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from frakti_install import joining, plans, runtimes, session
from frakti_install.engine import Status
from frakti_install.errors import ConfigError, PreflightFailed, UnsupportedOS
from frakti_install.steps import kata as kata_step
from frakti_install.steps.containerd import dig, edit_main_config, release
from frakti_install.steps.preflight import Preflight, Role, missing_checksums
from frakti_install.tarsafe import UnsafeArchive
from tests.unit.simhost import Killed, SimCluster, kata
from tests.unit.simkata import (
    CONFIG,
    KATA_SYSTEMS,
    KATA_URL,
    KEY_URL,
    KUBERNETES_KEY,
    KataSimMachine,
    kata_tarball,
    signing_key,
    tomllib,
)
from tests.unit.test_allinone_sim import render_plan

GOLDEN = Path(__file__).parent.parent / "golden" / "kata"
DROP_IN = "/etc/containerd/conf.d/90-frakti-install.toml"
GLOB = "/etc/containerd/conf.d/*.toml"
IDS = [f"{i}-{v}" for i, v in KATA_SYSTEMS]
CRI = ("plugins", "io.containerd.grpc.v1.cri")
RUNC_OPTIONS = (*CRI, "containerd", "runtimes", "runc", "options")
RUNTIMES_V3 = ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes")
CONTAINERD_16 = release((1, 6, 20))
CONTAINERD_21 = release((2, 1, 9))
CONTAINERD_23 = release((2, 3, 0))
MIRROR_CONFIG = """version = 2

# my registry mirror
[plugins."io.containerd.grpc.v1.cri".registry]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["https://mirror.example.com"]
"""


@pytest.fixture
def machine(tmp_path: Path) -> Callable[..., KataSimMachine]:
    def make(os_id: str = "debian", version: str = "12", **kwargs: Any) -> KataSimMachine:
        return KataSimMachine(tmp_path / f"{os_id}-{version}", os_id, version, **kwargs)

    return make


def apply(m: KataSimMachine, **settings: Any) -> session.Report:
    report = session.execute(
        plans.allinone(kata()), m.context(m.settings(**settings)), dry_run=False
    )
    session.raise_for(report)
    return report


def run_once(m: KataSimMachine, **settings: Any) -> session.Report:
    """Apply, leaving failures in the report."""
    return session.execute(
        plans.allinone(kata()), m.context(m.settings(**settings)), dry_run=False
    )


def effective(m: KataSimMachine) -> dict:
    """What containerd would make of its files now (the sim's `config dump`)."""
    config, error = m.kata.effective_config()
    assert config is not None, error
    return config


def starts(m: KataSimMachine) -> dict:
    return {unit: state.starts for unit, state in m.state.units.items()}


# --- the plan, applied ----------------------------------------------------------
@pytest.mark.parametrize("os_id,version", KATA_SYSTEMS, ids=IDS)
def test_fresh_plan_matches_golden(machine, os_id, version):
    m = machine(os_id, version)
    report = session.execute(plans.allinone(kata()), m.context(m.settings()), dry_run=True)
    text = render_plan(report.steps)
    golden = GOLDEN / f"{os_id}-{version}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"kata plan for {os_id} {version} changed:\n{text}"
    assert m.runner.mutations == 0 and not m.p("/etc/containerd").exists()


@pytest.mark.parametrize("os_id,version", KATA_SYSTEMS, ids=IDS)
def test_apply_then_rerun_changes_nothing(machine, os_id, version):
    m = machine(os_id, version)
    first = apply(m)
    expected = {
        "kernel",
        "kubernetes-repo",
        "containerd-package",
        "containerd",
        "kata",
        "kubernetes",
        "kubelet",
        "kubeadm-init",
        "pod-network",
        "untaint",
        "settings",
        "routes-sync",
        "runtimeclass",
    }
    if os_id not in ("debian", "ubuntu"):
        expected |= {"selinux", "repos"}  # EL9: containerd.io from Docker's signed repo
    assert {r.name for r in first.steps if r.status is Status.CHANGE} == expected, render_plan(
        first.steps
    )
    # the running containerd has read the files as they are now
    assert m.kata.containerd_loaded == effective(m)
    before, mutations, started = m.snapshot(), m.runner.mutations, starts(m)

    second = apply(m)

    for result in second.steps:
        assert result.status in (Status.OK, Status.SKIP), render_plan(second.steps)
        assert result.detail, f"{result.name} gives no reason for doing nothing"
    assert m.runner.mutations == mutations, "the re-run ran a changing command"
    assert starts(m) == started
    assert m.snapshot() == before


@pytest.mark.parametrize("os_id,version", [("debian", "12"), ("rocky", "9.3")])
def test_killed_at_every_command_then_rerun_converges(machine, tmp_path, os_id, version):
    reference = machine(os_id, version)
    apply(reference)
    total, expected = reference.runner.mutations, reference.snapshot()
    assert total > 15
    for kill_at in range(total):
        m = KataSimMachine(tmp_path / f"kill-{kill_at}", os_id, version)
        m.runner.kill_at = kill_at
        with pytest.raises(Killed):
            apply(m)
        m.runner.kill_at = None
        apply(m)
        assert m.snapshot() == expected, f"killed at command {kill_at}"
        assert m.kata.containerd_loaded == effective(m), f"stale containerd, killed at {kill_at}"


# --- containerd: the user's settings, the drop-in, restarts --------------------
def test_users_registry_mirror_survives_in_file_and_in_effect(machine):
    m = machine("ubuntu", "24.04")
    m.runner.write(CONFIG, MIRROR_CONFIG, 0o640)
    apply(m)
    after = m.p(CONFIG).read_text()
    added = f'imports = ["{GLOB}"]\n'
    assert after.replace(added, "", 1) == MIRROR_CONFIG, after
    assert after.index(added) == after.index("version = 2\n") + len("version = 2\n")
    assert oct(m.p(CONFIG).stat().st_mode & 0o777) == oct(0o640)
    journal = [
        json.loads(line)
        for line in m.p("/var/lib/frakti-install/journal.jsonl").read_text().splitlines()
    ]
    write = next(e for e in journal if e.get("event") == "file" and e.get("path") == CONFIG)
    assert m.p(write["backup"]).read_text() == MIRROR_CONFIG
    # containerd 1.x would let the drop-in's CRI section replace the user's:
    # the mirror must still be in the configuration containerd runs with
    mirrors = m.kata.containerd_loaded["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert mirrors["mirrors"]["docker.io"]["endpoint"] == ["https://mirror.example.com"]
    runtimes = m.kata.containerd_loaded["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    assert runtimes["runtimes"]["kata"]["runtime_type"] == "io.containerd.kata.v2"
    assert runtimes["default_runtime_name"] == "runc"
    rerun = next(r for r in run_once(m).steps if r.name == "containerd")
    assert f"CRI settings of {CONFIG} carried over" in rerun.detail


def test_users_runc_options_are_merged_not_duplicated(machine):
    m = machine()
    m.runner.write(
        CONFIG,
        'version = 2\n\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        '  BinaryName = "/usr/local/bin/crun"\n  SystemdCgroup = false\n',
    )
    apply(m)
    drop_in = m.p(DROP_IN).read_text()
    tomllib.loads(drop_in)  # a table defined twice would not parse
    assert drop_in.count("runtimes.runc.options]") == 1
    options = dig(tomllib.loads(drop_in), RUNC_OPTIONS)
    assert options == {"BinaryName": "/usr/local/bin/crun", "SystemdCgroup": True}
    runc = m.kata.containerd_loaded["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    assert runc["runtimes"]["runc"]["options"] == {
        "SystemdCgroup": True,
        "BinaryName": "/usr/local/bin/crun",
    }


def test_docker_containerd_io_config_gets_cri_back_and_keeps_the_rest(machine):
    m = machine("almalinux", "9.4")
    apply(m)
    text = m.p(CONFIG).read_text()
    assert "disabled_plugins = []" in text and '"cri"' not in text
    assert text.startswith("#   Copyright 2018-2022 Docker Inc.")
    assert '#[grpc]\n#  address = "/run/containerd/containerd.sock"' in text
    # containerd.io is 2.x: its config (no version) becomes version 3, the drop-in too
    assert text.index("version = 3") < text.index("imports = [") < text.index("disabled_plugins")
    assert m.p(DROP_IN).read_text().count("\nversion = 3\n") == 1
    assert m.kata.cri_enabled() and len(m.state.inits) == 1
    kata_runtime = dig(m.kata.containerd_loaded, (*RUNTIMES_V3, "kata", "runtime_type"))
    assert kata_runtime == "io.containerd.kata.v2"


def test_user_config_change_restarts_containerd_only_and_is_carried_over(machine):
    m = machine()
    apply(m)
    started = starts(m)
    m.runner.write(CONFIG, m.p(CONFIG).read_text() + MIRROR_CONFIG.split("\n", 1)[1])
    report = apply(m)
    changed = {r.name: r.changes for r in report.steps if r.status is Status.CHANGE}
    assert list(changed) == ["containerd"], render_plan(report.steps)
    assert changed["containerd"][0] == f"update {DROP_IN}"
    assert changed["containerd"][1].startswith("restart containerd (its configuration changed)")
    after = starts(m)
    assert after["containerd.service"] == started["containerd.service"] + 1
    assert after["kubelet.service"] == started["kubelet.service"]
    assert "mirror.example.com" in m.p(DROP_IN).read_text()


def test_a_drop_in_put_back_restarts_the_containerd_that_runs_without_it(machine):
    """Someone removed the kata handler and restarted containerd: the files then
    differ from what frakti-install last restarted it with, though what it
    writes back equals that record. Found by the booted verify test: allinone
    restored the drop-in and left containerd running without the handler."""
    m = machine()
    apply(m)
    drop_in = m.p(DROP_IN).read_text()
    m.runner.write(DROP_IN, drop_in.replace("kata", "katx"))
    m.runner(["systemctl", "restart", "containerd.service"], None, None, None)
    assert "kata" not in dig(m.kata.containerd_loaded, (*CRI, "containerd", "runtimes"))
    started = starts(m)

    report = apply(m)

    changed = {r.name: r.changes for r in report.steps if r.status is Status.CHANGE}
    assert list(changed) == ["containerd"], render_plan(report.steps)
    assert changed["containerd"][1].startswith("restart containerd"), changed["containerd"]
    assert m.p(DROP_IN).read_text() == drop_in
    assert starts(m)["containerd.service"] == started["containerd.service"] + 1
    assert m.kata.containerd_loaded == effective(m)


def test_killed_between_writing_and_restarting_still_restarts(machine):
    m = machine("rocky", "9.3")  # containerd.io 2.x: the drop-in repeats nothing
    apply(m)
    mirror = '\n[plugins."io.containerd.cri.v1.images".registry]\n  config_path = "/certs.d"\n'
    m.runner.write(CONFIG, m.p(CONFIG).read_text() + mirror)
    drop_in = m.p(DROP_IN).read_text()
    m.runner.kill_at = m.runner.mutations  # the containerd step's first command: its restart
    with pytest.raises(Killed, match="systemctl restart containerd.service"):
        apply(m)
    assert m.p(DROP_IN).read_text() == drop_in
    assert "registry" not in m.kata.containerd_loaded["plugins"]["io.containerd.cri.v1.images"]
    m.runner.kill_at = None
    apply(m)
    assert m.kata.containerd_loaded == effective(m)
    images = m.kata.containerd_loaded["plugins"]["io.containerd.cri.v1.images"]
    assert images["registry"] == {"config_path": "/certs.d"}


@pytest.mark.parametrize(
    "settings,driver,systemd_cgroup",
    [({}, "systemd", True), ({"cgroup_driver": "cgroupfs"}, "cgroupfs", False)],
    ids=["auto-on-cgroup-v2", "cgroupfs"],
)
def test_systemd_cgroup_follows_the_cgroup_driver(machine, settings, driver, systemd_cgroup):
    m = machine("ubuntu", "22.04")
    apply(m, **settings)
    runc = m.kata.containerd_loaded["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    assert runc["runtimes"]["runc"]["options"]["SystemdCgroup"] is systemd_cgroup
    assert f"--cgroup-driver={driver}" in m.p("/etc/default/kubelet").read_text()


def test_changed_cgroup_driver_restarts_containerd_and_kubelet_only(machine):
    m = machine()
    apply(m)
    started = starts(m)
    report = apply(m, cgroup_driver="cgroupfs")
    changed = {r.name: r.changes for r in report.steps if r.status is Status.CHANGE}
    assert list(changed) == ["containerd", "kubelet", "settings"]
    # the record of the install's settings follows; nothing restarts for it
    assert changed["settings"] == ["update /var/lib/frakti-install/settings.yaml"]
    after = starts(m)
    assert after["containerd.service"] == started["containerd.service"] + 1
    assert after["kubelet.service"] == started["kubelet.service"] + 1
    runc = m.kata.containerd_loaded["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
    assert runc["runtimes"]["runc"]["options"]["SystemdCgroup"] is False


def test_cri_file_read_after_the_drop_in_is_refused(machine):
    m = machine()
    m.runner.write(
        "/etc/containerd/conf.d/99-late.toml",
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/x"\n',
    )
    report = run_once(m)
    failed = next(r for r in report.steps if r.status is Status.FAIL)
    assert failed.name == "containerd" and isinstance(failed.error, ConfigError)
    assert "99-late.toml sets the CRI plugin and is read after" in failed.detail


def test_cri_file_read_before_the_drop_in_is_carried_over(machine):
    m = machine()
    m.runner.write(
        "/etc/containerd/conf.d/50-mine.toml",
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/certs.d"\n',
    )
    apply(m)
    cri = m.kata.containerd_loaded["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"] == {"config_path": "/certs.d"}
    assert "CRI settings of /etc/containerd/conf.d/50-mine.toml" in m.p(DROP_IN).read_text()


EDITS = [
    pytest.param(
        'version = 2\nimports = ["/etc/a.toml"]\n',
        f'version = 2\nimports = ["/etc/a.toml", "{GLOB}"]\n',
        [f"append {GLOB} to imports"],
        id="append-one-line",
    ),
    pytest.param(
        'version = 2\nimports = [\n  "/etc/a.toml",  # mine\n]\n',
        f'version = 2\nimports = [\n  "/etc/a.toml",  # mine\n  "{GLOB}",\n]\n',
        [f"append {GLOB} to imports"],
        id="append-multi-line",
    ),
    pytest.param(
        "version = 2\nimports = []\n",
        f'version = 2\nimports = ["{GLOB}"]\n',
        [f"append {GLOB} to imports"],
        id="empty-list",
    ),
    pytest.param(
        f'version = 2 # v2\nimports = ["{GLOB}"]\n[grpc]\n  uid = 0\n',
        f'version = 2 # v2\nimports = ["{GLOB}"]\n[grpc]\n  uid = 0\n',
        [],
        id="already-there",
    ),
    pytest.param(
        '# mine\nroot = "/data/containerd"\n\n[grpc]\n  gid = 5\n',
        f'# mine\nversion = 2\nimports = ["{GLOB}"]\nroot = "/data/containerd"\n\n[grpc]\n'
        "  gid = 5\n",
        ["set version = 2", "add the imports line"],
        id="version-1-without-plugins",
    ),
    pytest.param(
        'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri", "x"]\n',
        f'version = 2\nimports = ["{GLOB}"]\ndisabled_plugins = ["x"]\n',
        [
            "add the imports line",
            "enable the CRI plugin (remove io.containerd.grpc.v1.cri from disabled_plugins)",
        ],
        id="cri-disabled",
    ),
]


@pytest.mark.parametrize("before,after,done", EDITS)
def test_main_config_edits_are_targeted(before, after, done):
    edited = edit_main_config(before, GLOB, CONTAINERD_16)
    assert (edited.text, list(edited.done)) == (after, done)
    again = edit_main_config(after, GLOB, CONTAINERD_16)
    assert (again.text, again.done) == (after, ())  # and idempotent
    tomllib.loads(after)


def test_imports_given_as_one_string_becomes_a_valid_list():
    # toml_text's line-based edit turned this into invalid TOML (imports = "/etc/x/*.toml", ...)
    text = 'version = 2\nimports = "/etc/x/*.toml" # mine\n'
    edited = edit_main_config(text, GLOB, CONTAINERD_16)
    assert tomllib.loads(edited.text)["imports"] == ["/etc/x/*.toml", GLOB]
    assert edited.imports == ("/etc/x/*.toml", GLOB)
    assert "make imports a list" in edited.done[0]


@pytest.mark.parametrize(
    "found,before,version",
    [
        (CONTAINERD_16, None, 2),
        (CONTAINERD_21, None, 3),
        (CONTAINERD_23, None, 4),
        (CONTAINERD_21, "# mine\n", 3),
        (CONTAINERD_21, "version = 2\n", 2),  # kept: the drop-in follows it
        (CONTAINERD_23, "version = 3\n", 3),
    ],
)
def test_the_config_version_follows_the_release_and_the_users_file(found, before, version):
    edited = edit_main_config(before, GLOB, found)
    assert edited.config_version == version
    assert tomllib.loads(edited.text)["version"] == version


@pytest.mark.parametrize(
    "text,found,message",
    [
        ("[plugins.cri]\n  sandbox_image = 'x'\n", CONTAINERD_16, "version 1 config"),
        ("version = 3\n", CONTAINERD_16, "containerd 1.6.20 reads config versions up to 2"),
        ("version = 4\n", CONTAINERD_21, "containerd 2.1.9 reads config versions up to 3"),
        ("version = '2'\n", CONTAINERD_16, "wants a number"),
        ("version = 2\n[plugins\n", CONTAINERD_16, "is not valid TOML"),
        ("version = 2\nimports = 3\n", CONTAINERD_16, "not a list of file names"),
    ],
)
def test_main_configs_that_cannot_be_edited_safely_are_refused(text, found, message):
    with pytest.raises(ConfigError, match=message):
        edit_main_config(text, GLOB, found)


# --- kata: verified, safely unpacked ------------------------------------------
def test_corrupted_kata_tarball_stops_before_installing(machine):
    m = machine()
    m.downloader.corrupt.add(KATA_URL)
    report = run_once(m)
    failed = [r for r in report.steps if r.status is Status.FAIL]
    assert [r.name for r in failed] == ["kata"] and "sha256 mismatch" in failed[0].detail
    assert report.steps[-1].name == "kata", "the run must stop at the failed step"
    assert not m.p("/opt/kata").exists()
    assert not m.p("/usr/local/bin/containerd-shim-kata-v2").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (("file", "./etc/cron.d/evil", "x"), "is outside ./opt/kata"),
        (("file", "./opt/kata/../../etc/evil", "x"), "leaves the tree"),
        (("link", "./opt/kata/bin/evil", "/etc/shadow"), "points outside /opt/kata"),
        (("link", "./opt/kata/up", "../../etc"), "points outside /opt/kata"),
        (("fifo", "./opt/kata/bin/pipe", ""), "neither a file, a directory nor a link"),
        (("hardlink", "./opt/kata/bin/hard", "etc/passwd"), "neither a file"),
    ],
    ids=["outside", "dotdot", "abs-link", "rel-link", "fifo", "hardlink"],
)
def test_unsafe_kata_tarball_installs_nothing(machine, extra, message):
    m = machine()
    evil = kata_tarball([extra])
    m.downloader.replace[KATA_URL] = evil
    import hashlib

    report = run_once(m, checksums={"kata": hashlib.sha256(evil).hexdigest()})
    failed = next(r for r in report.steps if r.status is Status.FAIL)
    assert failed.name == "kata" and isinstance(failed.error, UnsafeArchive)
    assert message in failed.detail
    assert not m.p("/opt/kata").exists() and not m.p("/etc/cron.d/evil").exists()


def test_files_below_a_link_in_the_tarball_are_refused(machine):
    m = machine()
    evil = kata_tarball([("link", "./opt/kata/lib", "share"), ("file", "./opt/kata/lib/x", "x")])
    m.downloader.replace[KATA_URL] = evil
    import hashlib

    report = run_once(m, checksums={"kata": hashlib.sha256(evil).hexdigest()})
    assert "lies below the link /opt/kata/lib" in report.steps[-1].detail


def test_kata_tree_and_shim(machine):
    m = machine("rhel", "9.4")
    apply(m)
    assert os.readlink(m.p("/usr/local/bin/containerd-shim-kata-v2")) == (
        "/opt/kata/frakti-install/containerd-shim-kata-v2"
    )
    # the entry links, relative inside the tree, reach the Go shim and its config
    entry = m.p("/opt/kata-versions/3.32.0/frakti-install")
    assert os.readlink(entry / "containerd-shim-kata-v2") == "../bin/containerd-shim-kata-v2"
    assert os.readlink(entry / "configuration.toml") == (
        "../share/defaults/kata-containers/configuration-qemu.toml"
    )
    assert m.kata.resolve("/usr/local/bin/containerd-shim-kata-v2").samefile(
        m.p("/opt/kata-versions/3.32.0/bin/containerd-shim-kata-v2")
    )
    config = m.p("/opt/kata/share/defaults/kata-containers/configuration.toml")
    assert os.readlink(config) == "configuration-qemu.toml" and config.is_file()
    assert m.p("/opt/kata/bin/kata-runtime").stat().st_mode & 0o777 == 0o755
    # a file changed under /opt/kata is put back; nothing else is rewritten
    journal = m.p("/var/lib/frakti-install/journal.jsonl")
    seen = len(journal.read_text().splitlines())
    m.p("/opt/kata/bin/kata-runtime").write_text("tampered\n")
    report = apply(m)
    assert [r.name for r in report.steps if r.status is Status.CHANGE] == ["kata"]
    assert "kata 3.32.0" in m.p("/opt/kata/bin/kata-runtime").read_text()
    written = [
        entry["path"]
        for entry in map(json.loads, journal.read_text().splitlines()[seen:])
        if entry.get("event") == "file"
    ]
    assert written == [
        "/opt/kata-versions/3.32.0/bin/kata-runtime", "/var/lib/frakti-install/kata-files.json"
    ]


# --- Kubernetes packages ------------------------------------------------------
def test_deb_packages_are_signed_pinned_and_held(machine):
    m = machine("ubuntu", "22.04")
    apply(m)
    listing = m.p("/etc/apt/sources.list.d/kubernetes.list").read_text()
    assert (
        "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] "
        "https://pkgs.k8s.io/core:/stable:/v1.35/deb/ /" in listing
    )
    keyring = m.p("/etc/apt/keyrings/kubernetes-apt-keyring.gpg")
    assert keyring.read_bytes().startswith(b"\x99") and keyring.stat().st_mode & 0o777 == 0o644
    assert {m.state.packages[p] for p in ("kubelet", "kubeadm", "kubectl")} == {"1.35.9-1.1"}
    assert m.kata.holds == ["kubelet", "kubeadm", "kubectl"]
    assert not any(call[0] == "apt-key" for call in m.runner.calls)
    assert KEY_URL in m.downloader.fetched


def test_rpm_packages_are_held_by_the_exclude_line(machine):
    m = machine("rocky", "9.3")
    apply(m)
    repo = m.p("/etc/yum.repos.d/kubernetes.repo").read_text()
    assert "gpgcheck=1\n" in repo
    assert "gpgkey=https://pkgs.k8s.io/core:/stable:/v1.35/rpm/repodata/repomd.xml.key\n" in repo
    assert "exclude=kubelet kubeadm kubectl cri-tools kubernetes-cni\n" in repo
    install = next(c for c in m.runner.calls if "kubeadm-1.35.9" in c)
    assert "--disableexcludes=kubernetes" in install
    assert m.state.packages["kubelet"].startswith("1.35.9-")


def test_signing_key_with_another_fingerprint_is_not_installed(machine):
    m = machine()
    m.downloader.replace[KEY_URL] = signing_key("0123456789ABCDEF0123456789ABCDEF01234567")
    report = run_once(m)
    failed = report.steps[-1]
    assert failed.name == "kubernetes-repo" and failed.status is Status.FAIL
    assert "holds key(s) 0123456789ABCDEF0123456789ABCDEF01234567, not DE15B1" in failed.detail
    assert not m.p("/etc/apt/keyrings/kubernetes-apt-keyring.gpg").exists()


def test_an_expired_signing_key_is_not_installed(machine):
    """pkgs.k8s.io's v1.24-v1.27 key expired 2024-11-02 with the fingerprint
    unchanged (kubernetes/kubernetes#128609): the fingerprint alone is not enough."""
    m = machine()
    m.downloader.replace[KEY_URL] = signing_key(expires=1730505600)  # 2024-11-02
    report = run_once(m)
    failed = report.steps[-1]
    assert failed.name == "kubernetes-repo" and failed.status is Status.FAIL
    assert f"key {KUBERNETES_KEY} expired on 2024-11-02" in failed.detail
    assert not m.p("/etc/apt/keyrings/kubernetes-apt-keyring.gpg").exists()


def test_a_mirror_signing_with_its_own_key_is_trusted_when_told(machine):
    mirror_key = "0123456789ABCDEF0123456789ABCDEF01234567"
    m = machine()
    m.downloader.replace[KEY_URL] = signing_key(mirror_key)
    spaced = " ".join(mirror_key[i : i + 4] for i in range(0, 40, 4)).lower()
    apply(m, key_fingerprints={"kubernetes-apt-key": spaced})
    assert m.p("/etc/apt/keyrings/kubernetes-apt-keyring.gpg").exists()
    # trusting another key is another keyring: installed again
    m.downloader.replace[KEY_URL] = signing_key()
    report = run_once(m)
    repo = next(r for r in report.steps if r.name == "kubernetes-repo")
    assert any("check its fingerprint" in change for change in repo.changes), repo


def test_key_fingerprints_setting_is_validated(machine):
    m = machine()
    with pytest.raises(ConfigError, match="is not a signing key"):
        m.settings(key_fingerprints={"kata": "A" * 40})
    with pytest.raises(ConfigError, match="is not 40 hex digits"):
        m.settings(key_fingerprints={"kubernetes-apt-key": "XYZ"})


def test_node_ip_and_advertise_address_reach_kubelet_and_kubeadm(machine):
    m = machine()
    apply(m, node_ip="10.0.0.1", advertise_address="10.0.0.1")
    assert "--node-ip=10.0.0.1" in m.p("/etc/default/kubelet").read_text()
    assert "--apiserver-advertise-address=10.0.0.1" in m.state.inits[0]


def test_kubernetes_version_setting_picks_the_minor_repo(machine):
    m = machine("ubuntu", "24.04")
    report = session.execute(
        plans.allinone(kata()),
        m.context(m.settings(kubernetes_version="v1.36.2")),
        dry_run=True,
    )
    plan = render_plan(report.steps)
    # 1.31+ kubeadm reads kubeadm.k8s.io/v1beta4
    assert "kubelet=1.36.2-1.1" in plan and "kubeadm.k8s.io/v1beta4: " in plan
    assert "Kubernetes v1.36.2" in plan
    with pytest.raises(ConfigError, match="older than the package repositories"):
        m.context(m.settings(kubernetes_version="v1.12.10")).runtime  # noqa: B018


# --- the RuntimeClass and a kata pod ------------------------------------------
def test_runtime_class_exists_and_a_kata_pod_is_admitted(machine):
    m = machine()
    report = apply(m)
    assert m.kata.runtime_classes["kata"]["handler"] == "kata"
    admitted = next(r for r in report.steps if r.name == "kata-pod")
    assert admitted.status is Status.OK and "admitted with the RuntimeClass's overhead" in (
        admitted.detail
    )
    dry_runs = [c for c in m.runner.calls if "--dry-run=server" in c]
    assert dry_runs and "runtimeClassName: kata" in (m.runner.last_input or "")
    # deleted behind our back: the next run puts it back
    del m.kata.runtime_classes["kata"]
    report = apply(m)
    assert [r.name for r in report.steps if r.status is Status.CHANGE] == ["runtimeclass"]


def test_runtime_class_with_another_handler_is_refused(machine):
    m = machine()
    apply(m)
    m.kata.runtime_classes["kata"]["handler"] = "kata-qemu"
    report = run_once(m)
    failed = report.steps[-1]
    assert failed.name == "runtimeclass" and isinstance(failed.error, ConfigError)
    assert "exists with handler 'kata-qemu'" in failed.detail


def test_a_rejected_kata_pod_fails_the_run(machine, monkeypatch):
    m = machine()
    apply(m)
    monkeypatch.setattr(kata_step, "ADMISSION_TIMEOUT", 0.0)
    m.kata.runtime_classes["kata"].pop("overhead")  # the apply puts it back ...
    monkeypatch.setattr(kata_step.RuntimeClass, "check", lambda self, ctx: kata_step.Check.ok("x"))
    report = run_once(m)  # ... unless the step is skipped: then no overhead, no proof
    failed = report.steps[-1]
    assert failed.name == "kata-pod" and failed.status is Status.FAIL
    assert "RuntimeClass kata was not applied to it" in failed.detail


# --- preflight and profile fit --------------------------------------------------
def test_kernel_without_vhost_modules_is_refused_unless_ignored(machine):
    m = machine()
    m.runner.kernel_modules -= {"vhost_vsock", "vhost_net"}
    with pytest.raises(PreflightFailed, match=r"\[VhostModules\] the kernel has no vhost_vsock"):
        Preflight().check(m.context())
    apply(m, ignore_preflight_errors=("VhostModules",))  # the cluster, without kata VMs
    assert not any(call[0] == "modprobe" and "vhost" in call[-1] for call in m.runner.calls)


def test_no_kvm_is_fatal_and_says_kata_pods_cannot_start(machine):
    m = machine(cpu_flags="fpu sse")
    with pytest.raises(PreflightFailed) as info:
        Preflight().check(m.context(m.settings()))
    assert "[KVM] the CPU shows no vmx/svm flag: Kata pods cannot start on this host" in str(
        info.value
    )
    assert "--ignore-preflight-errors KVM" in str(info.value)
    check = Preflight().check(m.context(m.settings(ignore_preflight_errors=("KVM",))))
    assert "warnings: [KVM]" in check.reason


def test_cgroup_v2_passes_and_frakti_checks_do_not_apply(machine):
    check = Preflight().check(machine("debian", "12", cgroup=2).context())
    assert check.reason == "17 checks passed"
    names = {c.name for c in kata_step.KATA_CHECKS}
    assert "CgroupV1" not in names and "CgroupDriver" not in names


def test_missing_kata_checksum_is_named(machine):
    """A release with no pinned sum (4.1.0) needs --checksum; the default does not."""
    m = machine()
    assert not missing_checksums(m.context(m.settings(checksums={"kata": ""})))
    with pytest.raises(PreflightFailed, match=r"\[Checksums\] no sha256 given for kata"):
        Preflight().check(m.context(m.settings(checksums={"kata": ""}, kata_version="4.1.0")))


def test_frakti_profile_leftovers_are_refused(machine):
    m = machine()
    m.runner.write("/lib/systemd/system/frakti.service", "[Unit]\n")
    with pytest.raises(PreflightFailed, match=r"\[FraktiProfile\] .*frakti.service"):
        Preflight().check(m.context(m.settings()))


def test_systems_without_the_kata_profile_exit_unsupported(machine):
    m = machine("ubuntu", "20.04")
    report = run_once(m)
    assert isinstance(report.steps[0].error, UnsupportedOS) and len(report.steps) == 1
    assert "not supported by the kata runtime profile" in report.steps[0].detail


@pytest.mark.parametrize(
    "kwargs,recommended,why",
    [
        ({"cgroup": 1}, "frakti", "cgroup v1 and amd64: frakti's kubelet runs here"),
        (
            {},
            "kata",
            "cgroup v2: frakti's kubelets (Kubernetes 1.12 and older) cannot run; /dev/kvm usable",
        ),
        ({"cpu_flags": "fpu sse"}, "none", "kata: no vmx/svm CPU flag: Kata VMs cannot start"),
    ],
    ids=["frakti", "kata", "none"],
)
def test_profile_fit(machine, kwargs, recommended, why):
    fit = runtimes.profile_fit(machine(**kwargs).context().facts)
    assert fit["recommended"] == recommended and why in fit["why"], fit


def test_profile_fit_names_kata_unsupported_systems(machine):
    fit = runtimes.profile_fit(machine("centos", "7").context().facts)
    assert "CentOS Linux 7 (Core) is not a kata system" in fit["kata"]


def test_a_kata_worker_joins_a_kata_master_on_containerd(tmp_path: Path) -> None:
    shared = SimCluster()
    master = KataSimMachine(
        tmp_path / "master", "debian", "12", hostname="master", ip="10.0.0.1", cluster=shared
    )
    apply(master, runtime="kata")
    line = joining.create_join_line(master.context(master.settings(runtime="kata")))
    assert " --runtime kata " in line.command()

    worker = KataSimMachine(
        tmp_path / "worker", "ubuntu", "24.04", hostname="worker", ip="10.0.0.2", cluster=shared
    )
    join = dict(
        runtime="kata", join_endpoint=line.endpoint, join_token=line.token,
        join_ca_hash=line.ca_hash,
    )  # fmt: skip
    report = session.execute(
        plans.node(kata()), worker.context(worker.settings(**join)), dry_run=False
    )
    session.raise_for(report)
    ran = {r.name for r in report.steps}
    assert {"kubeadm-join", "containerd", "kata"} <= ran
    assert not {"kubeadm-init", "untaint", "runtimeclass", "kata-pod"} & ran
    [joined] = worker.state.inits
    assert joined[:2] == ["kubeadm", "join"]
    assert "--cri-socket=/run/containerd/containerd.sock" in joined  # the sim drops unix://
    assert not worker.p("/etc/kubernetes/admin.conf").exists()
    assert shared.node("worker")["spec"]["podCIDR"] == "10.244.1.0/24"
    mynet = json.loads(worker.p("/etc/cni/net.d/10-mynet.conf").read_text())
    assert mynet["ipam"]["subnet"] == "10.244.1.0/24"
    assert worker.state.routes == {"10.244.0.0/24": "10.0.0.1"}

    again = session.execute(
        plans.node(kata()), worker.context(worker.settings(**join)), dry_run=False
    )
    assert {r.status for r in again.steps} <= {Status.OK, Status.SKIP}, render_plan(again.steps)


def test_a_kata_workers_preflight_leaves_the_control_plane_ports_alone(machine) -> None:
    m = machine()
    m.state.other_listeners.add(6443)  # say, another API server's port on this host
    m.kata._refresh_ports()
    worker = Preflight(Role.WORKER).check(m.context(m.settings()))
    assert "6443" not in worker.reason
    with pytest.raises(PreflightFailed, match="6443"):
        Preflight().check(m.context(m.settings()))
