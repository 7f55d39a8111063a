"""A three-node cluster on booted Debian 12 hosts: master + two workers.

Each host is a systemd-nspawn container (tests/e2e/testbed.py) from the
harness's image plus openssh-server and iputils-ping (lab.py), on a private
network: a bridge in a network namespace this test creates, 192.168.99.0/24.
Kubernetes is the stand-ins' (tests/e2e/standins), extended for several
hosts by standin_multinode.py: the workers reach the master's stand-in API
on 192.168.99.10:6443, join with `kubeadm join`, and get their own pod /24.

TestByHand: frakti-install on each host as an operator would run it (allinone
on the master, the line `join-command` prints on the workers, routes).
TestClusterCommand: the same cluster from one inventory, `cluster.run_cluster`
(what `frakti-install cluster -f` runs), Ansible over SSH to the three hosts;
then once more, which changes nothing.

Both show: three nodes Ready with distinct pod CIDRs; on every host a route to
each other node's pod /24 via that node's address; and pods, network
namespaces plugged into each node's cni0 by the real CNI bridge plugin with
the node's 10-mynet.conf, pinging each other across the nodes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import lab
import pytest
import testbed
import yaml

pytestmark = pytest.mark.e2e

CONFIG = "/root/frakti.yaml"
POD_CIDR = "10.244.0.0/16"
NAMES = ("mn-master", "mn-worker1", "mn-worker2")
INSTALL_TIMEOUT = 900
DIAGNOSE = {
    "journal.txt": ["journalctl", "-b", "--no-pager", "-o", "short-precise"],
    "routes.txt": ["ip", "-4", "route", "show"],
    "addresses.txt": ["ip", "addr"],
    "iptables.txt": ["iptables-save"],
    "nodes.json": [
        "kubectl",
        "--kubeconfig",
        "/etc/kubernetes/kubelet.conf",
        "get",
        "nodes",
        "-o",
        "json",
    ],
}
DIAGNOSE_FILES = (
    "/var/lib/frakti-install",
    "/var/log/frakti-install.log",
    "/var/lib/standin-k8s",
    "/etc/cni/net.d",
    "/etc/frakti-install",
    "/var/log/standin-kubeadm-init.log",
)


# --------------------------------------------------------------------------- the hosts


@pytest.fixture(scope="session")
def lab_image(image: Path, record_timing: Callable[[str, float], None]) -> Path:
    started = time.monotonic()
    try:
        path = lab.ensure_lab_image(image)
    except testbed.TestbedError as exc:
        pytest.fail(f"could not build the multi-node image (openssh-server):\n{exc}", pytrace=False)
    record_timing(f"multi-node image ready ({path.name})", time.monotonic() - started)
    return path


@pytest.fixture(scope="session")
def lab_mirror(mirror: Dict[str, object], run_dir: Path) -> Path:
    return lab.build_lab_mirror(mirror, run_dir / "mirror-multinode")


def make_config(mirror: Dict[str, Any]) -> Dict[str, Any]:
    url = testbed.MIRROR_URL
    sums = mirror["sha256"]
    return {
        "pod_cidr": POD_CIDR,
        "mirrors": {
            "kubernetes": f"{url}/kubernetes",
            "github": f"{url}/github",
            "hyper": f"{url}/hyper",
        },
        "checksums": {n: sums[n] for n in ("frakti", "crictl", "hypercontainer", "hyperstart")},
    }


def collect_diagnostics(node: lab.Node, run_dir: Path, label: str) -> Path:
    dest = testbed.WORK_ROOT / "diagnostics" / run_dir.name / f"{label}-{node.name}"
    dest.mkdir(parents=True, exist_ok=True)
    for name, argv in DIAGNOSE.items():
        try:
            result = node.machine.run(argv, check=False, timeout=60)
            (dest / name).write_text(result.stdout + result.stderr)
        except testbed.TestbedError as exc:
            (dest / name).write_text(str(exc))
    for inside in DIAGNOSE_FILES:
        src, target = node.machine.path(inside), dest / inside.strip("/").replace("/", "__")
        try:
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True)
            elif src.is_file():
                shutil.copy(src, target)
        except OSError:
            pass
    return dest


@contextlib.contextmanager
def boot_lab(
    request: pytest.FixtureRequest,
    label: str,
    lab_image: Path,
    lab_mirror: Path,
    run_dir: Path,
    record_timing: Callable[[str, float], None],
) -> Iterator[List[lab.Node]]:
    """Three hosts on one lab network; everything is torn down afterwards, also on failure."""
    network = lab.Lab(label)
    machines: List[testbed.Machine] = []
    nodes: List[lab.Node] = []
    failures_before = request.session.testsfailed
    failed = False
    started = time.monotonic()
    try:
        network.create()
        for name in NAMES:
            machine = testbed.boot_machine(lab_image, run_dir, f"{label}-{name}")
            machines.append(machine)
            nodes.append(network.attach(machine, name))
        network.write_hosts()
        for node in nodes:
            testbed.serve_mirror(node.machine, lab_mirror)
        record_timing(f"{label}: three hosts booted and networked", time.monotonic() - started)
        yield nodes
    except BaseException:
        failed = True  # in the fixture itself: not counted as a failed test yet
        raise
    finally:
        try:
            if failed or request.session.testsfailed > failures_before:
                for node in nodes:
                    collect_diagnostics(node, run_dir, label)
        finally:
            for machine in machines:
                machine.stop()
            network.destroy()


# --------------------------------------------------------------------------- what both show


def nodes_by_name(master: lab.Node) -> Dict[str, dict]:
    return {n["metadata"]["name"]: n for n in lab.cluster_nodes(master.machine)}


def internal_ip(node: dict) -> str:
    return next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")


def is_ready(node: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


def check_nodes(nodes: List[lab.Node]) -> Dict[str, str]:
    """Three nodes, Ready, each with its lab address and a distinct pod /24 -> {name: podCIDR}."""
    seen = nodes_by_name(nodes[0])
    assert sorted(seen) == sorted(NAMES), f"nodes in the cluster: {sorted(seen)}"
    cidrs = {}
    for node in nodes:
        obj = seen[node.name]
        assert is_ready(obj), f"{node.name} is not Ready: {obj['status']['conditions']}"
        assert internal_ip(obj) == node.address, f"{node.name}: {obj['status']['addresses']}"
        cidr = obj["spec"].get("podCIDR")
        assert cidr, f"{node.name} has no podCIDR"
        network = ipaddress.IPv4Network(cidr)
        assert network.prefixlen == 24 and network.subnet_of(ipaddress.IPv4Network(POD_CIDR))
        cidrs[node.name] = cidr
    assert len(set(cidrs.values())) == 3, f"pod CIDRs are not distinct: {cidrs}"
    for node in nodes:  # each node's pod network uses its own subnet
        conf = json.loads(node.machine.read(lab.CNI_CONF))
        assert conf["ipam"]["subnet"] == cidrs[node.name], (node.name, conf)
    return cidrs


SYNC_SERVICE = "frakti-routes-sync.service"
SYNC_TIMER = "frakti-routes-sync.timer"


def check_routes(nodes: List[lab.Node], cidrs: Dict[str, str]) -> None:
    for node in nodes:
        found = lab.routes(node.machine)
        wanted = {cidrs[o.name]: o.address for o in nodes if o is not node}
        missing = {c: via for c, via in wanted.items() if found.get(c) != via}
        assert not missing, f"{node.name}: routes missing {missing}; ip route has {found}"
        assert cidrs[node.name] not in found, f"{node.name} routes its own pod subnet away"
        assert (
            node.machine.run(
                ["systemctl", "is-enabled", "frakti-routes.service"], check=False
            ).stdout.strip()
            == "enabled"
        )


def check_pod_traffic(nodes: List[lab.Node], cidrs: Dict[str, str]) -> None:
    """Pods on the three nodes (real CNI bridge plugin) ping each other across nodes."""
    pods = [lab.add_pod(node, f"pod-{i}") for i, node in enumerate(nodes)]
    for pod in pods:
        assert ipaddress.IPv4Address(pod.address) in ipaddress.IPv4Network(cidrs[pod.node.name])
        assert pod.node.machine.run(["ip", "link", "show", "cni0"], check=False).returncode == 0
    problems = []
    for source, target in ((pods[0], pods[1]), (pods[1], pods[2]), (pods[2], pods[0])):
        result = lab.ping(source, target.address)
        if result.returncode != 0:
            problems.append(
                f"{source.node.name} pod {source.address} -> {target.node.name} pod "
                f"{target.address}: {result.stdout[-600:]}{result.stderr[-300:]}"
            )
    assert not problems, "pods cannot reach each other:\n" + "\n".join(problems)


def task_results(log: str, task: str) -> List[str]:
    """The result words (ok, changed, skipping, fatal...) Ansible printed for a task, per host."""
    results = []
    for block in re.split(r"\n(?=TASK \[|PLAY \[|PLAY RECAP)", log):
        if block.startswith(f"TASK [{task}"):
            results += re.findall(r"^(\w+): \[", block, re.M)
    return results


def cluster_traces(machine: testbed.Machine) -> List[str]:
    """What an install leaves that a dry run must not."""
    found = []
    status = machine.run(["dpkg-query", "-W", "-f=${Status}", "docker.io"], check=False).stdout
    if "install ok installed" in status:
        found.append("docker.io")
    for path in ("/usr/bin/kubeadm", "/etc/kubernetes/admin.conf", "/etc/kubernetes/kubelet.conf"):
        if machine.exists(path):
            found.append(path)
    return found


# --------------------------------------------------------------------------- by hand


def wait_until_released(machine: testbed.Machine, unit: str, timeout: float = 60) -> None:
    """Wait until systemd has finished with the unit's last run and let go of its cgroup.

    The timer starts the sync as soon as it is enabled (OnBootSec has passed),
    so a start right after the install can come while that run's cgroup is
    still being torn down; systemd in these containers then fails the start
    with status=219/CGROUP ("Failed to attach to cgroup"). A unit that never
    lets go fails here, with its state."""
    deadline = time.monotonic() + timeout
    while True:
        shown = machine.run(
            ["systemctl", "show", "-p", "ActiveState", "-p", "ControlGroup", unit], check=False
        ).stdout
        state = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        if state.get("ActiveState") in ("inactive", "failed") and not state.get("ControlGroup"):
            return
        assert time.monotonic() < deadline, f"{machine.name}: {unit} still holds: {state}"
        time.sleep(0.5)


STOP_WATCH = "/run/frakti-e2e-stop-watch"
# Reads every /proc/*/cmdline until STOP_WATCH exists; the token comes on stdin
# (on its own command line it would find itself). Prints whether it saw kubeadm
# join run, then each command line that held the token (the token masked).
WATCH_CMDLINES = r"""
import os, sys, time
token = sys.stdin.readline().strip().encode()
stop, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
saw_join, holding = False, set()
while not os.path.exists(stop) and time.monotonic() < deadline:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as fh:
                words = fh.read().split(b"\0")
        except OSError:
            continue
        if any(w.endswith(b"kubeadm") for w in words) and b"join" in words:
            saw_join = True
        if any(token in w for w in words):
            holding.add(b" ".join(words).replace(token, b"<token>").decode(errors="replace"))
    time.sleep(0.01)
