"""Commands about an install, on a host where none is (or one stopped half-way),
and runs as a user who is not root: each is told at once, with its own code."""

from __future__ import annotations

import time

import pytest

from frakti_install.errors import ExitCode
from tests.unit.simhost import Killed
from tests.unit.test_cli import invoke, sim  # noqa: F401  (the fixture)

QUICK = 5.0  # seconds: an answer, not a wait (routes used to wait 300 s for a subnet)


def timed(*args: str):
    started = time.monotonic()
    result = invoke(*args)
    return result, time.monotonic() - started


def said(result) -> str:
    return " ".join(result.output.split())  # rich folds long lines


@pytest.mark.parametrize(
    "command",
    [("status",), ("status", "--json"), ("routes",), ("routes", "--dry-run"), ("join-command",)],
)
def test_a_bare_host_is_told_nothing_is_installed(sim, command):  # noqa: F811
    m, config = sim()
    before = m.snapshot()
    result, seconds = timed(*command, "-c", config)
    assert result.exit_code == ExitCode.NOT_INSTALLED, result.output
    assert "nothing installed here" in said(result) and "Traceback" not in result.output
    assert "frakti-install allinone" in said(result)  # what to do instead
    assert seconds < QUICK and m.runner.mutations == 0 and m.snapshot() == before


def _killed_at_kubeadm_init(m, config) -> None:
    """allinone killed (as kill -9 would) when it starts kubeadm init."""
    real = m.runner.cmd_kubeadm

    def kubeadm(argv):
        if argv[1] == "init":
            raise Killed(" ".join(argv))
        return real(argv)

    m.runner.cmd_kubeadm = kubeadm
    with pytest.raises(Killed):
        invoke("allinone", "--yes", "-c", config)
    m.runner.cmd_kubeadm = real


@pytest.mark.parametrize("command", [("status",), ("routes",), ("join-command",)])
def test_an_install_killed_before_kubeadm_init_lists_the_steps_not_done(sim, command):  # noqa: F811
    m, config = sim()
    _killed_at_kubeadm_init(m, config)
    assert not m.p("/var/lib/frakti-install/settings.yaml").exists()
    result, seconds = timed(*command, "-c", config)
    assert result.exit_code == ExitCode.INCOMPLETE, result.output
    text = said(result)
    assert "did not finish" in text and "kubeadm-init" in text and "settings" in text
    assert "preflight," not in text.split("not done yet:")[1]  # preflight was done
    assert "Run the same install command again" in text
    assert seconds < QUICK


def test_status_after_the_settings_record_checks_the_steps(sim):  # noqa: F811
    m, config = sim()
    assert invoke("allinone", "--yes", "-c", config).exit_code == 0
    assert invoke("status", "-c", config).exit_code == 0
    result = invoke("status")  # the recorded settings, not the defaults
    assert result.exit_code == 0, result.output


def test_join_command_on_a_worker_says_it_is_one(sim):  # noqa: F811
    m, config = sim()
    m.runner.write("/etc/kubernetes/kubelet.conf", "kubeconfig\n", 0o600)
    result = invoke("join-command", "-c", config)
    assert result.exit_code == ExitCode.NOT_INSTALLED, result.output
    assert "this host is a worker, not the master" in said(result)


def test_reset_undoes_an_unfinished_install(sim):  # noqa: F811
    m, config = sim()
    _killed_at_kubeadm_init(m, config)
    result = invoke("reset", "--yes", "-c", config)
    assert result.exit_code == 0, result.output
    after = invoke("status", "-c", config)
    assert after.exit_code == ExitCode.NOT_INSTALLED, after.output


# --- not root --------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        ("allinone", "--yes"),
        ("node", "--yes", "--join", "10.0.0.9:6443", "--token", "abcdef.0123456789abcdef",
         "--discovery-token-ca-cert-hash", "sha256:" + "a" * 64),
        ("reset", "--yes"),
        ("routes",),
    ],
)  # fmt: skip
def test_a_command_that_changes_the_host_asks_for_root_first(sim, command):  # noqa: F811
    m, config = sim()
    m.runner.euid = 1000
    before = m.snapshot()
    result = invoke(*command, "-c", config)
    assert result.exit_code == ExitCode.NOT_ROOT, result.output
    assert f"run as root: sudo frakti-install {command[0]}" in said(result)
    assert "Traceback" not in result.output and "abcdef.0123456789abcdef" not in result.output
    # before its lock, its journal and its log: nothing of ours on the host
    assert not m.p("/var/lib/frakti-install").exists()
    assert m.runner.mutations == 0 and m.snapshot() == before


def test_a_dry_run_as_another_user_shows_the_plan_and_why_root_is_needed(sim):  # noqa: F811
    m, config = sim()
    m.runner.euid = 1000
    result = invoke("allinone", "--dry-run", "-c", config)
    assert result.exit_code == ExitCode.PREFLIGHT, result.output
    assert "[Root] running as uid 1000, not root" in said(result)
    assert "kubeadm-init" in said(result)  # the rest of the plan is shown
    assert m.runner.mutations == 0


def test_an_unreadable_file_as_another_user_asks_for_root(sim, monkeypatch):  # noqa: F811
    from frakti_install import cli, session

    m, config = sim()

    def unreadable(config_file):
        raise PermissionError(13, "Permission denied", "/var/lib/frakti-install/settings.yaml")

    monkeypatch.setattr(session, "installed_settings", unreadable)
    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
    result = invoke("status")
    assert result.exit_code == ExitCode.NOT_ROOT, result.output
    assert "run as root" in said(result) and "settings.yaml: Permission denied" in said(result)
    assert "internal error" not in result.output


# --- a bug's message points to its traceback where it is ---------------------------
def test_an_internal_error_names_the_log_only_when_the_traceback_is_in_it(
    sim, tmp_path, monkeypatch  # noqa: F811
):
    from frakti_install import inspect, plans

    m, config = sim()

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(inspect, "host_info", bug)  # info writes no log file
    result = invoke("info")
    assert result.exit_code == ExitCode.INTERNAL
    assert "the traceback is above" in said(result) and "frakti-install.log" not in said(result)
    assert "Traceback" in result.output and "RuntimeError: a bug" in result.output

    monkeypatch.setattr(plans, "allinone", bug)  # a run writes its log file first
    result = invoke("allinone", "--yes", "-c", config)
    log = tmp_path / "install.log"
    assert result.exit_code == ExitCode.INTERNAL
    assert f"the traceback is in {log}" in said(result)
    assert "RuntimeError: a bug" in log.read_text() and "Traceback" in log.read_text()
