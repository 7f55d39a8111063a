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
EXIT_FILE = "/root/frakti-install-exit-status"  # not /run: a tmpfs the test cannot see
# Ctrl-C waits for apt to finish its transaction (tens of seconds here) and
# gives other commands 10 s to exit: this is far more than either.
EXIT_TIMEOUT = 300


def exit_recorded(machine: testbed.Machine) -> Optional[int]:
    """The installer's exit status, once the pane's shell has written it."""
    recorded = machine.path(EXIT_FILE)
    if not recorded.exists():
        return None
    return int(recorded.read_text())  # the shell moved it into place whole


def ctrl_c_during(machine: testbed.Machine, step: str, delay: float) -> int:
    """Start allinone in a tmux terminal, press Ctrl-C `delay` s into `step`;
    its exit code.

    The pane runs bash, which runs the installer in the foreground as a shell
    does: the terminal's SIGINT reaches both, bash waits for the installer and
    goes on only because the installer exited rather than died of the signal
    (dash would die at once, and the pane's hang-up would then kill the
    installer while it waits for apt). bash writes the exit status to a file:
    tmux's own #{pane_dead_status} is not reliable, as seen here tmux 3.3a
    left the exited installer unreaped, its status unknown, for 15 minutes."""
    journal = machine.path(JOURNAL)
    offset = journal.stat().st_size if journal.exists() else 0
    machine.run(["rm", "-f", EXIT_FILE])
    script = (
        f"frakti-install allinone --yes --config {CONFIG_PATH}; "
        f"echo $? > {EXIT_FILE}.part && mv {EXIT_FILE}.part {EXIT_FILE}"
    )
    machine.run(
        ["tmux", "new-session", "-d", "-s", SESSION, "-x", "200", "-y", "50",
         "bash", "-c", script]
    )  # fmt: skip
    started = time.monotonic()
    while step not in journal_steps(journal, offset):
        assert time.monotonic() - started < INSTALL_TIMEOUT, f"step {step} never started"
        assert exit_recorded(machine) is None, f"the run ended before step {step}"
        time.sleep(0.1)
    time.sleep(delay)
    machine.run(["tmux", "send-keys", "-t", SESSION, "C-c"])
    pressed = time.monotonic()
    while (code := exit_recorded(machine)) is None:
        waited = time.monotonic() - pressed
        assert waited < EXIT_TIMEOUT, f"the run had not ended {waited:.0f} s after Ctrl-C"
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