print("saw-join" if saw_join else "no-join")
for line in sorted(holding):
    print(line)
"""


def watch_cmdlines(machine: testbed.Machine, token: str) -> tuple[bool, List[str]]:
    """(kubeadm join was seen running, the command lines that held the token)
    inside machine, from now until STOP_WATCH is touched."""
    machine.run(["rm", "-f", STOP_WATCH])
    result = machine.run(
        ["python3", "-c", WATCH_CMDLINES, STOP_WATCH, str(INSTALL_TIMEOUT)],
        input=token + "\n", timeout=INSTALL_TIMEOUT + 60,
    )  # fmt: skip
    first, *holding = result.stdout.splitlines()
    return first == "saw-join", holding


def paste_join_line(machine: testbed.Machine, line: str) -> None:
    """What an operator does: paste the printed line into a root shell (on the
    shell's stdin, not its command line)."""
    result = machine.run(
        ["/bin/sh"], check=False, timeout=INSTALL_TIMEOUT, input=f"{line} --json -c {CONFIG}\n"
    )
    assert result.returncode == 0, (
        f"{machine.name}: the join line exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
    )


def run(machine: testbed.Machine, argv: List[str]) -> subprocess.CompletedProcess[str]:
    result = machine.run(argv, check=False, timeout=INSTALL_TIMEOUT)
    assert result.returncode == 0, (
        f"{machine.name}: {shlex.join(argv)} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="class")
def hand_cluster(
    request: pytest.FixtureRequest,
    lab_image: Path,
    lab_mirror: Path,
    run_dir: Path,
    wheelhouse: Path,
    mirror: Dict[str, Any],
    record_timing: Callable[[str, float], None],
) -> Iterator[Dict[str, Any]]:
    with boot_lab(request, "hand", lab_image, lab_mirror, run_dir, record_timing) as nodes:
        config = yaml.safe_dump(make_config(mirror))
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda n: testbed.install_project(n.machine, wheelhouse), nodes))
        for node in nodes:
            node.machine.write(CONFIG, config, 0o600)
        master, workers = nodes[0], nodes[1:]
        started = time.monotonic()
        run(master.machine, ["frakti-install", "allinone", "--yes", "--json", "-c", CONFIG])
        record_timing("by hand: allinone on the master", time.monotonic() - started)
        line = run(master.machine, ["frakti-install", "join-command", "-c", CONFIG]).stdout
        join = shlex.split(line.strip())
        assert join[0].startswith("FRAKTI_INSTALL_JOIN_TOKEN=") and "--token" not in join, line
        assert join[1:4] == ["frakti-install", "node", "--yes"], line
        token = join[0].split("=", 1)[1]
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(2 * len(workers)) as pool:
            watches = [pool.submit(watch_cmdlines, n.machine, token) for n in workers]
            joins = [pool.submit(paste_join_line, n.machine, line.strip()) for n in workers]
            for joined in joins:
                joined.result()
            for node in workers:
                node.machine.run(["touch", STOP_WATCH])
            cmdlines = {n.name: w.result() for n, w in zip(workers, watches)}
        record_timing("by hand: node on both workers (parallel)", time.monotonic() - started)
        # What the timer does every few minutes, started now instead of waited for.
        for node in nodes:
            wait_until_released(node.machine, SYNC_SERVICE)
            run(node.machine, ["systemctl", "start", SYNC_SERVICE])
        yield {"nodes": nodes, "cmdlines": cmdlines}


