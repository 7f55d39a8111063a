"""End-to-end scenarios of `frakti-install allinone` on a booted Debian 12 host.

The installer runs inside the container as a user would run it, offline: apt
installs from the cache baked into the image, everything else comes from the
stand-in mirror served on 127.0.0.1:8080 (see standins/), with the mirror base
URLs and the sums upstream does not publish given in /root/frakti.yaml.

(a) a fresh install converges: services up, files right, one kubeadm init
    with the configured CIDR, node Ready and untainted;
(b) a second run changes nothing and restarts nothing (every step "ok", or
    "skip" where it does not apply to the host);
(c) runs killed with SIGKILL in different steps, then a full run, converge
    to the same state;
(d) a changed node_subnet changes only the CNI config;
(e) hostile hosts fail early with the documented exit code;
(f) a host where hyperd already runs with the packaged config (someone tried
    hyper before) converges too: the changed /etc/hyper/config must be
    applied by a restart.
(a), (b) and (d) share one host, in that order; (c), each case of (e) and (f)
get their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
import testbed

pytestmark = pytest.mark.e2e

CONFIG_PATH = "/root/frakti.yaml"
JOURNAL = "/var/lib/frakti-install/journal.jsonl"
INIT_LOG = "/var/log/standin-kubeadm-init.log"
ADMIN = ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"]
APT_PACKAGES = (
    "docker.io",
    "qemu-system-x86",
    "containernetworking-plugins",
    "socat",
    "conntrack",
    "ebtables",
    "ethtool",
)
SERVICES = ("hyperd", "docker", "frakti", "kubelet", "frakti-routes-sync.timer")
MASTER_TAINT = "node-role.kubernetes.io/master"
RECORDED_SETTINGS = "/var/lib/frakti-install/settings.yaml"  # read by status, routes, reset
# Files the installer owns (or kubeadm writes): a no-op run must leave them alone.
TRACKED_FILES = (
    "/etc/hyper/config",
    "/lib/systemd/system/frakti.service",
    "/lib/systemd/system/kubelet.service",
    "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
    "/etc/default/kubelet",
    "/etc/cni/net.d/10-mynet.conf",
    "/etc/cni/net.d/99-loopback.conf",
    "/usr/bin/frakti",
    "/usr/bin/kubeadm",
    "/usr/bin/kubelet",
    "/usr/bin/kubectl",
    "/usr/bin/crictl",
    "/etc/kubernetes/admin.conf",
    "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/systemd/system/frakti-routes-sync.service",
    "/etc/systemd/system/frakti-routes-sync.timer",
    RECORDED_SETTINGS,
)
EXIT = {
    "ok": 0,
    "config": 3,
    "unsupported_os": 4,
    "preflight": 5,
    "command": 6,
    "download": 7,
    "checksum": 8,
    "verify": 9,
    "locked": 10,
}
INSTALL_TIMEOUT = 900


# --------------------------------------------------------------------------
# helpers


def make_config(mirror: dict, **overrides: object) -> dict:
    url = mirror["url"]
    config: dict = {
        "pod_cidr": "10.244.0.0/16",
        "node_subnet": "10.244.1.0/24",
        "mirrors": {
            "kubernetes": f"{url}/kubernetes",
            "github": f"{url}/github",
            "hyper": f"{url}/hyper",
        },
        "checksums": {
            name: mirror["sha256"][name]
            for name in ("frakti", "crictl", "hypercontainer", "hyperstart")
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            config[key] = {**config.get(key, {}), **value}
        else:
            config[key] = value
    return config


def to_yaml(data: dict, indent: int = 0) -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"{' ' * indent}{key}:")
            lines.append(to_yaml(value, indent + 2).rstrip("\n"))
        else:
            lines.append(f"{' ' * indent}{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def write_config(machine: testbed.Machine, config: dict) -> None:
    machine.write(CONFIG_PATH, to_yaml(config), 0o600)


def installer_argv(*extra: str) -> list[str]:
    return ["frakti-install", "allinone", "--yes", "--config", CONFIG_PATH, *extra]


def run_installer(machine: testbed.Machine, *extra: str) -> subprocess.CompletedProcess[str]:
    return machine.run(installer_argv(*extra), check=False, timeout=INSTALL_TIMEOUT)


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"frakti-install exited {result.returncode}\n"
        f"--- stdout (tail) ---\n{result.stdout[-4000:]}\n"
        f"--- stderr (tail) ---\n{result.stderr[-4000:]}"
    )


def parse_json(result: subprocess.CompletedProcess[str]) -> dict:
    try:
        doc = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"--json output is not one JSON document\n{describe(result)}", pytrace=False)
    assert isinstance(doc.get("steps"), list) and "os" in doc, describe(result)
    for step in doc["steps"]:
        assert {"name", "status", "detail"} <= set(step), f"step without name/status/detail: {step}"
        assert step["status"] in ("ok", "change", "skip", "fail"), step
    return doc


def installed_host(
    request: pytest.FixtureRequest,
    boot_host: Callable[..., testbed.Machine],
    wheelhouse: Path,
    config: dict,
    label: str,
) -> testbed.Machine:
    machine = boot_host(request, label)
    testbed.install_project(machine, wheelhouse)
    write_config(machine, config)
    return machine


def process_argv(machine: testbed.Machine, unit: str) -> list[str]:
    pid = machine.unit_props(unit, "MainPID")["MainPID"]
    argv = [a.decode() for a in machine.read(f"/proc/{pid}/cmdline").split(b"\0") if a]
    if argv and os.path.basename(argv[0]).startswith("python") and len(argv) > 1:
        argv = argv[1:]  # the stand-ins are Python scripts
    return argv


def flag(argv: list[str], name: str, default: str | None = None) -> str | None:
    for i, arg in enumerate(argv):
        bare = arg.lstrip("-").replace("_", "-")
        if arg.startswith("-") and bare.startswith(name + "="):
            return bare.split("=", 1)[1]
        if arg.startswith("-") and bare == name and i + 1 < len(argv):
            return argv[i + 1]
    return default


def init_log(machine: testbed.Machine) -> list[dict]:
    if not machine.exists(INIT_LOG):
        return []
    return [
        json.loads(line) for line in machine.read(INIT_LOG).decode().splitlines() if line.strip()
    ]


def nodes(machine: testbed.Machine) -> list[dict]:
    return json.loads(machine.run([*ADMIN, "get", "nodes", "-o", "json"]).stdout)["items"]


def ready(node: dict) -> str:
    return next(
        (c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"), "missing"
    )


def fingerprint(machine: testbed.Machine) -> dict[str, tuple[str, int, int]]:
    """sha256, mtime and mode of the tracked files and of the sysctl/modules-load drop-ins."""
    paths = list(TRACKED_FILES)
    for d in ("/etc/sysctl.d", "/etc/modules-load.d"):
        paths += [f"{d}/{p.name}" for p in sorted(machine.path(d).glob("*")) if p.is_file()]
    prints = {}
    for p in paths:
        host = machine.path(p)
        if host.is_file():
            st = host.stat()
            prints[p] = (hashlib.sha256(host.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_mode)
    return prints


def service_snapshot(machine: testbed.Machine) -> dict[str, dict[str, str]]:
    props = (
        "MainPID",
        "ActiveEnterTimestampMonotonic",
        "ExecMainStartTimestampMonotonic",
        "NRestarts",
    )
    return {unit: machine.unit_props(unit, *props) for unit in (*SERVICES, "containerd")}


def etc_snapshot(machine: testbed.Machine) -> dict[str, tuple]:
    root = machine.path("/etc")
    snap: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            target = os.readlink(p) if p.is_symlink() else ""
            snap[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, target)
    return snap


def check_converged(
    machine: testbed.Machine, mirror: dict, config: dict, inits: int | None = 1
) -> None:
    """The state a successful `allinone` run must leave; every problem is listed at once."""
    problems: list[str] = []

    def expect(condition: object, message: str) -> None:
        if not condition:
            problems.append(message)

    for unit in SERVICES:
        expect(machine.is_active(unit), f"{unit} is not active")
        enabled = machine.run(["systemctl", "is-enabled", unit], check=False).stdout.strip()
        expect(
            enabled == "enabled",
            f"{unit} is {enabled!r}, not enabled (would not come back after a reboot)",
        )
    for pkg in (*APT_PACKAGES, "hypercontainer", "hyperstart"):
        status = machine.run(["dpkg-query", "-W", "-f=${Status}", pkg], check=False).stdout
        expect(status == "install ok installed", f"package {pkg}: {status or 'not installed'}")
    expect(
        machine.run(["dpkg", "--audit"]).stdout.strip() == "",
        "dpkg --audit reports half-installed packages",
    )

    hyper = {}
    if machine.exists("/etc/hyper/config"):
        for line in machine.read("/etc/hyper/config").decode().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                hyper[key.strip()] = value.strip()
    expect(
        hyper.get("gRPCHost") == "127.0.0.1:22318",
        f"/etc/hyper/config gRPCHost is {hyper.get('gRPCHost')!r}",
    )
    for key in ("Kernel", "Initrd"):
        expect(
            hyper.get(key) and machine.exists(hyper[key]),
            f"/etc/hyper/config {key}={hyper.get(key)!r} missing",
        )
    expect(machine.tcp_open(22318), "hyperd does not serve gRPC on 127.0.0.1:22318")

    for name in ("frakti", "kubeadm", "kubelet", "kubectl"):
        path = machine.path(f"/usr/bin/{name}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"
        expect(
            digest == mirror["sha256"][name], f"/usr/bin/{name} is not the mirror's file ({digest})"
        )
        expect(path.is_file() and os.access(path, os.X_OK), f"/usr/bin/{name} is not executable")
    crictl = machine.run(["/usr/bin/crictl", "--version"], check=False)
    expect(
        crictl.stdout.strip() == f"crictl version {mirror['versions']['crictl']}",
        f"crictl: {crictl}",
    )

    expect(
        machine.exists("/lib/systemd/system/frakti.service"),
        "/lib/systemd/system/frakti.service missing",
    )
    docker_driver = machine.run(
        ["docker", "info", "--format", "{{.CgroupDriver}}"], check=False
    ).stdout.strip()
    if machine.is_active("frakti"):
        argv = process_argv(machine, "frakti")
        expect(
            flag(argv, "listen", "/var/run/frakti.sock") == "/var/run/frakti.sock",
            f"frakti listens: {argv}",
        )
        expect(
            flag(argv, "hyper-endpoint", "127.0.0.1:22318") == "127.0.0.1:22318",
            f"frakti hyperd: {argv}",
        )
        expect(
            flag(argv, "cgroup-driver", "cgroupfs") == docker_driver,
            f"frakti cgroup driver is not docker's ({docker_driver}): {argv}",
        )
        expect(
            flag(argv, "cni-net-dir", "/etc/cni/net.d") == "/etc/cni/net.d",
            f"frakti CNI conf dir: {argv}",
        )
        plugin_dir = flag(argv, "cni-plugin-dir", "/opt/cni/bin")
        for plugin in ("bridge", "host-local", "loopback"):
            expect(
                machine.exists(f"{plugin_dir}/{plugin}"),
                f"CNI plugin {plugin} not in frakti's {plugin_dir}",
            )

    for path in (
        "/lib/systemd/system/kubelet.service",
        "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
    ):
        expect(machine.exists(path), f"{path} missing")
    default = (
        machine.read("/etc/default/kubelet").decode()
        if machine.exists("/etc/default/kubelet")
        else ""
    )
    expect(
        "KUBELET_EXTRA_ARGS" in default,
        f"/etc/default/kubelet has no KUBELET_EXTRA_ARGS: {default!r}",
    )
    if machine.is_active("kubelet"):
        argv = process_argv(machine, "kubelet")
        expect(flag(argv, "container-runtime") == "remote", f"kubelet runtime: {argv}")
        endpoint = (flag(argv, "container-runtime-endpoint") or "").replace("unix://", "")
        expect(endpoint == "/var/run/frakti.sock", f"kubelet runtime endpoint: {argv}")

    cni: dict = {}
    try:
        cni = json.loads(machine.read("/etc/cni/net.d/10-mynet.conf"))
    except (FileNotFoundError, ValueError) as exc:
        problems.append(f"/etc/cni/net.d/10-mynet.conf: {exc}")
    if cni:
        expect(cni.get("type") == "bridge" and cni.get("name"), f"10-mynet.conf: {cni}")
        ipam = cni.get("ipam", {})
        expect(ipam.get("type") == "host-local", f"10-mynet.conf ipam: {ipam}")
        expect(
            ipam.get("subnet") == config["node_subnet"],
            f"10-mynet.conf subnet {ipam.get('subnet')!r}, configured {config['node_subnet']}",
        )
    try:
        loopback = json.loads(machine.read("/etc/cni/net.d/99-loopback.conf"))
        expect(loopback.get("type") == "loopback", f"99-loopback.conf: {loopback}")
    except (FileNotFoundError, ValueError) as exc:
        problems.append(f"/etc/cni/net.d/99-loopback.conf: {exc}")

    expect(
        machine.read("/proc/sys/net/ipv4/ip_forward").strip() == b"1",
        "net.ipv4.ip_forward is not 1",
    )
    sysctl = machine.run(["sh", "-c", "cat /etc/sysctl.d/*.conf 2>/dev/null"], check=False).stdout
    expect(
        re.search(r"^\s*net\.ipv4\.ip_forward\s*=\s*1", sysctl, re.M),
        "no /etc/sysctl.d file sets ip_forward=1",
    )
    modules = machine.run(
        ["sh", "-c", "cat /etc/modules-load.d/*.conf 2>/dev/null"], check=False
    ).stdout
    expect(
        re.search(r"^\s*br_netfilter\s*$", modules, re.M),
        "no /etc/modules-load.d file loads br_netfilter",
    )

    log = init_log(machine)
    if inits is not None:
        expect(len(log) == inits, f"kubeadm init ran {len(log)} times, expected {inits}: {log}")
    expect(
        log and log[-1]["pod_network_cidr"] == config["pod_cidr"],
        f"kubeadm init pod CIDR: {log[-1:]}",
    )
    expect(
        log and log[-1]["cri_socket"].replace("unix://", "") == "/var/run/frakti.sock",
        f"CRI socket: {log[-1:]}",
    )

    deadline = time.monotonic() + 20
    while True:
        listing = machine.run([*ADMIN, "get", "nodes", "-o", "json"], check=False)
        items = json.loads(listing.stdout)["items"] if listing.returncode == 0 else []
        if len(items) == 1 and ready(items[0]) == "True" or time.monotonic() > deadline:
            break
        time.sleep(1)
    expect(listing.returncode == 0, f"kubectl get nodes failed: {listing.stderr.strip()}")
    expect(len(items) == 1, f"expected one node, got {[n['metadata']['name'] for n in items]}")
    for node in items:
        taints = [t["key"] for t in node["spec"].get("taints", [])]
        expect(
            MASTER_TAINT not in taints,
            f"node {node['metadata']['name']} still has the master taint",
        )
        expect(
            ready(node) == "True",
            f"node {node['metadata']['name']} Ready={ready(node)}: {node['status']['conditions']}",
        )
    assert not problems, "host did not converge:\n- " + "\n- ".join(problems)


# --------------------------------------------------------------------------
# (a), (b), (d): one host, installed once


@pytest.fixture(scope="module")
def allinone(
    request: pytest.FixtureRequest,
    boot_host,
    wheelhouse: Path,
    mirror: dict,  # type: ignore[no-untyped-def]
    record_timing,
) -> dict:
    """One host: a dry run first, then the real install; the results for the tests to judge."""
    config = make_config(mirror)
    machine = installed_host(request, boot_host, wheelhouse, config, "allinone")
    etc_before = etc_snapshot(machine)
    started = time.monotonic()
    dry = machine.run(
        ["frakti-install", "allinone", "--json", "--dry-run", "--config", CONFIG_PATH],
        check=False,
        timeout=300,
    )
    record_timing("frakti-install allinone --dry-run", time.monotonic() - started)
    etc_after_dry = etc_snapshot(machine)
    docker_after_dry = machine.run(
        ["dpkg-query", "-W", "-f=${Status}", "docker.io"], check=False
    ).stdout
    started = time.monotonic()
    first = run_installer(machine)
    record_timing("frakti-install allinone, fresh host", time.monotonic() - started)
    return {
        "machine": machine,
        "config": config,
        "dry": dry,
        "first": first,
        "etc_before": etc_before,
        "etc_after_dry": etc_after_dry,
        "docker_after_dry": docker_after_dry,
    }


@pytest.fixture
def installed(allinone: dict) -> dict:
    if allinone["first"].returncode != 0:
        pytest.skip("the first install failed: see test_fresh_install")
    return allinone


def test_dry_run_plans_and_changes_nothing(allinone: dict) -> None:
    dry = allinone["dry"]
    assert dry.returncode == 0, describe(dry)
    doc = parse_json(dry)
    assert doc["steps"], "the dry run planned no step"
    assert any(s["status"] == "change" for s in doc["steps"]), doc["steps"]
    before, after = allinone["etc_before"], allinone["etc_after_dry"]
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"the dry run wrote under /etc: {changed}"
    assert "install ok installed" not in allinone["docker_after_dry"], (
        "the dry run installed packages"
    )


def test_fresh_install(allinone: dict, mirror: dict) -> None:
    first = allinone["first"]
    assert first.returncode == EXIT["ok"], describe(first)
    check_converged(allinone["machine"], mirror, allinone["config"], inits=1)
    assert allinone["machine"].path("/var/lib/frakti-install").is_dir(), (
        "no journal under /var/lib/frakti-install"
    )


def test_second_run_changes_nothing(installed: dict, mirror: dict, record_timing) -> None:  # type: ignore[no-untyped-def]
    machine = installed["machine"]
    services, files = service_snapshot(machine), fingerprint(machine)
    started = time.monotonic()
    again = run_installer(machine, "--json")
    record_timing("frakti-install allinone, second run", time.monotonic() - started)
    assert again.returncode == EXIT["ok"], describe(again)
    steps = parse_json(again)["steps"]
    acted = [s for s in steps if s["status"] not in ("ok", "skip")]  # skip: does not apply here
    assert not acted, f"a second run should find everything in place, but: {acted}"
    assert any(s["status"] == "ok" for s in steps), steps
    assert service_snapshot(machine) == services, "a service was restarted by a no-op run"
    after = fingerprint(machine)
    changed = sorted(p for p in set(files) | set(after) if files.get(p) != after.get(p))
    assert not changed, f"a no-op run rewrote {changed}"
    check_converged(machine, mirror, installed["config"], inits=1)


def test_changed_node_subnet_changes_only_cni(installed: dict, mirror: dict) -> None:
    machine = installed["machine"]
    config = dict(installed["config"], node_subnet="10.244.7.0/24")
    write_config(machine, config)
    before = fingerprint(machine)
    result = run_installer(machine, "--json")
    assert result.returncode == EXIT["ok"], describe(result)
    steps = parse_json(result)["steps"]
    # The step(s) that acted must be about the CNI config, whatever they are
    # called, besides the record of the install's settings following along.
    acted = [s for s in steps if s["status"] not in ("ok", "skip")]
    record = [s for s in acted if RECORDED_SETTINGS in json.dumps(s)]
    assert [s["changes"] for s in record] == [[f"update {RECORDED_SETTINGS}"]], acted
    acted = [s for s in acted if s not in record]
    about_cni = [s for s in acted if re.search(r"cni|10-mynet|subnet", json.dumps(s), re.I)]
    assert acted and acted == about_cni and all(s["status"] == "change" for s in acted), (
        f"only the CNI config should change: {acted}"
    )
    assert any("10-mynet.conf" in json.dumps(s) for s in acted), acted
    after = fingerprint(machine)
    changed_files = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert changed_files == ["/etc/cni/net.d/10-mynet.conf", RECORDED_SETTINGS], changed_files
    assert (
        json.loads(machine.read("/etc/cni/net.d/10-mynet.conf"))["ipam"]["subnet"]
        == "10.244.7.0/24"
    )
    check_converged(machine, mirror, config, inits=1)


# --------------------------------------------------------------------------
# (c) killed runs converge

# (step name pattern, seconds into the step): apt is slow, kubeadm init waits for the kubelet
KILL_TARGETS = (
    (r"apt|package|docker|qemu", 4.0),
    (r"hyper", 0.3),
    (r"frakti", 0.3),
    (r"kubeadm|init|cluster", 1.0),
)
FALLBACK_DELAYS = (3.0, 10.0, 25.0, 45.0)  # if the installer keeps no journal.jsonl


def choose_kill_points(step_names: list[str]) -> list[tuple[str, float]]:
    chosen: dict[str, float] = {}
    for pattern, delay in KILL_TARGETS:
        for name in step_names:
            if name not in chosen and re.search(pattern, name, re.I):
                chosen[name] = delay
                break
    for name in step_names[
        1 :: max(1, len(step_names) // 3)
    ]:  # fill up with steps spread over the plan
        if len(chosen) >= 4:
            break
        chosen.setdefault(name, 0.3)
    return sorted(chosen.items(), key=lambda item: step_names.index(item[0]))


def journal_steps(path: Path, offset: int) -> list[str]:
    """Step names in journal lines written after offset, in order of first appearance."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return []
    seen: list[str] = []
    for line in data.decode(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the line being written when the run was killed
        step = entry.get("step") if isinstance(entry, dict) else None
        if step and step not in seen:
            seen.append(str(step))
    return seen


def test_killed_runs_converge(
    request: pytest.FixtureRequest,
    boot_host,
    wheelhouse: Path,  # type: ignore[no-untyped-def]
    mirror: dict,
    record_timing,
) -> None:
    config = make_config(mirror)
    machine = installed_host(request, boot_host, wheelhouse, config, "killed")
    dry = machine.run(
        ["frakti-install", "allinone", "--json", "--dry-run", "--config", CONFIG_PATH],
        check=False,
        timeout=300,
    )
    assert dry.returncode == 0, describe(dry)
    plan = [s["name"] for s in parse_json(dry)["steps"]]
    journal = machine.path(JOURNAL)
    history = []
    started_all = time.monotonic()
    for attempt, (target, delay) in enumerate(choose_kill_points(plan)):
        offset = journal.stat().st_size if journal.exists() else 0
        out = machine.dir / f"killed-run-{attempt}.log"
        with open(out, "wb") as log:
            proc = machine.popen(installer_argv(), stdout=log, stderr=subprocess.STDOUT)
        started, seen_at, how = time.monotonic(), None, "finished before the kill"
        while proc.poll() is None:
            now = time.monotonic()
            if now - started > INSTALL_TIMEOUT:
                machine.kill_tree(proc)
                pytest.fail(f"run {attempt} did not finish in {INSTALL_TIMEOUT}s")
            steps = journal_steps(journal, offset)
            if seen_at is None and target in steps:
                seen_at = now
            if seen_at is not None and now - seen_at >= delay:
                how = f"killed {delay}s into step {target!r}"
            elif (
                not steps
                and now - started >= FALLBACK_DELAYS[attempt % len(FALLBACK_DELAYS)]
                and not journal.exists()
            ):
                how = f"killed after {now - started:.0f}s (no journal to follow)"
            else:
                time.sleep(0.1)
                continue
            killed = machine.kill_tree(proc)
            proc.wait(30)
            for pid in killed:  # nothing the run started may survive it
                for _ in range(100):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.05)
            break
        history.append(
            f"run {attempt}: {how}, exit {proc.returncode}, steps seen "
            f"{journal_steps(journal, offset)}"
        )
    final = run_installer(machine)
    record_timing(
        f"frakti-install: {len(history)} killed runs + a full one", time.monotonic() - started_all
    )
    report = "\n".join(history)
    print(report)
    assert final.returncode == EXIT["ok"], f"{report}\n{describe(final)}"
    assert any("killed" in h for h in history), f"no run was killed:\n{report}"
    check_converged(machine, mirror, config, inits=None)


