"""reset undoes what allinone did, from the journal, and allinone works again after it."""

from __future__ import annotations

import pytest

from frakti_install import plans, session
from frakti_install.engine import Status
from frakti_install.steps.reset import without_our_rules
from tests.unit.simhost import frakti

# What reset keeps, as README.md says: the journal, backups and lock under
# /var/lib/frakti-install and the log /var/log/frakti-install.log; the download cache
# (the simulation's is /var/cache/sim) and the simulation's own records (/var/lib/sim).
STATE_DIRS = (
    "var/lib/frakti-install",
    "var/log/frakti-install.log",
    "var/cache/frakti-install",
    "var/cache/sim",
    "var/lib/sim",
)


def var_files(m):
    """Every file under /var (snapshot() covers /etc, /usr, /lib and /opt)."""
    found = m.p("var").rglob("*") if m.p("var").exists() else []
    return {
        str(path.relative_to(m.root)): path.read_bytes()
        for path in found
        if path.is_file() and not str(path.relative_to(m.root)).startswith(STATE_DIRS)
    }


def run(m, steps, dry_run=False):
    report = session.execute(steps, m.context(), dry_run=dry_run)
    session.raise_for(report)
    return report


def host_listing(m):
    listing = {k: v for k, v in m.snapshot().items() if not k.startswith(STATE_DIRS)}
    listing.update({f"{k}": v.hex()[:24] for k, v in var_files(m).items()})
    return listing


@pytest.mark.parametrize("os_id,version", [("debian", "12"), ("rocky", "9.3")])
def test_reset_purge_returns_host_to_before(machine, os_id, version):
    m = machine(os_id, version)
    m.runner.write("/etc/hyper/config", "Kernel=/mine\n")  # a file of the user's we replace
    before = host_listing(m)
    run(m, plans.allinone(frakti()))
    assert host_listing(m) != before

    report = run(m, plans.reset(frakti(), purge=True))

    assert {r.name for r in report.steps if r.status is Status.CHANGE} == {
        "kubeadm-reset",
        "services",
        "network",
        "files",
        "packages",
        "forget",
    }
    assert host_listing(m) == before
    assert m.p("/etc/hyper/config").read_text() == "Kernel=/mine\n"
    assert "DROP" in m.state.iptables and "KUBE-" not in m.state.iptables

    again = run(m, plans.reset(frakti(), purge=True))
    assert all(r.status in (Status.OK, Status.SKIP) for r in again.steps), again.steps

    run(m, plans.allinone(frakti()))  # and the host can be installed again
    assert len(m.state.inits) == 2 and m.state.cluster.node("node-1")["spec"]["taints"] == []


def test_reset_without_purge_keeps_packages(machine):
    m = machine()
    run(m, plans.allinone(frakti()))
    report = run(m, plans.reset(frakti()))
    packages = next(r for r in report.steps if r.name == "packages")
    assert packages.status is Status.SKIP and "--purge removes" in packages.detail
    assert "docker.io" in m.state.packages
    assert not m.p("/usr/bin/kubelet").exists() and not m.p("/etc/cni/net.d/10-mynet.conf").exists()


def test_reset_dry_run_lists_and_changes_nothing(machine):
    m = machine()
    run(m, plans.allinone(frakti()))
    before = m.snapshot()
    report = run(m, plans.reset(frakti(), purge=True), dry_run=True)
    files = next(r for r in report.steps if r.name == "files")
    assert "remove /usr/bin/frakti" in files.changes
    assert m.snapshot() == before


def test_services_we_did_not_enable_are_left_alone(machine):
    from tests.unit.simhost import UnitState

    m = machine()
    m.state.packages["docker.io"] = "20.10"  # docker was there before us, already running
    m.runner.write("/usr/bin/docker", "#!/bin/sh\n", 0o755)
    m.state.units["docker.service"] = UnitState(enabled=True, active=True)
    run(m, plans.allinone(frakti()))
    run(m, plans.reset(frakti(), purge=True))
    assert m.state.units["docker.service"].active and "docker.io" in m.state.packages


def test_iptables_filter_keeps_foreign_rules():
    rules = (
        "*nat\n:KUBE-X - [0:0]\n:MINE - [0:0]\n-A PREROUTING -j KUBE-X\n-A MINE -j ACCEPT\nCOMMIT\n"
    )
    assert without_our_rules(rules) == "*nat\n:MINE - [0:0]\n-A MINE -j ACCEPT\nCOMMIT\n"


def test_purge_deletes_runtime_data_of_our_packages_only(machine):
    m = machine()
    run(m, plans.allinone(frakti()))
    for path in (
        "/var/lib/docker/image/x",
        "/var/lib/hyper/vm/y",
        "/var/lib/cni/networks/z",
        "/home/user/keep",
    ):
        m.runner.write(path, "data\n")
    report = run(m, plans.reset(frakti(), purge=True))
    packages = next(r for r in report.steps if r.name == "packages")
    assert "delete /var/lib/docker (runtime data)" in packages.changes
    for gone in ("/var/lib/docker", "/var/lib/hyper", "/var/lib/cni"):
        assert not m.p(gone).exists(), gone
    assert m.p("/home/user/keep").exists()