class TestByHand:
    def test_no_command_line_held_the_join_token(self, hand_cluster: Dict[str, Any]) -> None:
        for name, (saw_join, holding) in hand_cluster["cmdlines"].items():
            assert saw_join, f"{name}: the watch never saw kubeadm join run (it proves nothing)"
            assert not holding, f"{name}: these command lines held the join token: {holding}"

    def test_master_and_two_workers_joined(self, hand_cluster: Dict[str, Any]) -> None:
        check_nodes(hand_cluster["nodes"])

    def test_routes_to_every_other_nodes_pods(self, hand_cluster: Dict[str, Any]) -> None:
        check_routes(hand_cluster["nodes"], check_nodes(hand_cluster["nodes"]))

    def test_pods_reach_each_other_across_nodes(self, hand_cluster: Dict[str, Any]) -> None:
        check_pod_traffic(hand_cluster["nodes"], check_nodes(hand_cluster["nodes"]))

    def test_the_routes_carry_the_pod_traffic(self, hand_cluster: Dict[str, Any]) -> None:
        """Without its route no packet gets through; `frakti-install routes` puts it back."""
        nodes = hand_cluster["nodes"]
        cidrs = check_nodes(nodes)
        master, worker = nodes[0], nodes[1]
        source, target = lab.add_pod(master, "probe-src"), lab.add_pod(worker, "probe-dst")
        assert lab.ping(source, target.address).returncode == 0
        master.machine.run(["ip", "route", "del", cidrs[worker.name]])
        lost = lab.ping(source, target.address, count=2)
        assert lost.returncode != 0, f"pods reached each other without the route:\n{lost.stdout}"
        repair = run(master.machine, ["frakti-install", "routes", "--json", "-c", CONFIG])
        assert json.loads(repair.stdout)["changed"] is True
        assert lab.routes(master.machine).get(cidrs[worker.name]) == worker.address
        assert lab.ping(source, target.address).returncode == 0
        again = run(master.machine, ["frakti-install", "routes", "--json", "-c", CONFIG])
        assert json.loads(again.stdout)["changed"] is False

    def test_the_timer_keeps_the_routes_and_a_quiet_run_leaves_no_trace(
        self, hand_cluster: Dict[str, Any]
    ) -> None:
        nodes = hand_cluster["nodes"]
        cidrs = check_nodes(nodes)
        master, worker = nodes[0], nodes[2]
        for node in nodes:
            timer = node.machine.run(["systemctl", "is-active", SYNC_TIMER], check=False)
            assert timer.stdout.strip() == "active", f"{node.name}: {SYNC_TIMER} {timer.stdout}"
            enabled = node.machine.run(["systemctl", "is-enabled", SYNC_TIMER], check=False)
            assert enabled.stdout.strip() == "enabled", f"{node.name}: {enabled.stdout}"
        trace = ["wc", "-c", "/var/lib/frakti-install/journal.jsonl", "/var/log/frakti-install.log"]
        before = master.machine.run(trace).stdout
        wait_until_released(master.machine, SYNC_SERVICE)
        run(master.machine, ["systemctl", "start", SYNC_SERVICE])
        assert master.machine.run(trace).stdout == before, "a run with nothing to do was logged"
        master.machine.run(["ip", "route", "del", cidrs[worker.name]])
        wait_until_released(master.machine, SYNC_SERVICE)
        run(master.machine, ["systemctl", "start", SYNC_SERVICE])
        assert lab.routes(master.machine).get(cidrs[worker.name]) == worker.address
        assert master.machine.run(trace).stdout != before, "the repair left no record"


