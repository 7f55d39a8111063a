"""Ctrl-C and SIGTERM never leave a command running behind the run, and never
stop a package manager half-way; a package manager's lock held by another
install is waited for up to lock_wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from frakti_install.errors import ExitCode, Locked
from frakti_install.host import Host, PackageGuard, subprocess_runner, terminate_as_interrupt
from frakti_install.packages import manager
from tests.unit.test_cli import invoke, sim  # noqa: F401  (the fixture)

DPKG_LOCK = "/var/lib/dpkg/lock-frontend"
HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process (as apt or unattended-upgrades) holding an fcntl lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """Python's own SIGINT handler for each test: a test run started as a
    background job of a non-interactive shell inherits SIGINT ignored, and
    Python then keeps it ignored, so a Ctrl-C would never arrive."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupt_in(seconds: float, sig: int = signal.SIGINT) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), sig))
    timer.start()
    return timer


# --- the package manager's lock ------------------------------------------------------
def test_apt_waits_for_a_held_dpkg_lock_then_runs(tmp_path):
    calls = []

    def runner(argv, env, input, timeout):
        calls.append((time.monotonic(), list(argv)))
        return subprocess_runner(["true"], None, None, None)

    host = Host(root=tmp_path, runner=runner, package_guard=manager("apt").guard(10))
    holder = hold_lock(tmp_path / DPKG_LOCK.lstrip("/"), 1.0)
    started = time.monotonic()
    host.run(["apt-get", "install", "-y", "socat"])
    holder.wait()
    (ran_at, argv), = calls
    assert ran_at - started >= 0.7, "it ran while the lock was held"
    # apt >= 1.9.11 waits by itself too, for a lock taken between our look and its start
    assert argv == ["apt-get", "install", "-y", "socat", "-o", "Dpkg::Lock::Timeout=10"]
    host.run(["dpkg-query", "-W", "socat"])  # not a package-changing command: no option
    assert calls[-1][1] == ["dpkg-query", "-W", "socat"]


def test_a_lock_held_past_lock_wait_stops_the_run_with_exit_10(sim):  # noqa: F811
    m, config = sim()
    holder = hold_lock(m.p(DPKG_LOCK), 30)
    try:
        started = time.monotonic()
        result = invoke("allinone", "--yes", "-c", config, env={"FRAKTI_INSTALL_LOCK_WAIT": "1"})
        seconds = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == ExitCode.LOCKED, result.output
    text = " ".join(result.output.split())
    assert f"{DPKG_LOCK} was still locked by another process" in text and "after 1 s" in text
    assert "raise lock_wait" in text
    assert 1 <= seconds < 10
    assert not m.state.packages  # nothing was installed past the lock


def test_rpm_systems_wait_for_the_rpm_transaction_lock(tmp_path):
    for name in ("yum", "dnf"):
        guard = manager(name).guard(0.5)
        assert guard.guards([name, "install", "-y", "socat"])
        assert not guard.guards(["rpm", "-q", "socat"])  # a query takes no transaction lock
        host = Host(root=tmp_path, runner=lambda *a: pytest.fail("ran"), package_guard=guard)
        holder = hold_lock(tmp_path / "var/lib/rpm/.rpm.lock", 30)
        try:
            with pytest.raises(Locked, match=r"/var/lib/rpm/\.rpm\.lock was still locked"):
                host.run([name, "install", "-y", "socat"])
        finally:
            holder.kill()
            holder.wait()


# --- Ctrl-C ------------------------------------------------------------------------
def test_ctrl_c_during_a_package_install_lets_it_finish_then_exits_12(sim):  # noqa: F811
    m, config = sim()
    real = m.runner.cmd_apt_get
    finished = []

    def apt_get(argv):
        if argv[1] == "install":
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while apt/dpkg work
            time.sleep(0.05)
            finished.append(argv)
        return real(argv)

    m.runner.cmd_apt_get = apt_get
    result = invoke("allinone", "--yes", "-c", config)
    assert result.exit_code == ExitCode.ABORTED, result.output
    assert "interrupted" in result.output and "waiting for 'apt-get" in result.output
    assert len(finished) == 1 and m.state.packages, "the install was not let finish"
    assert not m.state.inits  # and the run stopped after it


def test_ctrl_c_during_a_command_stops_and_reaps_it_before_going_on(tmp_path):
    pid_file = tmp_path / "pid"
    # a child that takes a moment to exit on SIGINT, as kubeadm cleaning up would
    script = f'echo $$ > {pid_file}; trap "sleep 0.5; exit 130" INT; sleep 30 & wait'
    host = Host(root=tmp_path)
    timer = interrupt_in(0.5)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        host.run(["sh", "-c", script], check=False)
    seconds = time.monotonic() - started
    timer.cancel()
    child = int(pid_file.read_text())
    assert seconds >= 0.9, "it did not wait for the command to exit"
    assert seconds < 8
    with pytest.raises(ProcessLookupError):  # gone and reaped: no zombie, no orphan
        os.kill(child, 0)


def test_a_command_runs_in_its_own_session_so_ctrl_c_reaches_only_us(tmp_path):
    result = Host(root=tmp_path).run(["sh", "-c", "ps -o sid= -p $$; echo $$"])
    session, pid = result.stdout.split()
    assert session == pid and int(session) != os.getsid(0)


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path):
    guard = PackageGuard(commands=frozenset({"sh"}), lock_files=(), wait=0)
    host = Host(root=tmp_path, package_guard=guard)  # sh stands for dpkg here
    marker = tmp_path / "done"
    timer = interrupt_in(0.3, signal.SIGTERM)
    with terminate_as_interrupt(), pytest.raises(KeyboardInterrupt):
        host.run(["sh", "-c", f"sleep 1; touch {marker}"])
    timer.cancel()
    assert marker.exists(), "the package command was stopped half-way"
