"""End-to-end: `frakti-install verify` on a booted Debian 12 host of the frakti lab.

One host (conftest.boot_host, the stand-in mirror), set up with `allinone` as
test_allinone.py does. The stand-in kubelet (standins/kube.py, its "pods"
section) runs the pods bound to its node through frakti's socket; the frakti
stand-in (standins/frakti.py) runs privileged pods on the host (docker's
side) and the others "in a hyperd VM": `uname -r` shows the stand-in guest
kernel's release and the boot id is the sandbox's own.

Shown: on the healthy node verify exits 0 and `--json` puts the canary on a
guest kernel and boot id and the privileged pod on the host's; then one fault
at a time, each named with the documented exit code (20) and a fix, no verify
pod left behind, and `allinone` repairing it: (a) hyperd stopped, (b) a frakti
that runs ordinary pods on the host (the stand-in's FRAKTI_STANDIN_PODS_ON_HOST
behind a wrapper in place of /usr/bin/frakti).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import testbed
from test_allinone import ADMIN, describe, installed_host, make_config, run_installer

pytestmark = pytest.mark.e2e

EXIT_UNPROVEN = 20  # README "Exit codes": verify, a node does not run pods in VMs
VERIFY_TIMEOUT = 8  # seconds: a sandbox that never starts costs this much per case
RUN_LABEL = "frakti-install/verify"
GUEST_KERNEL = "4.12.4-hyper"  # standins/frakti.py GUEST_KERNEL
FRAKTI = "/usr/bin/frakti"
ON_HOST_WRAPPER = """#!/bin/sh
# A broken frakti for the verify test: it runs ordinary pods on the host.
FRAKTI_STANDIN_PODS_ON_HOST=1 exec /usr/local/lib/frakti-real "$@"
"""


@pytest.fixture(scope="module")
def host(
    request: pytest.FixtureRequest,
    boot_host: Callable[..., testbed.Machine],
    wheelhouse: Path,
    mirror: dict,
    record_timing: Callable[[str, float], None],
) -> testbed.Machine:
    config = make_config(mirror, verify_timeout=VERIFY_TIMEOUT)
    machine = installed_host(request, boot_host, wheelhouse, config, "verify")
    started = time.monotonic()
    result = run_installer(machine)
    record_timing("verify host: allinone", time.monotonic() - started)
    assert result.returncode == 0, describe(result)
    return machine


def verify(
    machine: testbed.Machine, record_timing: Callable[[str, float], None], what: str
) -> tuple[subprocess.CompletedProcess[str], Dict[str, Any]]:
    started = time.monotonic()
    result = machine.run(["frakti-install", "verify", "--json"], check=False, timeout=300)
    record_timing(f"frakti verify --json: {what}", time.monotonic() - started)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"verify --json printed no JSON document:\n{describe(result)}")
    return result, report


def checks(report: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    (node,) = report["nodes"]
    return {check["name"]: check for check in node["checks"]}


def verify_pods(machine: testbed.Machine) -> List[str]:
    out = machine.run([*ADMIN, "get", "pods", "-n", "default", "-l", RUN_LABEL, "-o", "json"])
    return [pod["metadata"]["name"] for pod in json.loads(out.stdout)["items"]]


def expect_fault(
    machine: testbed.Machine,
    result: subprocess.CompletedProcess[str],
    report: Dict[str, Any],
    failing: Dict[str, str],
) -> None:
    assert result.returncode == EXIT_UNPROVEN, describe(result)
    assert report["ok"] is False and report["nodes"][0]["ok"] is False, report
    found = checks(report)
    for name, pattern in failing.items():
        check = found.get(name)
        assert check is not None and check["ok"] is False, f"{name}: {check}\n{report}"
        assert re.search(pattern, check["detail"]), f"{name}: {check['detail']!r} !~ {pattern!r}"
        assert check.get("fix"), f"{name} fails without a fix: {check}"
    others = {n: c for n, c in found.items() if n not in failing and c["ok"] is False}
    assert all(not c.get("blocking", True) for c in others.values()), others
    assert verify_pods(machine) == [], "verify left its pods behind"
    assert "do not run pods in VMs" in result.stderr, result.stderr[-2000:]


def repair(
    machine: testbed.Machine, record_timing: Callable[[str, float], None], what: str
) -> None:
    started = time.monotonic()
    result = run_installer(machine)
    record_timing(f"allinone repairs {what}", time.monotonic() - started)
    assert result.returncode == 0, describe(result)
    result = machine.run(["frakti-install", "verify", "--json"], check=False, timeout=300)
    assert result.returncode == 0, describe(result)


def test_verify_passes_on_the_healthy_node(
    host: testbed.Machine, record_timing: Callable[[str, float], None]
) -> None:
    result, report = verify(host, record_timing, "healthy node")
    assert result.returncode == 0, describe(result)
    assert report["ok"] is True and report["runtime"] == "frakti", report
    found = checks(report)
    assert {"ready", "vm-pod", "host-pod"} <= set(found), sorted(found)
    assert all(c["ok"] is True or not c.get("blocking", True) for c in found.values()), found
    host_boot_id = host.read("/proc/sys/kernel/random/boot_id").decode().strip()
    host_kernel = host.run(["uname", "-r"]).stdout.strip()
    vm, on_host = found["vm-pod"], found["host-pod"]
    assert vm["ok"] is True and on_host["ok"] is True, found
    assert vm["host_boot_id"] == host_boot_id and vm["host_kernel"] == host_kernel, vm
    assert vm["kernel"] == GUEST_KERNEL != host_kernel, vm
    assert vm["boot_id"] and vm["boot_id"] != host_boot_id, vm
    assert on_host["kernel"] == host_kernel and on_host["boot_id"] == host_boot_id, on_host
    assert verify_pods(host) == [], "verify left its pods behind"
    human = host.run(["frakti-install", "verify"], check=False, timeout=300)
    assert human.returncode == 0 and "ran in a VM" in human.stdout, describe(human)


def test_hyperd_stopped(host: testbed.Machine, record_timing: Callable[[str, float], None]) -> None:
    host.run(["systemctl", "stop", "hyperd"])
    result, report = verify(host, record_timing, "hyperd stopped (waits verify_timeout)")
    expect_fault(
        host,
        result,
        report,
        {
            "grpc": r"nothing listens on port 22318: hyperd's gRPC API is down",
            "vm-pod": r"did not run to the end.*FailedCreatePodSandBox.*code = Unavailable",
        },
    )
    assert "see the checks above" in checks(report)["vm-pod"]["fix"], report
    assert checks(report)["host-pod"]["ok"] is True, report
    repair(host, record_timing, "hyperd stopped")


def test_frakti_running_pods_on_the_host(
    host: testbed.Machine, record_timing: Callable[[str, float], None]
) -> None:
    host.run(["cp", "-p", FRAKTI, "/usr/local/lib/frakti-real"])
    host.write(FRAKTI, ON_HOST_WRAPPER, 0o755)
    host.run(["systemctl", "restart", "frakti"])
    result, report = verify(host, record_timing, "frakti runs pods on the host")
    expect_fault(host, result, report, {"vm-pod": r"ran on the host's kernel"})
    vm = checks(report)["vm-pod"]
    assert vm["boot_id"] == vm["host_boot_id"], vm
    repair(host, record_timing, "the frakti binary")
    assert host.read(FRAKTI) != ON_HOST_WRAPPER.encode(), "allinone left the broken frakti"