# --------------------------------------------------------------------------- the cluster command


def ansible_problem() -> str:
    from frakti_install import cluster

    if cluster.ansible_playbook() is None:
        return "ansible-playbook is not installed: pip install 'frakti-install[cluster]'"
    if shutil.which("ssh") is None:
        return "the ssh client is not installed (apt-get install openssh-client)"
    return ""


@pytest.fixture(scope="class")
def ssh_cluster(
    request: pytest.FixtureRequest,
    lab_image: Path,
    lab_mirror: Path,
    run_dir: Path,
    wheelhouse: Path,
    mirror: Dict[str, Any],
    record_timing: Callable[[str, float], None],
) -> Iterator[Dict[str, Any]]:
    problem = ansible_problem()
    if problem:
        pytest.skip(problem)
    from frakti_install import cluster

    work = run_dir / "cluster-command"
    key = lab.make_key(work)
    with boot_lab(request, "ssh", lab_image, lab_mirror, run_dir, record_timing) as nodes:
        for node in nodes:
            lab.authorize_key(node.machine, (work / "id_ed25519.pub").read_text())
            # pip on the hosts has no index: the wheels are there, the rest comes from
            # the inventory (fromPath: the project wheel, on this machine)
            shutil.copytree(wheelhouse, node.machine.path("/wheelhouse"))
        wheel = wheelhouse / (wheelhouse / "PROJECT_WHEEL").read_text().strip()
        inventory = lab.cluster_inventory(nodes, key, wheel, make_config(mirror))
        path = work / "cluster.yaml"
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        inv = cluster.load_inventory(path)
        runs: Dict[str, Dict[str, Any]] = {}

        def play(name: str, dry_run: bool, action: str = "install") -> None:
            log = work / f"ansible-{name}.log"
            started = time.monotonic()
            rc = lab.play_cluster(
                inv, lab.netns_name("ssh"), work, log, dry_run=dry_run, action=action
            )
            record_timing(f"cluster command, {name} (3 hosts)", time.monotonic() - started)
            runs[name] = {"rc": rc, "log": log}

        failures_before = request.session.testsfailed
        play("dry run", dry_run=True)
        runs["dry run"]["installed"] = {node.name: cluster_traces(node.machine) for node in nodes}
        play("first run", dry_run=False)
        play("second run", dry_run=False)
        play("upgrade", dry_run=False, action="upgrade")
        runs["upgrade"]["lent"] = {
            node.name: node.machine.exists(f"{cluster.REMOTE_DIR}/admin.conf") for node in nodes
        }
        yield {"nodes": nodes, "runs": runs, "inventory": inv}
        if request.session.testsfailed > failures_before:
            dest = testbed.WORK_ROOT / "diagnostics" / run_dir.name
            dest.mkdir(parents=True, exist_ok=True)
            for run_ in runs.values():
                shutil.copy(run_["log"], dest / run_["log"].name.replace(" ", "-"))