# --------------------------------------------------------------------------
# (e) hostile hosts


def os_is_arch(machine: testbed.Machine, config: dict) -> None:
    arch = 'NAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\nID=arch\nBUILD_ID=rolling\nHOME_URL="https://archlinux.org/"\n'
    machine.run(["rm", "-f", "/etc/os-release", "/etc/debian_version"])
    machine.write("/etc/os-release", arch)
    machine.write("/usr/lib/os-release", arch)


def wrong_frakti_checksum(machine: testbed.Machine, config: dict) -> None:
    config["checksums"]["frakti"] = "0" * 64


def swap_on(machine: testbed.Machine, config: dict) -> None:
    # Swap is global to the kernel: the file lives on the host (a swap file cannot be on
    # overlayfs) and the machine's teardown turns it off again.
    swapfile = machine.dir / "swapfile"
    subprocess.run(["fallocate", "-l", "64M", str(swapfile)], check=True)
    swapfile.chmod(0o600)
    subprocess.run(["mkswap", str(swapfile)], check=True, capture_output=True)
    subprocess.run(["swapon", str(swapfile)], check=True)
    assert machine.read("/proc/swaps").decode().count("\n") > 1


def port_6443_taken(machine: testbed.Machine, config: dict) -> None:
    machine.run(
        [
            "systemd-run",
            "--unit=squatter",
            "--quiet",
            "python3",
            "-c",
            "import socket, time\ns = socket.socket()\ns.bind(('0.0.0.0', 6443))\n"
            "s.listen()\ntime.sleep(1e6)",
        ]
    )
    machine.wait_tcp(6443)


