"""Each preflight check: what trips it, and that nothing changes when it does."""

from __future__ import annotations

import pytest

from frakti_install import plans, session
from frakti_install.engine import Status
from frakti_install.errors import PreflightFailed, UnsupportedOS
from frakti_install.steps.preflight import Preflight
from tests.unit.simhost import UnitState, frakti


def preflight_error(m, **settings) -> str:
    with pytest.raises(PreflightFailed) as info:
        Preflight().check(m.context(m.settings(**settings)))
    return str(info.value)


def test_clean_host_passes_with_reason(machine):
    check = Preflight().check(machine().context())
    assert not check.needed and check.reason.startswith("17 checks passed")


def test_swap_is_fatal_with_hint(machine):
    message = preflight_error(machine(swap=True))
    assert "[Swap] swap is on (/swapfile)" in message and "--disable-swap" in message


def test_cgroup_v2_explains_kernel_parameter(machine):
    message = preflight_error(machine("ubuntu", "22.04", cgroup=2))
    assert "[CgroupV1]" in message and "systemd.unified_cgroup_hierarchy=0" in message


def test_taken_port_is_named(machine):
    m = machine()
    m.state.other_listeners.add(6443)
    m.runner._refresh_ports()
    ctx = m.context()
    with pytest.raises(PreflightFailed, match=r"\[Port\] port\(s\) 6443 already in use"):
        Preflight().check(ctx)


def test_docker_cgroup_driver_disagreement(machine):
    m = machine()
    m.runner.write("/usr/bin/docker", "#!/bin/sh\n", 0o755)
    m.state.units["docker.service"] = UnitState(enabled=True, active=True)
    m.state.docker_driver = "systemd"
    message = preflight_error(m, cgroup_driver="cgroupfs")
    assert "[CgroupDriver] docker uses the systemd cgroup driver but cgroupfs" in message


def test_missing_checksum_names_the_artifacts(machine):
    message = preflight_error(machine(), checksums={})
    assert "no sha256 given for crictl, frakti, hypercontainer, hyperstart" in message


def test_no_kvm_only_warns(machine):
    check = Preflight().check(machine(cpu_flags="fpu sse").context())
    assert "[KVM] the CPU shows no vmx/svm flag" in check.reason


def test_ignored_check_becomes_warning(machine):
    m = machine(swap=True)
    check = Preflight().check(m.context(m.settings(ignore_preflight_errors=("swap",))))
    assert "[Swap]" in check.reason


def test_failed_preflight_changes_nothing(machine):
    m = machine(swap=True)
    report = session.execute(plans.allinone(frakti()), m.context(), dry_run=False)
    assert [r.status for r in report.steps] == [Status.FAIL]
    assert m.runner.mutations == 0
    assert not m.p("/etc/modules-load.d/frakti-install.conf").exists()


def test_unresolvable_hostname(machine):
    m = machine()
    m.runner.write("/etc/hosts", "127.0.0.1 localhost\n")
    assert "[Hostname] the hostname 'Node-1' does not resolve" in preflight_error(m)


def test_missing_binaries_are_listed(machine):
    m = machine()
    m.p("/usr/bin/nsenter").unlink()
    m.p("/usr/bin/tc").unlink()
    assert "[FileExisting] missing nsenter, tc" in preflight_error(m)


def test_disable_swap_turns_it_off_now_and_at_boot(machine):
    m = machine(swap=True)
    report = session.execute(
        plans.allinone(frakti()), m.context(m.settings(disable_swap=True)), dry_run=False
    )
    session.raise_for(report)
    swap = next(r for r in report.steps if r.name == "swap")
    assert swap.changes == ["turn swap off now: swapoff -a", "update /etc/fstab"]
    assert m.p("/proc/swaps").read_text().count("\n") == 1
    fstab = m.p("/etc/fstab").read_text()
    assert "# disabled by frakti-install: /swapfile none swap sw 0 0" in fstab
    assert "UUID=abc / ext4 defaults 0 1" in fstab
    again = session.execute(
        plans.allinone(frakti()), m.context(m.settings(disable_swap=True)), dry_run=True
    )
    assert next(r for r in again.steps if r.name == "swap").status is Status.OK


def test_builtin_br_netfilter_and_overlay_need_no_modprobe(machine):
    from frakti_install.steps.kernel import Kernel

    m = machine()
    # built into the kernel: no /sys/module entry, but the sysctls and the filesystem exist
    m.runner.write("/proc/sys/net/bridge/bridge-nf-call-iptables", "0\n")
    m.runner.write("/proc/filesystems", "nodev\tproc\nnodev\toverlay\n")
    changes = [a.describe() for a in Kernel().check(m.context()).actions]
    assert not any("modprobe" in change for change in changes), changes
    assert any("sysctl" in change for change in changes)


def test_docker_daemon_json_driver_is_seen_before_docker_runs(machine):
    m = machine()
    m.runner.write("/etc/docker/daemon.json", '{"exec-opts": ["native.cgroupdriver=systemd"]}')
    message = preflight_error(m, cgroup_driver="cgroupfs")
    assert "[CgroupDriver] docker uses the systemd cgroup driver but cgroupfs" in message
    # with auto, everyone follows docker's configured driver
    assert (lambda ctx: ctx.runtime.cgroup_driver(ctx))(m.context()) == "systemd"


@pytest.mark.parametrize("os_id, version", [("debian", "13"), ("rocky", "10.0")])
def test_a_kata_only_system_is_refused_by_frakti_even_on_cgroup_v1(machine, os_id, version):
    import tests.unit.simkata  # noqa: F401  the kata systems' os-release files

    m = machine(os_id, version, cgroup=1)
    with pytest.raises(UnsupportedOS) as info:
        Preflight().check(m.context())
    assert "not supported by the frakti runtime profile (only by kata)" in str(info.value)
    assert info.value.hint == "Use --runtime kata."