class TestClusterCommand:
    def test_dry_run_plans_every_host_and_installs_no_cluster(
        self, ssh_cluster: Dict[str, Any]
    ) -> None:
        run_ = ssh_cluster["runs"]["dry run"]
        log = run_["log"].read_text()
        assert run_["rc"] == 0, f"the dry run failed:\n{log[-6000:]}"
        assert '"kubeadm-init": [' in log and log.count('"kubeadm-join": [') == 2, log[-6000:]
        assert set(task_results(log, "Create the join line")) == {"skipping"}
        assert set(task_results(log, "Routes to the other")) == {"skipping"}
        assert task_results(log, "Join the cluster") == ["changed", "changed"]  # would change
        for name, found in run_["installed"].items():
            assert found == [], f"the dry run installed {found} on {name}"

    def test_cluster_command_installs_the_cluster(self, ssh_cluster: Dict[str, Any]) -> None:
        run_ = ssh_cluster["runs"]["first run"]
        log = run_["log"].read_text()
        assert run_["rc"] == 0, f"ansible-playbook failed:\n{log[-6000:]}"
        order = r"PLAY \[Install the master\].*PLAY \[Join the workers\].*PLAY \[Routes between all"
        assert re.search(order, log, re.S), log[-3000:]
        assert "[WARNING]" not in log, log[:3000]
        check_nodes(ssh_cluster["nodes"])

    def test_same_routes_and_pod_traffic(self, ssh_cluster: Dict[str, Any]) -> None:
        assert ssh_cluster["runs"]["first run"]["rc"] == 0
        cidrs = check_nodes(ssh_cluster["nodes"])
        check_routes(ssh_cluster["nodes"], cidrs)
        check_pod_traffic(ssh_cluster["nodes"], cidrs)

    def test_token_never_in_ansible_output(self, ssh_cluster: Dict[str, Any]) -> None:
        master = ssh_cluster["nodes"][0].machine
        tokens = master.run(["kubeadm", "token", "list"]).stdout
        found = re.findall(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b", tokens)
        assert len(found) >= 3, tokens  # kubeadm init's, and one per real cluster run
        for run_ in ssh_cluster["runs"].values():
            text = run_["log"].read_text()
            leaked = [t for t in found if t in text]
            assert not leaked, f"{run_['log'].name} shows a bootstrap token"

    def test_settings_file_on_each_host_is_private(self, ssh_cluster: Dict[str, Any]) -> None:
        for node in ssh_cluster["nodes"]:
            path = node.machine.path("/etc/frakti-install/cluster.yaml")
            assert path.stat().st_mode & 0o777 == 0o600, node.name
            assert yaml.safe_load(path.read_text())["pod_cidr"] == POD_CIDR

    def test_cluster_upgrade_runs_master_then_each_worker_in_turn(
        self, ssh_cluster: Dict[str, Any]
    ) -> None:
        """`cluster -f FILE upgrade` over SSH: the frakti profile has nothing newer, so
        each host says so and nothing changes; shown here: the plays in order, one
        worker per batch, the master's kubeconfig lent to each worker and taken back,
        never in the output, a recap line per node."""
        run_ = ssh_cluster["runs"]["upgrade"]
        log = run_["log"].read_text()
        assert run_["rc"] == 0, f"cluster upgrade failed:\n{log[-6000:]}"
        order = r"PLAY \[Upgrade the master\].*PLAY \[Upgrade the workers, one at a time\]"
        assert re.search(order, log, re.S), log[-3000:]
        workers = ssh_cluster["nodes"][1:]
        # serial: 1 -> the workers' tasks run once per worker, each batch on one host
        batches = log.count("TASK [Upgrade the worker (frakti-install upgrade --kubeconfig)]")
        assert batches == len(workers), log[-6000:]
        assert task_results(log, "Upgrade the worker (frakti-install upgrade --kubeconfig)") == [
            "ok"
        ] * len(workers), log[-3000:]
        assert task_results(log, "Take the lent kubeconfig back") == ["changed"] * len(workers)
        assert not any(run_["lent"].values()), run_["lent"]
        admin = ssh_cluster["nodes"][0].machine.read("/etc/kubernetes/admin.conf").decode()
        lab.check_playbook_log(log, ssh_cluster["nodes"], admin)

    def test_second_run_changes_nothing(self, ssh_cluster: Dict[str, Any]) -> None:
        run_ = ssh_cluster["runs"]["second run"]
        log = run_["log"].read_text()
        assert run_["rc"] == 0, f"second run failed:\n{log[-6000:]}"
        recap = log[log.index("PLAY RECAP") :]
        for node in ssh_cluster["nodes"]:
            line = next(r for r in recap.splitlines() if r.startswith(node.address))
            assert re.search(r"\bchanged=0\b", line), f"second run changed something: {line}"
        check_nodes(ssh_cluster["nodes"])
