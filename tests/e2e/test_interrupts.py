"""On a booted Debian 12 host, Ctrl-C typed in a real terminal (tmux
send-keys C-c) during a package install and during kubeadm init: the run
exits 12 with no apt, dpkg or kubeadm left running, and the next run
converges. Two interrupted runs and one full install."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

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
# The step of the frakti plan whose command is the target, and how long into
# it to press Ctrl-C (apt-get is then unpacking; kubeadm init is waiting).
TARGETS = (("hyperd", 2.0), ("kubeadm-init", 2.0))
LEFT_RUNNING = ("apt-get", "dpkg", "kubeadm")


def pane_exit(machine: testbed.Machine) -> Optional[int]:
    """How the command the tmux pane ran ended, once it has: its exit status, or
    128 + the signal that killed it (as a shell reports it)."""
    shown = machine.run(
        ["tmux", "display-message", "-p", "-t", SESSION,
         "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}"]
    ).stdout.strip()  # fmt: skip
    dead, status, signal = (shown.split(":") + ["", "", ""])[:3]
    assert dead in ("0", "1"), f"tmux does not show the pane: {shown!r}"
    if dead == "0" or not (status or signal):
        return None  # seen here: the pane shows dead a moment before its status
    return int(status) if status else 128 + int(signal)


def ctrl_c_during(machine: testbed.Machine, step: str, delay: float) -> int:
    """Start allinone in a tmux terminal, press Ctrl-C `delay` s into `step`;
    its exit code.

    The installer is the pane's own command, as when typed at an interactive
    shell (which ignores SIGINT). Not `sh -c 'frakti-install ...; echo $?'`:
    dash dies of the SIGINT at once, tmux closes the pane, and the hang-up that
    follows kills the installer while it waits for apt."""
    journal = machine.path(JOURNAL)
    offset = journal.stat().st_size if journal.exists() else 0
    machine.run(
        ["tmux", "new-session", "-d", "-s", SESSION, "-x", "200", "-y", "50",
         "frakti-install", "allinone", "--yes", "--config", CONFIG_PATH,
         ";", "set-option", "-w", "-t", SESSION, "remain-on-exit", "on"]
    )  # fmt: skip
    started = time.monotonic()
    while step not in journal_steps(journal, offset):
        assert time.monotonic() - started < INSTALL_TIMEOUT, f"step {step} never started"
        assert pane_exit(machine) is None, f"the run ended before step {step}"
        time.sleep(0.1)
    time.sleep(delay)
    machine.run(["tmux", "send-keys", "-t", SESSION, "C-c"])
    while (code := pane_exit(machine)) is None:
        assert time.monotonic() - started < INSTALL_TIMEOUT, "the interrupted run never ended"
        time.sleep(0.2)
    # the moment the installer exited, nothing it started runs on
    for name in LEFT_RUNNING:
        left = machine.run(["pgrep", "-a", "-x", name], check=False).stdout.strip()
        assert not left, f"{name} still runs after the interrupted run: {left}"
    machine.run(["tmux", "kill-server"], check=False)
    return code


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
