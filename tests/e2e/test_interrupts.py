"""On a booted Debian 12 host, Ctrl-C typed in a real terminal (tmux
send-keys C-c) during a package install and during kubeadm init: the run
exits 12 with no apt, dpkg or kubeadm left running, and the next run
converges. Two interrupted runs and one full install."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest
import testbed
from test_allinone import (
    CONFIG_PATH,
    INSTALL_TIMEOUT,
    JOURNAL,
    check_converged,
    describe,
    installed_host,
    journal_steps,
    make_config,
    run_installer,
)

pytestmark = pytest.mark.e2e

ABORTED = 12
SESSION = "frakti"
EXIT_FILE = "/root/interrupted.exit"
# The step of the frakti plan whose command is the target, and how long into
# it to press Ctrl-C (apt-get is then unpacking; kubeadm init is waiting).
TARGETS = (("hyperd", 2.0), ("kubeadm-init", 2.0))
LEFT_RUNNING = ("apt-get", "dpkg", "kubeadm")


def ctrl_c_during(machine: testbed.Machine, step: str, delay: float) -> int:
    """Start allinone in a tmux terminal, press Ctrl-C `delay` s into `step`;
    its exit code."""
    journal = machine.path(JOURNAL)
    offset = journal.stat().st_size if journal.exists() else 0
    machine.run(["rm", "-f", EXIT_FILE])
    command = (
        f"frakti-install allinone --yes --config {CONFIG_PATH}; echo $? > {EXIT_FILE}"
    )
    machine.run(["tmux", "new-session", "-d", "-s", SESSION, "sh", "-c", command])
    started = time.monotonic()
    while step not in journal_steps(journal, offset):
        assert time.monotonic() - started < INSTALL_TIMEOUT, f"step {step} never started"
        assert not machine.exists(EXIT_FILE), f"the run ended before step {step}"
        time.sleep(0.1)
    time.sleep(delay)
    machine.run(["tmux", "send-keys", "-t", SESSION, "C-c"])
    while not machine.exists(EXIT_FILE):
        assert time.monotonic() - started < INSTALL_TIMEOUT, "the interrupted run never ended"
        time.sleep(0.2)
    # the moment the installer exited, nothing it started runs on
    for name in LEFT_RUNNING:
        left = machine.run(["pgrep", "-a", "-x", name], check=False).stdout.strip()
        assert not left, f"{name} still runs after the interrupted run: {left}"
    machine.run(["tmux", "kill-server"], check=False)
    return int(machine.read(EXIT_FILE).decode().strip())


def test_ctrl_c_in_a_terminal_then_the_next_run_converges(
    request: pytest.FixtureRequest,
    boot_host: Callable[..., testbed.Machine],
    wheelhouse: Path,
    mirror: dict,
) -> None:
    config = make_config(mirror)
    machine = installed_host(request, boot_host, wheelhouse, config, "ctrl-c")
    for step, delay in TARGETS:
        code = ctrl_c_during(machine, step, delay)
        assert code == ABORTED, f"Ctrl-C during {step}: exit {code}, not {ABORTED}"
        # at once: no dpkg lock left behind, no half-configured package
        audit = machine.run(["dpkg", "--audit"], check=False)
        assert not audit.stdout.strip(), f"dpkg --audit after Ctrl-C in {step}:\n{audit.stdout}"
    final = run_installer(machine)
    assert final.returncode == 0, describe(final)
    check_converged(machine, mirror, config, inits=None)
