"""A kata master and a kata worker on booted Debian sid hosts, joined, with routes.

The hosts are the kata test's (test_kata_allinone.boot_kata_host: the sid
kata image of katalab.py, sid for its containerd 2.1 since the upgrade to
1.36 refuses Debian 12's and 13's containerd 1.x; cgroup v2, the project
installed, the signed stand-in pkgs.k8s.io repository and the Kata tarball
served on 127.0.0.1:8080), on the
multi-node tests' private network (multinode/lab.py: a bridge in a network
namespace, 192.168.99.0/24, hosts entries). The kube stand-ins are kube131.py
extended by standin_kata_multinode.py: the worker reaches the master's stand-in
API on 192.168.99.10:6443, joins with `kubeadm join --config` and is given its
own pod /24.

Then `upgrade` (tests at the end, on the same hosts): two minors at once
refused before any change (and by the stand-in kubeadm, with the real
message), and a worker asking for the next minor before its master; then
`cluster -f cluster.yaml upgrade --kubernetes-version v1.36` over SSH
(Ansible inside the lab network): the master moved to the next minor
(`kubeadm upgrade plan`, `apply`, drained, kubelet restarted, uncordoned),
then the worker with the master's kubeconfig lent for its drain and taken
back (`kubeadm upgrade node`), following the master's release; the same
command again changing nothing; both nodes Ready and schedulable afterwards.
A Kata upgrade of the worker without a kubeconfig to drain with is refused;
`cluster -f ... upgrade --kata-version` moves both nodes to the default
release, then `upgrade` the master to 4.1.0 (the runtime-rs layout), each by
one rename of /opt/kata.

Flow: `allinone --runtime kata` on the master; the line `join-command` prints
there, pasted into a shell on the worker (with the worker's config for the
mirrors); the routes sync started on both, as its timer would; then the line
once more on the worker. Shown: both nodes registered and Ready with distinct
pod CIDRs, the worker's CNI config on its own /24, on each host a route to the
other's pod /24 via the other's lab address, the join made over containerd's
socket from a v1beta4 JoinConfiguration with no token on kubeadm's command
line, and the second `node` run changing nothing.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import katalab
import pytest
import testbed
from test_kata_allinone import (
    CONFIG_PATH,
    SOCKET,
    boot_kata_host,
    describe,
    flag,
    make_config,
    process_argv,
    steps_of,
    write_config,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "multinode"))
import lab  # noqa: E402
from test_multinode import (  # noqa: E402
    SYNC_SERVICE,
    ansible_problem,
    paste_join_line,
    task_results,
    wait_until_released,
)

pytestmark = pytest.mark.e2e

SUITE = "sid"  # containerd 2.1: the upgrade to 1.36 needs containerd 2.x
POD_CIDR = "10.244.0.0/16"
NAMES = ("kata-master", "kata-worker")
PATCH = Path(__file__).resolve().parent / "standin_kata_multinode.py"
JOIN_LOG = "/var/log/standin-kubeadm-join.log"
INSTALL_TIMEOUT = 600
UPGRADE_MINOR = "v1.36"  # the next minor after the default (v1.35): its repository is served too
UPGRADE_LOG = "/var/log/standin-kubeadm-upgrade.log"
DROP_IN = "/etc/containerd/conf.d/90-frakti-install.toml"
SHIM_LINK = "/usr/local/bin/containerd-shim-kata-v2"
OLD_KATA = "3.31.0"  # installed, then both nodes upgraded to the default Kata release
RUNTIME_RS_KATA = "4.1.0"  # then to a release of the runtime-rs layout (kata.layouts)
ENTRY_SHIM = "/opt/kata/frakti-install/containerd-shim-kata-v2"


@pytest.fixture(scope="module")
def mn_image(testbed_ready: None, record_timing: Callable[[str, float], None]) -> Path:
    started = time.monotonic()
    try:
        kata_image = katalab.ensure_kata_image(testbed.ensure_image(SUITE))
        path = lab.ensure_lab_image(kata_image, prefix="kata-multinode")  # sshd: cluster -f
    except testbed.TestbedError as exc:
        pytest.fail(f"could not build the {SUITE} kata test image:\n{exc}", pytrace=False)
    record_timing(f"{SUITE} kata image ready ({path.name})", time.monotonic() - started)
    return path


@pytest.fixture(scope="module")
def mn_mirror(run_dir: Path, record_timing: Callable[[str, float], None]) -> Dict[str, object]:
    """The kata stand-in mirror with the multi-node kube stand-ins."""
    started = time.monotonic()
    key = katalab.RepoKey()
    dest = run_dir / "mirror-kata-multinode"
    try:
        info = katalab.build_kata_mirror(
            dest, key, kube_patch=PATCH.read_text(), upgrade_minors=[UPGRADE_MINOR],
            kata_releases=[OLD_KATA, RUNTIME_RS_KATA],
        )  # fmt: skip
    finally:
        key.close()
    record_timing("kata multi-node stand-in mirror built", time.monotonic() - started)
    return {**info, "dir": dest}


def run(machine: testbed.Machine, argv: List[str]) -> str:
    result = machine.run(argv, check=False, timeout=INSTALL_TIMEOUT)
    assert result.returncode == 0, (
        f"{machine.name}: {shlex.join(argv)}\n{describe(machine, result)}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest,
    mn_image: Path,
    mn_mirror: Dict[str, object],
    run_dir: Path,
    wheelhouses: Callable[[str], Path],
    record_timing: Callable[[str, float], None],
) -> Dict[str, Any]:
    network = lab.Lab("kata").create()
    request.addfinalizer(network.destroy)  # after the hosts' own finalizers (LIFO)
    wheelhouse = wheelhouses(testbed.image_python(mn_image))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        machines = list(
            pool.map(
                lambda name: boot_kata_host(
                    request, name, mn_image, mn_mirror, run_dir, wheelhouse, record_timing
                ),
                NAMES,
            )
        )
    nodes = [network.attach(machine, name) for machine, name in zip(machines, NAMES)]
    network.write_hosts()
    wheel = wheelhouse / (wheelhouse / "PROJECT_WHEEL").read_text().strip()
    sums: Dict[str, str] = mn_mirror["kata_sha256s"]  # type: ignore[assignment]
    for node in nodes:
        config = make_config(mn_mirror, pod_cidr=POD_CIDR, kata_version=OLD_KATA)
        config["checksums"] = {"kata": sums[OLD_KATA]}
        write_config(node.machine, config)
    master, worker = nodes
    started = time.monotonic()
    run(
        master.machine,
        ["frakti-install", "allinone", "--runtime", "kata", "--yes", "-c", CONFIG_PATH],
    )
    record_timing("kata multi-node: allinone on the master", time.monotonic() - started)
    line = run(master.machine, ["frakti-install", "join-command", "-c", CONFIG_PATH]).strip()
    started = time.monotonic()
    paste_join_line(worker.machine, line)
    record_timing("kata multi-node: the join line on the worker", time.monotonic() - started)
    for node in nodes:  # what the timer does every few minutes, started now
        wait_until_released(node.machine, SYNC_SERVICE)
        run(node.machine, ["systemctl", "start", SYNC_SERVICE])
    started = time.monotonic()
    again = worker.machine.run(
        ["/bin/sh"], check=False, timeout=INSTALL_TIMEOUT, input=f"{line} --json -c {CONFIG_PATH}\n"
    )
    record_timing("kata multi-node: node on the worker, second run", time.monotonic() - started)
    return {"nodes": nodes, "line": line, "again": again, "network": network, "wheel": wheel}


def cluster_nodes(cluster: Dict[str, Any]) -> Dict[str, dict]:
    master = cluster["nodes"][0]
    return {n["metadata"]["name"]: n for n in lab.cluster_nodes(master.machine)}


def pod_cidrs(cluster: Dict[str, Any]) -> Dict[str, str]:
    return {name: obj["spec"].get("podCIDR") for name, obj in cluster_nodes(cluster).items()}


def test_join_line_names_the_kata_runtime(cluster: Dict[str, Any]) -> None:
    words = shlex.split(cluster["line"])
    assert words[0].startswith("FRAKTI_INSTALL_JOIN_TOKEN=") and "--token" not in words, words
    assert words[1:6] == ["frakti-install", "node", "--yes", "--runtime", "kata"], words
    assert words[6:8] == ["--join", f"{cluster['nodes'][0].address}:6443"], words


def test_both_nodes_registered_and_ready(cluster: Dict[str, Any]) -> None:
    seen = cluster_nodes(cluster)
    assert sorted(seen) == sorted(NAMES), f"nodes in the cluster: {sorted(seen)}"
    for node in cluster["nodes"]:
        obj = seen[node.name]
        ready = [c["status"] for c in obj["status"]["conditions"] if c["type"] == "Ready"]
        assert ready == ["True"], f"{node.name}: {obj['status']['conditions']}"
        addresses = {a["type"]: a["address"] for a in obj["status"]["addresses"]}
        assert addresses.get("InternalIP") == node.address, f"{node.name}: {addresses}"
    # the worker's kubelet reports to the master: it sees the same two nodes
    worker = cluster["nodes"][1].machine
    out = worker.run(
        ["kubectl", "--kubeconfig", "/etc/kubernetes/kubelet.conf", "get", "nodes", "-o", "name"]
    ).stdout.split()
    assert sorted(out) == sorted(f"node/{n}" for n in NAMES), out


def test_each_node_has_its_own_pod_cidr(cluster: Dict[str, Any]) -> None:
    cidrs = pod_cidrs(cluster)
    for name, cidr in cidrs.items():
        assert cidr, f"{name} has no podCIDR"
        network = ipaddress.IPv4Network(cidr)
        assert network.prefixlen == 24 and network.subnet_of(ipaddress.IPv4Network(POD_CIDR))
    assert len(set(cidrs.values())) == len(NAMES), f"pod CIDRs are not distinct: {cidrs}"
    for node in cluster["nodes"]:
        conf = json.loads(node.machine.read(lab.CNI_CONF))
        assert conf["ipam"]["subnet"] == cidrs[node.name], (node.name, conf)


def test_routes_to_the_other_nodes_pods(cluster: Dict[str, Any]) -> None:
    cidrs = pod_cidrs(cluster)
    nodes = cluster["nodes"]
    for node in nodes:
        found = lab.routes(node.machine)
        for other in nodes:
            if other is not node:
                assert found.get(cidrs[other.name]) == other.address, (
                    f"{node.name}: no route to {other.name}'s pods {cidrs[other.name]} via "
                    f"{other.address}; ip route has {found}"
                )
        assert cidrs[node.name] not in found, f"{node.name} routes its own pod subnet away"


def test_join_ran_over_containerds_socket(cluster: Dict[str, Any]) -> None:
    worker = cluster["nodes"][1]
    joins = [json.loads(x) for x in worker.machine.read(JOIN_LOG).decode().splitlines() if x]
    assert len(joins) == 1, f"kubeadm join ran {len(joins)} times: {joins}"
    join = joins[0]
    assert join["cri_socket"] == f"unix://{SOCKET}", join
    assert join["config_api_version"] == "kubeadm.k8s.io/v1beta4", join
    assert join["api_server"] == f"{cluster['nodes'][0].address}:6443", join
    assert join["node_name"] == worker.name, join
    # the token came in the config file, not on kubeadm's command line
    assert [a.split("=")[0] for a in join["argv"]] == ["--config"], join["argv"]
    obj = cluster_nodes(cluster)[worker.name]
    socket = obj["metadata"]["annotations"].get("kubeadm.alpha.kubernetes.io/cri-socket")
    assert socket == f"unix://{SOCKET}", obj["metadata"]
    assert obj["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    argv = process_argv(worker.machine, "kubelet")
    assert flag(argv, "container-runtime-endpoint") == f"unix://{SOCKET}", argv


def test_second_node_run_changes_nothing(cluster: Dict[str, Any]) -> None:
    worker = cluster["nodes"][1].machine
    again = cluster["again"]
    assert again.returncode == 0, describe(worker, again)
    steps = steps_of(again)
    acted = [s for s in steps if s.get("status") not in ("ok", "skip")]
    assert steps and not acted, f"a second node run should change nothing, but: {acted}"
    assert "kubeadm-join" in {s.get("name") for s in steps}, [s.get("name") for s in steps]
    joins = worker.read(JOIN_LOG).decode().splitlines()
    assert len(joins) == 1, f"the second run ran kubeadm join again: {joins}"


# --------------------------------------------------------------------------- upgrade
def upgrade_on(machine: testbed.Machine, *extra: str) -> Any:
    argv = ["frakti-install", "upgrade", "--json", "--yes", *extra]
    return machine.run(argv, check=False, timeout=INSTALL_TIMEOUT)


def upgrade_log(machine: testbed.Machine) -> List[dict]:
    if not machine.exists(UPGRADE_LOG):
        return []
    return [json.loads(x) for x in machine.read(UPGRADE_LOG).decode().splitlines() if x]


def cluster_upgrade(
    cluster: Dict[str, Any],
    mn_mirror: Dict[str, object],
    run_dir: Path,
    name: str,
    kubernetes: Optional[str] = None,
    kata: Optional[str] = None,
) -> Dict[str, Any]:
    """`frakti-install cluster -f cluster.yaml upgrade [--kubernetes-version V]
    [--kata-version V --checksum kata=SUM]` over SSH on both hosts (Ansible
    inside the lab network, the options split as the command splits them): its
    exit code, its log, and whether the lent kubeconfig was left anywhere."""
    from frakti_install import cluster as cluster_command

    work = run_dir / "kata-cluster-command"
    inventory = work / "cluster.yaml"
    if not inventory.exists():
        key = lab.make_key(work)
        for node in cluster["nodes"]:
            lab.authorize_key(node.machine, (work / "id_ed25519.pub").read_text())
        config = make_config(mn_mirror, pod_cidr=POD_CIDR, kata_version=OLD_KATA)
        config["checksums"] = {"kata": mn_mirror["kata_sha256s"][OLD_KATA]}  # type: ignore[index]
        spec = lab.cluster_inventory(cluster["nodes"], key, cluster["wheel"], config)
        inventory.write_text(json.dumps(spec))  # YAML reads JSON
    log = work / f"ansible-{name}.log"
    sums = {"kata": mn_mirror["kata_sha256s"][kata]} if kata else {}  # type: ignore[index]
    master_args, worker_args = cluster_command.upgrade_arguments(kubernetes, kata, sums)
    rc = lab.play_cluster(
        cluster_command.load_inventory(inventory), cluster["network"].netns, work, log,
        action="upgrade", upgrade_args=master_args, worker_upgrade_args=worker_args,
    )  # fmt: skip
    lent = {
        node.name: node.machine.exists(f"{cluster_command.REMOTE_DIR}/admin.conf")
        for node in cluster["nodes"]
    }
    return {"rc": rc, "log": log.read_text(), "lent": lent}


@pytest.fixture(scope="module")
def upgraded(
    cluster: Dict[str, Any],
    mn_mirror: Dict[str, object],
    run_dir: Path,
    record_timing: Callable[[str, float], None],
) -> Dict[str, Any]:
    problem = ansible_problem()
    if problem:
        pytest.skip(problem)
    master, worker = (node.machine for node in cluster["nodes"])
    found: Dict[str, Any] = {"target": mn_mirror["upgrades"][UPGRADE_MINOR]}  # type: ignore[index]
    found["standin_skip"] = master.run(["kubeadm", "upgrade", "plan", "v1.37.1"], check=False)
    found["two_minors"] = upgrade_on(master, "--kubernetes-version", "v1.37")
    found["worker_first"] = upgrade_on(worker, "--kubernetes-version", UPGRADE_MINOR)
    started = time.monotonic()
    found["cluster"] = cluster_upgrade(cluster, mn_mirror, run_dir, "upgrade", UPGRADE_MINOR)
    record_timing(
        "kata multi-node: cluster -f upgrade (master, then the worker)", time.monotonic() - started
    )
    started = time.monotonic()
    found["cluster_again"] = cluster_upgrade(
        cluster, mn_mirror, run_dir, "upgrade again", UPGRADE_MINOR
    )
    record_timing("kata multi-node: cluster -f upgrade, second run", time.monotonic() - started)
    found["again"] = upgrade_on(worker)
    kata = str(mn_mirror["versions"]["kata"])  # type: ignore[index]
    found["kata"] = kata
    kata_sum = f"kata={mn_mirror['kata_sha256s'][kata]}"  # type: ignore[index]
    # a Kata upgrade drains the node: a worker has no kubeconfig of its own to do it with
    found["refused"] = upgrade_on(worker, "--kata-version", kata, "--checksum", kata_sum)
    found["drop_ins"] = [machine.read(DROP_IN).decode() for machine in (master, worker)]
    started = time.monotonic()
    found["kata_upgrade"] = cluster_upgrade(cluster, mn_mirror, run_dir, "kata upgrade", kata=kata)
    record_timing("kata multi-node: cluster -f upgrade --kata-version", time.monotonic() - started)
    found["after_kata"] = kata_state(master)
    found["worker_after_kata"] = kata_state(worker)
    started = time.monotonic()
    found["runtime_rs_upgrade"] = upgrade_on(
        master, "--kata-version", RUNTIME_RS_KATA,
        "--checksum", f"kata={mn_mirror['kata_sha256s'][RUNTIME_RS_KATA]}",  # type: ignore[index]
    )  # fmt: skip
    record_timing(
        "kata multi-node: Kata 3.x -> 4.x upgrade of the master", time.monotonic() - started
    )
    found["after_runtime_rs"] = kata_state(master)
    return found


def kata_state(machine: testbed.Machine) -> Dict[str, str]:
    """What names Kata on a node: the prefix link, the trees, the shim link,
    what the shim says, the drop-in, and where the entry links lead."""
    entry = "/opt/kata/frakti-install"
    return {
        "active": run(machine, ["readlink", "/opt/kata"]).strip(),
        "trees": run(machine, ["ls", "-A", "/opt/kata-versions"]).strip(),
        "shim_link": run(machine, ["readlink", SHIM_LINK]).strip(),
        "shim": run(machine, [SHIM_LINK, "--version"]),
        "shim_file": run(machine, ["readlink", "-f", SHIM_LINK]).strip(),
        "config_file": run(machine, ["readlink", "-f", f"{entry}/configuration.toml"]).strip(),
        "drop_in": machine.read(DROP_IN).decode(),
    }


def test_upgrade_two_minors_at_once_is_refused_before_any_change(upgraded: Dict[str, Any]) -> None:
    standin = upgraded["standin_skip"]
    assert standin.returncode == 1, standin.stdout + standin.stderr
    assert "kubeadm can upgrade only 1 minor version at a time" in standin.stderr, standin.stderr
    assert "(37 > 35). Such an upgrade is not supported" in standin.stderr, standin.stderr
    refused = upgraded["two_minors"]
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "1 minor version at a time" in refused.stdout + refused.stderr


def test_a_worker_cannot_go_first(cluster: Dict[str, Any], upgraded: Dict[str, Any]) -> None:
    worker = cluster["nodes"][1].machine
    refused = upgraded["worker_first"]
    assert refused.returncode == 3, describe(worker, refused)
    said = refused.stdout + refused.stderr
    assert "newer than the control plane's" in said and "Upgrade the master first" in said, said


def changed_steps(log: str, address: str) -> List[str]:
    """The steps `frakti-install upgrade` changed on one host, as the playbook's
    "Steps that changed" task printed them (JSON after `ok: [ADDRESS] => `)."""
    found: List[str] = []
    for block in re.split(r"\n(?=TASK \[|PLAY \[|PLAY RECAP)", log):
        if not block.startswith("TASK [Steps that changed"):
            continue
        start = block.find(f"ok: [{address}] => ")
        if start < 0:
            continue
        text = block[start + len(f"ok: [{address}] => ") :]
        found += list(json.JSONDecoder().raw_decode(text)[0]["msg"])
    return found


def test_cluster_upgrade_moves_the_master_then_the_worker(
    cluster: Dict[str, Any], upgraded: Dict[str, Any]
) -> None:
    """`cluster -f cluster.yaml upgrade --kubernetes-version v1.36` over SSH: the
    master's play, then the worker's with the master's kubeconfig lent for its
    drain and taken back; a recap line per node without failures."""
    run_ = upgraded["cluster"]
    log = run_["log"]
    assert run_["rc"] == 0, f"cluster upgrade failed:\n{log[-6000:]}"
    order = r"PLAY \[Upgrade the master\].*PLAY \[Upgrade the workers, one at a time\]"
    assert re.search(order, log, re.S), log[-3000:]
    master, worker = cluster["nodes"]
    assert task_results(log, "Upgrade the master (frakti-install upgrade)") == ["changed"], log[
        -3000:
    ]
    assert task_results(log, "Upgrade the worker (frakti-install upgrade --kubeconfig)") == [
        "changed"
    ], log[-3000:]
    assert task_results(log, "Take the lent kubeconfig back") == ["changed"]
    assert not any(run_["lent"].values()), run_["lent"]
    for step in ("kubernetes-repo", "kubeadm-package", "kubeadm-upgrade", "drain",
                 "kubelet-kubectl", "kubelet-restart", "uncordon"):  # fmt: skip
        assert step in changed_steps(log, master.address), changed_steps(log, master.address)
    for step in ("kubeadm-upgrade", "drain", "kubelet-restart", "uncordon"):
        assert step in changed_steps(log, worker.address), changed_steps(log, worker.address)
    lab.check_playbook_log(
        log, cluster["nodes"], master.machine.read("/etc/kubernetes/admin.conf").decode()
    )
    again = upgraded["cluster_again"]
    assert again["rc"] == 0, again["log"][-6000:]
    assert task_results(again["log"], "Upgrade the master (frakti-install upgrade)") == ["ok"]
    assert task_results(
        again["log"], "Upgrade the worker (frakti-install upgrade --kubeconfig)"
    ) == ["ok"]


def test_upgrade_moves_the_master_to_the_next_minor(
    cluster: Dict[str, Any], upgraded: Dict[str, Any]
) -> None:
    master = cluster["nodes"][0].machine
    target = upgraded["target"]
    assert [e["command"] for e in upgrade_log(master)[-2:]] == ["plan", "apply"]
    assert all(e["target"] == target for e in upgrade_log(master)[-2:])
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        text = master.read(f"/etc/kubernetes/manifests/{component}.yaml").decode()
        assert f"image: registry.k8s.io/{component}:{target}" in text, text
    version = json.loads(
        run(master, ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf", "version", "-o",
                     "json"])  # fmt: skip
    )
    assert version["serverVersion"]["gitVersion"] == target, version
    for package in ("kubeadm", "kubelet", "kubectl"):
        installed = run(master, ["dpkg-query", "-W", "-f=${Version}", package])
        assert installed == target.lstrip("v") + "-1.1", (package, installed)
    assert set(run(master, ["apt-mark", "showhold"]).split()) >= {"kubeadm", "kubelet", "kubectl"}
    listed = master.read("/etc/apt/sources.list.d/kubernetes.list").decode()
    assert f"/{UPGRADE_MINOR}/deb/" in listed, listed


def test_upgrade_of_a_worker_follows_the_master_and_needs_a_kubeconfig_to_drain(
    cluster: Dict[str, Any], upgraded: Dict[str, Any]
) -> None:
    worker = cluster["nodes"][1].machine
    target = upgraded["target"]
    nodes = [e for e in upgrade_log(worker) if e["command"] == "node"]
    assert len(nodes) == 1 and nodes[0]["kubeadm"] == target, nodes
    again = upgraded["again"]  # nothing to change: no drain, so no kubeconfig needed
    assert again.returncode == 0, describe(worker, again)
    acted = [s for s in steps_of(again) if s.get("status") not in ("ok", "skip")]
    assert not acted, f"a second upgrade should change nothing, but: {acted}"
    refused = upgraded["refused"]  # a Kata upgrade drains the node
    assert refused.returncode == 3, describe(worker, refused)
    assert "no kubeconfig to drain it with" in refused.stdout + refused.stderr


def test_after_the_upgrade_both_nodes_run_the_new_kubelet_ready_and_schedulable(
    cluster: Dict[str, Any], upgraded: Dict[str, Any]
) -> None:
    seen = cluster_nodes(cluster)
    for name in NAMES:
        obj = seen[name]
        assert obj["status"]["nodeInfo"]["kubeletVersion"] == upgraded["target"], obj["status"]
        ready = [c["status"] for c in obj["status"]["conditions"] if c["type"] == "Ready"]
        assert ready == ["True"], f"{name}: {obj['status']['conditions']}"
        assert not obj["spec"].get("unschedulable"), f"{name} left cordoned: {obj['spec']}"


def test_a_newer_kata_is_switched_to_in_one_rename_on_every_node_and_the_old_tree_removed(
    cluster: Dict[str, Any], upgraded: Dict[str, Any]
) -> None:
    """`cluster -f cluster.yaml upgrade --kata-version V --checksum kata=SUM`:
    Kata is each node's own, so the master and then the worker (drained with the
    lent kubeconfig) each switch /opt/kata; nothing of Kubernetes changes."""
    run_, kata = upgraded["kata_upgrade"], upgraded["kata"]
    log = run_["log"]
    assert run_["rc"] == 0, f"cluster Kata upgrade failed:\n{log[-6000:]}"
    assert not any(run_["lent"].values()), run_["lent"]
    for node, state, drop_in in zip(
        cluster["nodes"],
        (upgraded["after_kata"], upgraded["worker_after_kata"]),
        upgraded["drop_ins"],
    ):
        changed = set(changed_steps(log, node.address))
        assert {"drain", "kata", "kata-prune", "uncordon"} <= changed, (node.name, changed)
        assert not {"kubeadm-upgrade", "kubelet-kubectl"} & changed, (node.name, changed)
        assert state["active"] == f"kata-versions/{kata}", node.name
        assert state["trees"].split() == [kata], node.name
        assert state["shim_link"] == ENTRY_SHIM, node.name
        assert f"version: {kata}," in state["shim"], node.name
        assert state["shim_file"] == f"/opt/kata-versions/{kata}/bin/containerd-shim-kata-v2"
        # containerd's paths did not change: only the link under them
        assert state["drop_in"] == drop_in, node.name
    for name, obj in cluster_nodes(cluster).items():
        assert not obj["spec"].get("unschedulable"), f"{name} left cordoned: {obj['spec']}"


def test_a_kata_of_the_runtime_rs_layout_is_still_one_switch(
    cluster: Dict[str, Any], upgraded: Dict[str, Any]
) -> None:
    """4.x keeps its shim and configuration under runtime-rs/: the shim link and
    the drop-in stay as they were, the new tree's entry links lead there."""
    master = cluster["nodes"][0].machine
    result = upgraded["runtime_rs_upgrade"]
    assert result.returncode == 0, describe(master, result)
    before, after = upgraded["after_kata"], upgraded["after_runtime_rs"]
    tree = f"/opt/kata-versions/{RUNTIME_RS_KATA}"
    assert after["active"] == f"kata-versions/{RUNTIME_RS_KATA}"
    assert after["trees"].split() == [RUNTIME_RS_KATA]
    assert after["shim_link"] == before["shim_link"] == ENTRY_SHIM
    assert after["drop_in"] == before["drop_in"]
    assert after["shim_file"] == f"{tree}/runtime-rs/bin/containerd-shim-kata-v2"
    assert after["config_file"] == (
        f"{tree}/share/defaults/kata-containers/runtime-rs/configuration-qemu-runtime-rs.toml"
    )
    assert f"version: {RUNTIME_RS_KATA}," in after["shim"]
    node = cluster_nodes(cluster)[cluster["nodes"][0].name]
    assert not node["spec"].get("unschedulable"), node["spec"]
