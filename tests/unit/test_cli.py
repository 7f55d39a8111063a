"""The CLI through typer's CliRunner, against the simulated host."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from frakti_install import cli, session
from frakti_install.errors import ExitCode
from tests.unit.simhost import SimMachine, given_checksums

runner = CliRunner()


@pytest.fixture
def sim(tmp_path, monkeypatch):
    """Point the CLI at a simulated Debian 12 host; returns (machine, config path)."""
    holder = {}

    def use(os_id="debian", version="12", **kwargs):
        m = SimMachine(tmp_path / "root", os_id, version, **kwargs)

        def new_context(settings, downloader_factory=None):
            return m.context(settings)

        monkeypatch.setattr(session, "new_context", new_context)
        config = tmp_path / "frakti.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "checksums": given_checksums(os_id),
                    "log_file": str(tmp_path / "install.log"),
                    "lock_wait": 0,
                }
            )
        )
        holder.update(machine=m, config=str(config))
        return m, str(config)

    return use


def invoke(*args: str, env=None):
    return runner.invoke(cli.app, list(args), env=env)


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    assert "allinone" in result.output and "info" in result.output


def test_info_json_on_unsupported_os_still_works(sim):
    m, _ = sim()
    m.runner.write("/etc/os-release", 'ID=arch\nNAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\n')
    result = invoke("info", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["os"] == {
        "id": "arch",
        "version": "",
        "family": None,
        "supported": False,
        "name": "Arch Linux",
    }
    assert data["cgroup_version"] == 1 and data["virtualization"]["kvm_usable"] is True
    assert data["versions"]["frakti"] == "v1.12.0"


def test_allinone_refuses_unsupported_os_with_exit_4(sim):
    m, config = sim()
    m.runner.write("/etc/os-release", 'ID=arch\nNAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\n')
    result = invoke("allinone", "--yes", "-c", config)
    assert result.exit_code == ExitCode.UNSUPPORTED_OS, result.output
    assert "Arch Linux (ID='arch'" in result.output and "Supported systems:" in result.output
    assert not m.p("/etc/hyper").exists() and m.runner.mutations == 0


def test_node_takes_every_setting_allinone_gives_a_node():
    """One option list: node has allinone's settings, less the master's own."""

    def options(command: str) -> set:
        text = invoke(command, "--help", env={"COLUMNS": "200"}).output
        return {word.rstrip(",") for word in text.split() if word.startswith("--")}

    assert options("allinone") - options("node") == {"--advertise-address"}
    for flag in ("--kubernetes-version", "--key-fingerprint", "--allow-unverified"):
        assert flag in options("node")


def test_dry_run_json_is_the_plan_and_changes_nothing(sim):
    m, config = sim()
    result = invoke("allinone", "--dry-run", "--json", "-c", config)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["os"]["family"] == "debian" and plan["os"]["supported"] is True
    statuses = {s["name"]: s["status"] for s in plan["steps"]}
    assert statuses["preflight"] == "ok" and statuses["hyperd"] == "change"
    assert statuses["selinux"] == "skip"
    assert all(s["detail"] for s in plan["steps"])
    assert m.runner.mutations == 0 and not m.p("/var/lib/frakti-install").exists()


def test_bad_cidr_exits_3_with_hint(sim):
    _, config = sim()
    result = invoke("allinone", "--dry-run", "-c", config, "--node-subnet", "10.99.1.0/24")
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert "--node-subnet: 10.99.1.0/24 is not inside pod_cidr 10.244.0.0/16" in result.output


def test_without_yes_and_no_terminal_nothing_changes(sim):
    m, config = sim()
    result = invoke("allinone", "-c", config)
    assert result.exit_code == ExitCode.ABORTED, result.output
    assert "--yes" in result.output and m.runner.mutations == 0


def test_install_then_rerun_reports_no_change(sim):
    m, config = sim()
    first = invoke("allinone", "--yes", "--json", "-c", config)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["changed"] is True
    second = invoke("allinone", "--yes", "--json", "-c", config)
    assert second.exit_code == 0, second.output
    report = json.loads(second.output)
    assert report["changed"] is False
    assert {s["status"] for s in report["steps"]} <= {"ok", "skip"}
    text = invoke("allinone", "--yes", "-c", config)
    assert "Nothing to change" in text.output


def test_preflight_failure_exits_5(sim):
    _, config = sim(swap=True)
    result = invoke("allinone", "--yes", "-c", config)
    assert result.exit_code == ExitCode.PREFLIGHT, result.output
    assert "[Swap]" in result.output


def test_concurrent_run_is_locked_out(sim):
    m, config = sim()
    from frakti_install.state import RunLock

    with RunLock(m.p("/var/lib/frakti-install/lock")):
        started = time.monotonic()
        result = invoke("allinone", "--yes", "-c", config)
        assert result.exit_code == ExitCode.LOCKED, result.output
        assert "another frakti-install run" in result.output
        waited = time.monotonic() - started
        with_wait = invoke("allinone", "--yes", "-c", config, env={"FRAKTI_INSTALL_LOCK_WAIT": "1"})
        assert with_wait.exit_code == ExitCode.LOCKED, with_wait.output
        assert time.monotonic() - started - waited >= 1, "it did not wait for the lock"
    # free again: the next run goes ahead
    assert invoke("allinone", "--yes", "-c", config).exit_code == 0


def test_checksum_mismatch_exits_8(sim):
    m, config = sim()
    path = Path(config)
    data = yaml.safe_load(path.read_text())
    data["checksums"]["frakti"] = "0" * 64
    path.write_text(yaml.safe_dump(data))
    result = invoke("allinone", "--yes", "-c", config)
    assert result.exit_code == ExitCode.CHECKSUM, result.output
    assert "sha256 mismatch" in result.output and not m.p("/usr/bin/frakti").exists()


def test_status_exits_11_on_drift_and_0_when_converged(sim):
    m, config = sim()
    bare = invoke("status", "-c", config, "--json")  # nothing to check yet (test_bare_host.py)
    assert bare.exit_code == ExitCode.NOT_INSTALLED, bare.output
    assert m.runner.mutations == 0
    assert invoke("allinone", "--yes", "-c", config).exit_code == 0
    converged = invoke("status", "-c", config, "--json")
    assert converged.exit_code == 0, converged.output
    assert {s["status"] for s in json.loads(converged.output)["steps"]} <= {"ok", "skip"}
    m.p("/etc/cni/net.d/10-mynet.conf").unlink()
    again = invoke("status", "-c", config)
    assert again.exit_code == ExitCode.DRIFT and "drift in: pod-network" in again.output


def test_reset_asks_dry_runs_and_undoes(sim):
    m, config = sim()
    assert invoke("allinone", "--yes", "-c", config).exit_code == 0
    assert invoke("reset", "-c", config).exit_code == ExitCode.ABORTED  # no terminal, no --yes
    dry = invoke("reset", "--dry-run", "--json", "-c", config)
    assert dry.exit_code == 0 and m.p("/usr/bin/frakti").exists()
    done = invoke("reset", "--yes", "--purge", "-c", config)
    assert done.exit_code == 0, done.output
    assert not m.p("/usr/bin/frakti").exists() and "docker.io" not in m.state.packages


def test_kata_dry_run_on_a_cgroup_v2_host(tmp_path, monkeypatch):
    from tests.unit.simkata import KataSimMachine, kata_checksums

    m = KataSimMachine(tmp_path / "root", "ubuntu", "24.04", cgroup=2)
    monkeypatch.setattr(session, "new_context", lambda s, downloader_factory=None: m.context(s))
    config = tmp_path / "kata.yaml"
    config.write_text(yaml.safe_dump({"checksums": kata_checksums()}))
    result = invoke("allinone", "--runtime", "kata", "--dry-run", "--json", "-c", str(config))
    assert result.exit_code == 0, result.output
    names = [s["name"] for s in json.loads(result.output)["steps"]]
    assert "containerd" in names and "runtimeclass" in names and "hyperd" not in names
    frakti = invoke("allinone", "--dry-run", "--json", "-c", str(config))
    assert frakti.exit_code == ExitCode.PREFLIGHT  # frakti's kubelets need cgroup v1
    assert "CgroupV1" in frakti.stdout
    join = ["--join", "10.0.0.9:6443", "--token", "abcdef.0123456789abcdef"]
    join += ["--discovery-token-ca-cert-hash", "sha256:" + "ab" * 32]
    worker = invoke("node", "--runtime", "kata", *join, "--dry-run", "--json", "-c", str(config))
    assert worker.exit_code == 0, worker.output
    names = [s["name"] for s in json.loads(worker.output)["steps"]]
    assert "kubeadm-join" in names and "containerd" in names
    assert "kubeadm-init" not in names and "runtimeclass" not in names
    assert "abcdef.0123456789abcdef" not in worker.output


def test_download_progress_shares_the_step_display(tmp_path):
    from frakti_install import console
    from frakti_install.config import Settings
    from frakti_install.download import Progress

    display = console.StepProgress(dry_run=False)
    with display:
        downloader = console.downloader_factory(Settings(cache_dir=str(tmp_path)), display)()
        downloader.on_progress(Progress("http://m/kubelet", "kubelet", 0, 2_000_000))
        assert [t.description for t in display.progress.tasks] == [
            "    download kubelet: 0.0 of 2.0 MB"
        ]
        downloader.on_progress(Progress("http://m/kubelet", "kubelet", 2_000_000, 2_000_000))
        assert display.progress.tasks == []


def test_first_allinone_prints_the_join_line_and_reruns_do_not(sim):
    m, config = sim()
    first = invoke("allinone", "--yes", "-c", config)
    assert first.exit_code == 0, first.output
    line = next(x for x in first.output.splitlines() if "frakti-install node" in x)
    # the token goes in the environment of the command the line runs, not its argv
    assert line.startswith("FRAKTI_INSTALL_JOIN_TOKEN=") and "--token" not in line
    assert "--join 10.0.0.1:6443 " in line and "sha256:" in line
    token = line.split()[0].split("=", 1)[1]
    assert token in m.state.cluster.tokens
    log = Path(yaml.safe_load(Path(config).read_text())["log_file"]).read_text()
    assert token not in log
    again = invoke("allinone", "--yes", "-c", config)
    assert "frakti-install join-command" in again.output and "--token" not in again.output


def test_routes_on_a_converged_host_leaves_no_trace_and_a_repair_is_recorded(sim, tmp_path):
    # `routes` runs from a timer every few minutes: a run with nothing to do
    # must not grow the journal or the log file; one that repairs must.
    m, config = sim()
    assert invoke("allinone", "--yes", "-c", config).exit_code == 0
    journal = m.p("/var/lib/frakti-install/journal.jsonl")
    log = tmp_path / "install.log"
    before = (journal.read_text(), log.read_text())

    quiet = invoke("routes", "--json", "-c", config)
    assert quiet.exit_code == 0, quiet.output
    report = json.loads(quiet.output)
    assert report["changed"] is False and report["dry_run"] is False
    assert (journal.read_text(), log.read_text()) == before

    silent = invoke("routes", "--quiet", "-c", config)  # as the timer runs it
    assert silent.exit_code == 0 and silent.output == "", silent.output

    m.p("/etc/cni/net.d/10-mynet.conf").unlink()  # what kubeadm reset does (upstream #154)
    repair = invoke("routes", "--json", "-c", config)
    assert repair.exit_code == 0, repair.output
    assert json.loads(repair.output)["changed"] is True
    assert m.p("/etc/cni/net.d/10-mynet.conf").exists()
    added = journal.read_text()[len(before[0]) :]
    assert '"event": "run-start"' in added and "10-mynet.conf" in added
    assert len(log.read_text()) > len(before[1])
    m.p("/etc/cni/net.d/10-mynet.conf").unlink()
    told = invoke("routes", "--quiet", "-c", config)  # a repair is reported, even when quiet
    assert told.exit_code == 0 and "10-mynet.conf" in told.output, told.output


def test_commands_about_the_install_read_the_settings_it_recorded(sim, tmp_path):
    m, config = sim()
    defaults = Path(config).read_text()
    custom = tmp_path / "custom.yaml"
    custom.write_text(defaults + "pod_cidr: 10.32.0.0/16\nservice_cidr: 10.112.0.0/12\n")
    assert invoke("allinone", "--yes", "-c", str(custom)).exit_code == 0

    # Without -c: judged by what was installed, not by the defaults.
    status = invoke("status", "--json")
    assert status.exit_code == 0, status.output
    routes = invoke("routes", "--json")
    assert routes.exit_code == 0 and json.loads(routes.output)["changed"] is False, routes.output
    # With the defaults (what it judged by before), the install looks wrong.
    other = invoke("status", "--json", "-c", config)
    assert other.exit_code != 0
    assert "initialised with pod CIDR 10.32.0.0/16, not 10.244.0.0/16" in other.output


def test_kata_reset_without_config_tears_down_on_containerds_socket(tmp_path, monkeypatch):
    from tests.unit.simkata import KataSimMachine, kata_checksums

    m = KataSimMachine(tmp_path / "root", "debian", "12")
    monkeypatch.setattr(session, "new_context", lambda s, downloader_factory=None: m.context(s))
    config = tmp_path / "kata.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runtime": "kata",
                "checksums": kata_checksums(),
                "log_file": str(tmp_path / "install.log"),
                "lock_wait": 0,
            }
        )
    )
    assert invoke("allinone", "--yes", "-c", str(config)).exit_code == 0
    result = invoke("reset", "--yes")  # no -c: the recorded settings say kata
    assert result.exit_code == 0, result.output
    resets = [argv for argv in m.runner.calls if argv[:2] == ["kubeadm", "reset"]]
    assert resets and all(
        "--cri-socket=unix:///run/containerd/containerd.sock" in argv for argv in resets
    ), resets


def test_join_command_with_a_config_file_names_the_installed_runtime(tmp_path, monkeypatch):
    # allinone --runtime kata -c FILE: FILE does not say kata, the record does
    from tests.unit.simkata import KataSimMachine, kata_checksums

    m = KataSimMachine(tmp_path / "root", "debian", "12")
    monkeypatch.setattr(session, "new_context", lambda s, downloader_factory=None: m.context(s))
    config = tmp_path / "site.yaml"
    config.write_text(
        yaml.safe_dump(
            {"checksums": kata_checksums(), "log_file": str(tmp_path / "i.log"), "lock_wait": 0}
        )
    )
    installed = invoke("allinone", "--runtime", "kata", "--yes", "-c", str(config))
    assert installed.exit_code == 0, installed.output
    line = invoke("join-command", "-c", str(config))
    assert line.exit_code == 0, line.output
    assert " frakti-install node --yes --runtime kata --join " in line.output
    # a file that names a runtime is taken at its word
    named = tmp_path / "named.yaml"
    named.write_text(config.read_text() + "runtime: frakti\n")
    assert session.installed_settings(named).runtime == "frakti"
    assert session.installed_settings(config).runtime == "kata"