def docker_uses_systemd_driver(machine: testbed.Machine, config: dict) -> None:
    machine.write("/etc/docker/daemon.json", '{"exec-opts": ["native.cgroupdriver=systemd"]}\n')
    config["cgroup_driver"] = "cgroupfs"


HOSTILE = [
    pytest.param(os_is_arch, "unsupported_os", id="unsupported-os"),
    pytest.param(wrong_frakti_checksum, "checksum", id="wrong-checksum"),
    pytest.param(swap_on, "preflight", id="swap-on"),
    pytest.param(port_6443_taken, "preflight", id="port-6443-taken"),
    pytest.param(docker_uses_systemd_driver, "preflight", id="docker-cgroup-driver-differs"),
]


@pytest.mark.parametrize("make_hostile, expected", HOSTILE)
def test_hostile_host_fails_early(
    request: pytest.FixtureRequest,
    boot_host,
    wheelhouse: Path,  # type: ignore[no-untyped-def]
    mirror: dict,
    make_hostile: Callable[[testbed.Machine, dict], None],
    expected: str,
) -> None:
    config = make_config(mirror)
    machine = installed_host(request, boot_host, wheelhouse, config, request.node.callspec.id[:20])
    make_hostile(machine, config)
    write_config(machine, config)
    etc_before = etc_snapshot(machine)
    try:
        result = run_installer(machine)
    finally:
        testbed._swapoff_under(machine.dir)
    assert result.returncode == EXIT[expected], describe(result)
    assert init_log(machine) == [], "kubeadm init ran on a host that failed the checks"
    if expected == "unsupported_os":
        after = etc_snapshot(machine)
        changed = sorted(
            k for k in set(etc_before) | set(after) if etc_before.get(k) != after.get(k)
        )
        assert not changed, f"an unsupported OS got files written under /etc: {changed}"
    if expected == "checksum":
        assert not machine.exists("/usr/bin/frakti"), (
            "a file that failed its checksum was installed"
        )


# --------------------------------------------------------------------------
# (f) hyperd already installed and running


def test_running_hyperd_is_reconfigured(
    request: pytest.FixtureRequest,
    boot_host,
    wheelhouse: Path,  # type: ignore[no-untyped-def]
    mirror: dict,
) -> None:
    config = make_config(mirror)
    machine = installed_host(request, boot_host, wheelhouse, config, "hyperd-running")
    fetch = "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])"
    for name in ("hypercontainer", "hyperstart"):
        machine.run(
            [
                "python3",
                "-c",
                fetch,
                f"{mirror['url']}/{mirror['paths'][name]}",
                f"/root/{name}.deb",
            ]
        )
    machine.run(
        [
            "apt-get",
            "install",
            "-y",
            "-q",
            "/root/hypercontainer.deb",
            "/root/hyperstart.deb",
            "qemu-system-x86",
        ],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=600,
    )
    machine.run(["systemctl", "enable", "--now", "hyperd"])
    machine.wait_for(["hyperctl", "version"], timeout=15)
    assert not machine.tcp_open(22318)
    result = run_installer(machine)
    assert result.returncode == EXIT["ok"], describe(result)
    check_converged(machine, mirror, config, inits=1)
