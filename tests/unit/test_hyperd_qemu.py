"""hyperd runs the qemu-system-x86_64 on its PATH (runv's exec.LookPath) and
starts every VM with -machine pc-i440fx-2.1 and -device virtio-9p-pci
(hyperd@v1.1.0:vendor/github.com/hyperhq/runv/hypervisor/qemu/qemu.go,
qemu_amd64.go). EL's qemu-kvm installs only /usr/libexec/qemu-kvm, with RHEL
machine types and no 9p, so on EL the QEMU must be hyper's qemu-hyper."""

from __future__ import annotations

import pytest

from frakti_install import plans, session
from frakti_install.errors import PreflightFailed, VerifyFailed
from frakti_install.steps import hyperd
from tests.unit import simhost
from tests.unit.simhost import SimMachine, frakti


def apply(m: SimMachine) -> session.Report:
    report = session.execute(plans.allinone(frakti()), m.context(), dry_run=False)
    session.raise_for(report)
    return report


@pytest.mark.parametrize("os_id,version", [("rocky", "9.3"), ("centos", "7"), ("rhel", "8.10")])
def test_el_without_a_usable_qemu_stops_before_any_change(machine, os_id, version):
    # Before: the hyperd step installed qemu-kvm and left no qemu-system-x86_64
    # on hyperd's PATH; hyperd could not start. Now preflight says so first.
    m = machine(os_id, version, qemu_hyper=False)
    with pytest.raises(PreflightFailed) as caught:
        apply(m)
    message = str(caught.value) + (caught.value.hint or "")
    assert "[HyperdQemu] no executable qemu-system-x86_64 on hyperd's PATH" in message
    assert "qemu-hyper-2.4.1-3.el7.centos.x86_64.rpm" in message
    assert m.runner.mutations == 0 and not m.p("/etc/hyper/config").exists()


def test_a_link_to_el_qemu_kvm_is_refused_with_the_reason(machine):
    # what the error tempts a user to do: hyperd would start, no pod VM would
    m = machine("rocky", "9.3", qemu_hyper=False)
    m.runner._install(["qemu-kvm"])
    m.runner.p("/usr/local/bin").mkdir(parents=True, exist_ok=True)
    # relative: an absolute link would leave the simulated root
    m.p("/usr/local/bin/qemu-system-x86_64").symlink_to("../../libexec/qemu-kvm")
    with pytest.raises(PreflightFailed) as caught:
        apply(m)
    text = str(caught.value)
    assert "/usr/local/bin/qemu-system-x86_64 (a link to ../../libexec/qemu-kvm)" in text
    assert "pc-i440fx-2.1 machine type and the virtio-9p-pci device" in text
    assert m.runner.mutations == 0


def test_a_shadowing_qemu_earlier_on_path_is_the_one_checked(machine):
    # qemu-hyper is in /usr/bin, but /usr/local/bin comes first on hyperd's PATH
    m = machine("rocky", "9.3")
    m.runner.write("/usr/local/bin/qemu-system-x86_64", simhost.QEMU_KVM_EL, 0o755)
    ctx = m.context()
    assert hyperd.qemu_on_path(ctx) == "/usr/local/bin/qemu-system-x86_64"
    assert "lacks the pc-i440fx-2.1" in (hyperd.qemu_problem(ctx, installed=False) or "")


@pytest.mark.parametrize("os_id,version", [("rocky", "9.3"), ("debian", "12"), ("ubuntu", "18.04")])
def test_after_install_hyperd_finds_a_qemu_it_can_run(machine, os_id, version):
    m = machine(os_id, version)
    apply(m)
    ctx = m.context()
    assert hyperd.qemu_on_path(ctx) == "/usr/bin/qemu-system-x86_64"
    assert hyperd.qemu_problem(ctx, installed=True) is None
    assert not m.p("/usr/libexec/qemu-kvm").exists()  # EL's qemu-kvm is no longer installed


def test_a_non_executable_qemu_is_not_found(machine):
    m = machine("rocky", "9.3")
    m.p("/usr/bin/qemu-system-x86_64").chmod(0o644)
    assert hyperd.qemu_on_path(m.context()) is None


def test_verify_names_a_qemu_without_the_machine_type(machine, monkeypatch):
    # a distro QEMU 9.1 or later (pc-i440fx-2.0..2.3 removed): hyperd would start
    # but no VM; the hyperd step's verify says so instead of reporting success
    newer = simhost.sim_qemu(
        "Supported machines are:\npc-i440fx-9.1        Standard PC (i440FX + PIIX, 1996)",
        'name "virtio-9p-pci", bus PCI',
    )
    monkeypatch.setitem(
        simhost.PACKAGE_FILES, "qemu-system-x86", {"/usr/bin/qemu-system-x86_64": newer}
    )
    m = machine("debian", "12")
    with pytest.raises(VerifyFailed) as caught:
        apply(m)
    assert "hyperd cannot start pods" in str(caught.value)
    assert "lacks the pc-i440fx-2.1 machine type" in str(caught.value)
    assert "QEMU 2.1 to 9.0" in (caught.value.hint or "")
