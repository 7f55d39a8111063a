"""A master and two workers on simulated hosts sharing one cluster: join,
allocated subnets, routes, re-runs, departures, and the join token's secrecy."""

from __future__ import annotations

import json

import pytest

from frakti_install import joining, plans, session
from frakti_install.engine import Status
from frakti_install.errors import ConfigError
from tests.unit.simhost import SimCluster, SimMachine, frakti

IPS = {"master": "10.0.0.1", "worker-1": "10.0.0.2", "worker-2": "10.0.0.3"}


def run(m, steps, **settings):
    report = session.execute(steps, m.context(m.settings(**settings)), dry_run=False)
    session.raise_for(report)
    return {r.name: r for r in report.steps}


@pytest.fixture
def cluster(tmp_path):
    shared = SimCluster()
    machines = {
        name: SimMachine(tmp_path / name, "debian", "12", hostname=name, ip=ip, cluster=shared)
        for name, ip in IPS.items()
    }
    run(machines["master"], plans.allinone(frakti()))
    line = joining.create_join_line(machines["master"].context())
    join = dict(join_endpoint=line.endpoint, join_token=line.token, join_ca_hash=line.ca_hash)
    for name in ("worker-1", "worker-2"):
        run(machines[name], plans.node(frakti()), **join)
    return shared, machines, join


def test_workers_join_with_their_own_allocated_subnets(cluster):
    shared, machines, _ = cluster
    subnets = {name: node["spec"]["podCIDR"] for name, node in shared.nodes.items()}
    assert subnets == {
        "master": "10.244.0.0/24",
        "worker-1": "10.244.1.0/24",
        "worker-2": "10.244.2.0/24",
    }
    for name, m in machines.items():
        mynet = json.loads(m.p("/etc/cni/net.d/10-mynet.conf").read_text())
        assert mynet["ipam"]["subnet"] == subnets[name]
    assert not machines["worker-1"].p("/etc/kubernetes/admin.conf").exists()
    assert len(machines["worker-1"].state.inits) == 1  # one kubeadm join


def test_every_node_routes_to_every_other_nodes_pods_and_keeps_them_at_boot(cluster):
    shared, machines, _ = cluster
    for m in machines.values():
        run(m, plans.routes(frakti()))
    assert machines["master"].state.routes == {
        "10.244.1.0/24": "10.0.0.2",
        "10.244.2.0/24": "10.0.0.3",
    }
    assert machines["worker-1"].state.routes == {
        "10.244.0.0/24": "10.0.0.1",
        "10.244.2.0/24": "10.0.0.3",
    }
    unit = machines["worker-2"].p("/etc/systemd/system/frakti-routes.service").read_text()
    assert "ExecStart=/sbin/ip route replace 10.244.0.0/24 via 10.0.0.1" in unit
    assert "ExecStart=/sbin/ip route replace 10.244.1.0/24 via 10.0.0.2" in unit
    assert machines["worker-2"].state.units["frakti-routes.service"].enabled
    again = run(machines["worker-2"], plans.routes(frakti()))
    assert again["routes"].status is Status.OK


def test_rerun_of_a_worker_changes_nothing(cluster):
    _, machines, join = cluster
    run(machines["worker-1"], plans.routes(frakti()))
    mutations = machines["worker-1"].runner.mutations
    steps = run(machines["worker-1"], plans.node(frakti()), **join)
    assert all(r.status in (Status.OK, Status.SKIP) for r in steps.values()), steps
    assert machines["worker-1"].runner.mutations == mutations


def test_routes_follow_a_departing_node(cluster):
    shared, machines, _ = cluster
    run(machines["master"], plans.routes(frakti()))
    del shared.nodes["worker-2"]
    steps = run(machines["master"], plans.routes(frakti()))
    assert "drop the route to departed 10.244.2.0/24: ip route del 10.244.2.0/24" in (
        steps["routes"].changes
    )
    assert machines["master"].state.routes == {"10.244.1.0/24": "10.0.0.2"}
    unit = machines["master"].p("/etc/systemd/system/frakti-routes.service").read_text()
    assert "10.244.2.0/24" not in unit


def test_routes_absorb_a_node_joining_while_they_are_set(cluster):
    # cluster -f joins workers in parallel: another node can register between
    # this node's check of the routes and the verification after applying.
    shared, machines, _ = cluster
    master = machines["master"]
    set_route = master.runner.cmd_ip

    def ip_while_a_node_joins(argv):
        if argv[1:3] == ["route", "replace"] and "late" not in shared.nodes:
            shared.add_node("late", "10.0.0.4", master=False)
        return set_route(argv)

    master.runner.cmd_ip = ip_while_a_node_joins
    steps = run(master, plans.routes(frakti()))
    assert steps["routes"].status is Status.CHANGE
    late_subnet = shared.node("late")["spec"]["podCIDR"]
    assert master.state.routes[late_subnet] == "10.0.0.4"
    unit = master.p("/etc/systemd/system/frakti-routes.service").read_text()
    assert f"route replace {late_subnet} via 10.0.0.4" in unit


def test_hand_picked_subnet_overlapping_another_node_is_refused(cluster, tmp_path):
    shared, machines, join = cluster
    late = SimMachine(
        tmp_path / "late", "debian", "12", hostname="late", ip="10.0.0.4", cluster=shared
    )
    with pytest.raises(ConfigError, match="overlaps node worker-1's pod subnet 10.244.1.0/24"):
        run(late, plans.node(frakti()), node_subnet="10.244.1.0/24", **join)


def test_join_token_is_secret(cluster, caplog):
    _, machines, join = cluster
    token = join["join_token"]
    for m in machines.values():
        journal = m.p("/var/lib/frakti-install/journal.jsonl").read_text()
        assert token not in journal
    fresh = SimMachine(
        machines["master"].root.parent / "fresh",
        "debian",
        "12",
        hostname="fresh",
        ip="10.0.0.9",
        cluster=cluster[0],
    )
    with caplog.at_level("DEBUG", logger="frakti_install"):
        report = session.execute(
            plans.node(frakti()), fresh.context(fresh.settings(**join)), dry_run=False
        )
    session.raise_for(report)
    assert token not in caplog.text and token not in json.dumps(report.as_dict())
    assert "the bootstrap token" in json.dumps(report.as_dict())
    # nor on any command line: kubeadm join read it from its --config file
    assert not [argv for argv in fresh.runner.calls if token in " ".join(argv)]


def test_join_settings_are_validated(tmp_path):
    m = SimMachine(tmp_path / "w", "debian", "12")
    report = session.execute(
        plans.node(frakti()),
        m.context(
            m.settings(
                join_endpoint="10.0.0.1:6443", join_token="short", join_ca_hash="sha256:" + "a" * 64
            )
        ),
        dry_run=False,
    )
    failed = [r for r in report.steps if r.status is Status.FAIL]
    assert failed[0].name == "kubeadm-join" and "bootstrap token" in failed[0].detail


def test_rerun_after_kubeadm_reset_rebuilds_cluster_and_cni_config(tmp_path):
    m = SimMachine(tmp_path / "m", "debian", "12")
    run(m, plans.allinone(frakti()))
    m.runner(["kubeadm", "reset", "-f"], None, None, None)  # what a user did by hand (#154)
    assert not m.p("/etc/cni/net.d/10-mynet.conf").exists()
    run(m, plans.allinone(frakti()))
    assert m.p("/etc/cni/net.d/10-mynet.conf").exists()
    assert m.p("/etc/cni/net.d/99-loopback.conf").exists()
