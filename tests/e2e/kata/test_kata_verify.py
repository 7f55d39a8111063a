"""End-to-end: `frakti-install verify` on a booted Debian 12 host of the kata lab
(FRAKTI_E2E_VERIFY_SUITE=trixie or sid: the same on Debian 13, containerd 1.7,
or sid, containerd 2.x and config version 3; both pass as well).

The host is the kata tests' (test_kata_allinone.boot_kata_host: the bookworm
kata image, cgroup v2, the project installed, the signed stand-in
pkgs.k8s.io repository and the Kata tarball served on 127.0.0.1:8080), set up
with `allinone --runtime kata`. Real: containerd 1.6 and runc (Debian 12's,
installed by the installer), containerd's config merging and restarts. The
stand-in kubelet (standins/kube131.py, its "pods" section) runs the pods bound
to its node as the real one does where verify looks: it resolves the pod's
RuntimeClass to a handler, asks the running containerd's CRI configuration
for that handler (failing the sandbox with containerd's and the kubelet's
own texts when it is missing), and runs the container's command, runc's on
this host, Kata's through the stand-in shim (standins/kata.sh `standin-run`),
whose "guest" has a kernel release and a boot id of its own.

Accommodation of the test bed, not of the product: the guest has no /dev/kvm
and its CPU shows no vmx/svm flag, so verify's KVM check would fail on every
run. fake_kvm gives it a /dev/kvm node (misc minor 232) and, bind-mounted
over /proc/cpuinfo, a copy with the vmx flag added; nothing else reads them
here (the stand-in shim starts no VM).

Shown: on the healthy node verify exits 0 and its JSON says the node
isolates (the canary's boot id and kernel are not the node's, the pod without
a RuntimeClass has the node's boot id), `status --json` carries the same
isolation facts; then one fault at a time, each named by its check with the
documented exit code (20) and a fix, no verify pod left behind, and
`allinone` repairing it: (a) the kata handler removed from containerd's
drop-in and containerd restarted, (b) the RuntimeClass deleted, (c) a shim
that runs the pod on the host's kernel; and a containerd file newer than the
running containerd, a warning (verify still exits 0: its pods decide).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import testbed
from test_kata_allinone import (  # noqa: F401 - kata_mirror: the kata tests' mirror fixture
    ADMIN,
    SHIM,
    boot_kata_host,
    describe,
    kata_mirror,
    make_config,
    ready_kata_image,
    run_installer,
    write_config,
)

pytestmark = pytest.mark.e2e

SUITE = os.environ.get("FRAKTI_E2E_VERIFY_SUITE", "bookworm")
DROP_IN = "/etc/containerd/conf.d/90-frakti-install.toml"
EXIT_UNPROVEN = 20  # README "Exit codes": verify, a node does not run pods in VMs
VERIFY_TIMEOUT = 12  # seconds: a sandbox that never starts costs this much per case
RUN_LABEL = "frakti-install/verify"
HOST_KERNEL_SHIM = """#!/bin/sh
# A broken Kata shim for the verify test: it runs the pod's command on the host.
case "$1" in
standin-run) shift; [ "$1" = "--" ] && shift; exec "$@" ;;
esac
exec /bin/false
"""
READY_AGAIN_TIMEOUT = 60  # s: the stand-in kubelet posts its status every ~2 s


@pytest.fixture(scope="module")
def verify_image(testbed_ready: None, record_timing: Callable[[str, float], None]) -> Path:
    return ready_kata_image(SUITE, record_timing)


def fake_kvm(machine: testbed.Machine) -> None:
    """/dev/kvm and the vmx flag, which the test bed lacks (this module's docstring)."""
    if not machine.exists("/dev/kvm"):
        machine.run(["mknod", "-m", "660", "/dev/kvm", "c", "10", "232"])
    cpuinfo = machine.run(["cat", "/proc/cpuinfo"]).stdout
    if re.search(r"^flags\s*:.*\b(vmx|svm)\b", cpuinfo, re.M):
        return
    flagged = re.sub(r"^(flags\s*:.*)$", r"\1 vmx", cpuinfo, flags=re.M)
    machine.write("/run/standin-cpuinfo", flagged)
    machine.run(["mount", "--bind", "/run/standin-cpuinfo", "/proc/cpuinfo"])


@pytest.fixture(scope="module")
def host(
    request: pytest.FixtureRequest,
    verify_image: Path,
    kata_mirror: Dict[str, object],  # noqa: F811 - the imported fixture
    run_dir: Path,
    wheelhouses: Callable[[str], Path],
    record_timing: Callable[[str, float], None],
) -> testbed.Machine:
    """A kata all-in-one node, installed, with KVM faked."""
    wheelhouse = wheelhouses(testbed.image_python(verify_image))
    machine = boot_kata_host(
        request, "verify", verify_image, kata_mirror, run_dir, wheelhouse, record_timing
    )
    write_config(machine, make_config(kata_mirror, verify_timeout=VERIFY_TIMEOUT))
    fake_kvm(machine)
    started = time.monotonic()
    result = run_installer(machine)
    record_timing("verify host: allinone --runtime kata", time.monotonic() - started)
    assert result.returncode == 0, describe(machine, result)
    return machine


def verify(
    machine: testbed.Machine, record_timing: Callable[[str, float], None], what: str
) -> tuple[subprocess.CompletedProcess[str], Dict[str, Any]]:
    started = time.monotonic()
    result = machine.run(["frakti-install", "verify", "--json"], check=False, timeout=300)
    record_timing(f"verify --json: {what}", time.monotonic() - started)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"verify --json printed no JSON document:\n{describe(machine, result)}")
    return result, report


def checks(report: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    (node,) = report["nodes"]
    return {check["name"]: check for check in node["checks"]}


def verify_pods(machine: testbed.Machine) -> List[str]:
    """The verify pods in the cluster (any run's)."""
    out = machine.run([*ADMIN, "get", "pods", "-n", "default", "-l", RUN_LABEL, "-o", "json"])
    return [pod["metadata"]["name"] for pod in json.loads(out.stdout)["items"]]


def expect_fault(
    machine: testbed.Machine,
    result: subprocess.CompletedProcess[str],
    report: Dict[str, Any],
    failing: Dict[str, str],
) -> None:
    """verify exits 20, the named checks fail (detail matching each pattern) with a fix,
    every other check passes or is a warning, and no verify pod is left."""
    assert result.returncode == EXIT_UNPROVEN, describe(machine, result)
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


def wait_fresh_ready(machine: testbed.Machine, since: float) -> None:
    """Until the kubelet has posted Ready after `since` (wall clock). A containerd
    restart makes a kubelet sync in its window post "container runtime is down"
    (the real kubelet too): verify would then rightly find the node not Ready.
    Seen under load in a full run; a status read at once may still be older."""
    deadline = time.monotonic() + READY_AGAIN_TIMEOUT
    while True:
        node = json.loads(machine.run([*ADMIN, "get", "nodes", "-o", "json"]).stdout)["items"][0]
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        beat = datetime.datetime.fromisoformat(ready["lastHeartbeatTime"].replace("Z", "+00:00"))
        if ready["status"] == "True" and beat.timestamp() > since + 1:  # whole seconds
            return
        assert time.monotonic() < deadline, f"the node is not Ready again: {ready}"
        time.sleep(0.5)


def restart_containerd(machine: testbed.Machine) -> None:
    machine.run(["systemctl", "restart", "containerd"])
    wait_fresh_ready(machine, time.time())


def repair(
    machine: testbed.Machine, record_timing: Callable[[str, float], None], what: str
) -> None:
    started = time.monotonic()
    result = run_installer(machine)  # it may restart containerd
    record_timing(f"allinone repairs {what}", time.monotonic() - started)
    assert result.returncode == 0, describe(machine, result)
    wait_fresh_ready(machine, time.time())


def test_verify_passes_on_the_healthy_node(
    host: testbed.Machine, record_timing: Callable[[str, float], None]
) -> None:
    result, report = verify(host, record_timing, "healthy node")
    assert result.returncode == 0, describe(host, result)
    assert report["ok"] is True and report["runtime"] == "kata", report
    found = checks(report)
    assert {"ready", "kvm", "modules", "handler", "runtimeclass", "vm-pod", "host-pod"} <= set(
        found
    ), sorted(found)
    assert all(check["ok"] is True for check in found.values()), found
    node = json.loads(host.run([*ADMIN, "get", "nodes", "-o", "json"]).stdout)["items"][0]
    info = node["status"]["nodeInfo"]
    host_boot_id = host.read("/proc/sys/kernel/random/boot_id").decode().strip()
    assert info["bootID"] == host_boot_id, info
    vm, on_host = found["vm-pod"], found["host-pod"]
    assert vm["host_boot_id"] == host_boot_id and vm["host_kernel"] == info["kernelVersion"], vm
    assert vm["boot_id"] and vm["boot_id"] != host_boot_id, vm
    assert vm["kernel"] == "6.12.28-153" != info["kernelVersion"], vm  # the tarball's guest kernel
    assert on_host["boot_id"] == host_boot_id and on_host["kernel"] == info["kernelVersion"], (
        on_host
    )
    assert verify_pods(host) == [], "verify left its pods behind"
    human = host.run(["frakti-install", "verify"], check=False, timeout=300)
    assert human.returncode == 0, describe(host, human)
    assert "vm-pod" in human.stdout and "ran in a VM" in human.stdout, human.stdout

    status = host.run(["frakti-install", "status", "--json"], check=False, timeout=300)
    assert status.returncode == 0, describe(host, status)
    isolation = json.loads(status.stdout)["isolation"]
    assert isolation["ok"] is True and isolation["runtime"] == "kata", isolation
    (facts,) = isolation["nodes"]
    names = {check["name"] for check in facts["checks"]}
    assert {"kvm", "modules", "handler", "runtimeclass"} <= names, names
    assert not names & {"vm-pod", "host-pod"}, f"status started pods: {names}"
    assert verify_pods(host) == []


def drop_kata_handler(machine: testbed.Machine) -> None:
    """Remove the kata runtime's tables from containerd's drop-in."""
    text = machine.read(DROP_IN).decode()
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("["):
            dropping = ".runtimes.kata" in line
        if not dropping:
            kept.append(line)
    assert "".join(kept) != text, f"no kata runtime table in {DROP_IN}:\n{text}"
    machine.write(DROP_IN, "".join(kept))


def containerd_pid(machine: testbed.Machine) -> str:
    return machine.unit_props("containerd", "MainPID")["MainPID"]


def test_a_handler_missing_from_containerd(
    host: testbed.Machine, record_timing: Callable[[str, float], None]
) -> None:
    drop_kata_handler(host)
    restart_containerd(host)
    result, report = verify(host, record_timing, "kata handler missing (waits verify_timeout)")
    expect_fault(
        host,
        result,
        report,
        {
            "handler": r"containerd's configuration has no kata handler",
            "vm-pod": r'did not run to the end.*no runtime for "kata" is configured',
        },
    )
    assert checks(report)["host-pod"]["ok"] is True, report
    fix = checks(report)["vm-pod"]["fix"]
    assert "containerd could not make the pod's sandbox" in fix and "verify_image" not in fix, fix
    before = containerd_pid(host)
    repair(host, record_timing, "the containerd drop-in")
    assert containerd_pid(host) != before, "allinone put the drop-in back without a restart"
    result, report = verify(host, record_timing, "after the repair")
    assert result.returncode == 0, describe(host, result)


def test_files_changed_after_containerd_started_are_a_warning(
    host: testbed.Machine, record_timing: Callable[[str, float], None]
) -> None:
    """Without crictl the handler is read from the files: when one changed after
    containerd started, containerd may run without what they say (its pod decides)."""
    time.sleep(1.5)  # the mtime must be clearly after containerd's start
    host.run(["touch", DROP_IN])
    result, report = verify(host, record_timing, "drop-in newer than containerd")
    assert result.returncode == 0, describe(host, result)
    handler = checks(report)["handler"]
    assert handler["ok"] is False and handler["blocking"] is False, handler
    assert f"but {DROP_IN} changed after containerd started" in handler["detail"], handler
    assert handler["fix"] == "systemctl restart containerd.service", handler
    assert checks(report)["vm-pod"]["ok"] is True, report
    restart_containerd(host)
    result, report = verify(host, record_timing, "after restarting containerd")
    assert result.returncode == 0 and checks(report)["handler"]["ok"] is True, report


def test_a_missing_runtimeclass(
    host: testbed.Machine, record_timing: Callable[[str, float], None]
) -> None:
    host.run([*ADMIN, "delete", "runtimeclass", "kata"])
    result, report = verify(host, record_timing, "RuntimeClass deleted")
    expect_fault(
        host,
        result,
        report,
        {
            "runtimeclass": r"there is no RuntimeClass kata",
            "vm-pod": r'refused.*RuntimeClass "kata" not found',
        },
    )
    repair(host, record_timing, "the RuntimeClass")
    result, report = verify(host, record_timing, "after the repair")
    assert result.returncode == 0, describe(host, result)


def test_a_shim_that_runs_pods_on_the_host_kernel(
    host: testbed.Machine, record_timing: Callable[[str, float], None]
) -> None:
    host.write(SHIM, HOST_KERNEL_SHIM, 0o755)
    result, report = verify(host, record_timing, "shim on the host kernel")
    expect_fault(host, result, report, {"vm-pod": r"ran on the host's kernel"})
    vm = checks(report)["vm-pod"]
    assert vm["boot_id"] == vm["host_boot_id"], vm
    assert "containerd-shim-kata-v2 --version" in vm["fix"], vm
    repair(host, record_timing, "the Kata shim")
    result, report = verify(host, record_timing, "after the repair")
    assert result.returncode == 0, describe(host, result)
