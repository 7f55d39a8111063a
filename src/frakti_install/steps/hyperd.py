"""hyperd: the hypervisor, the hyperd and hyperstart packages, /etc/hyper/config
with gRPCHost (the packaged config has none, so no gRPC API for frakti)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from frakti_install.actions import InstallPackageFiles
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import VerifyFailed
from frakti_install.steps.common import (
    outdated_hyper_packages,
    package_actions,
    service_actions,
    template_actions,
    wait_for,
)
from frakti_install.steps.preflight import PreflightCheck

if TYPE_CHECKING:
    from frakti_install.context import Context

CONFIG = "/etc/hyper/config"
UNIT = "hyperd.service"
QEMU_NAME = "qemu-system-x86_64"
# hyperd.service sets no PATH (hyperd@v1.1.0:package/dist/lib/systemd/system/
# hyperd.service), so it runs with systemd's default PATH for services.
HYPERD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# What runv (hyperd@v1.1.0:vendor/github.com/hyperhq/runv/hypervisor/qemu/
# qemu_amd64.go) passes to every VM it starts.
QEMU_MACHINE = "pc-i440fx-2.1"
QEMU_DEVICE = "virtio-9p-pci"


def grpc_port(ctx: Context) -> int:
    return int(ctx.settings.hyper_grpc.rsplit(":", 1)[1])


def qemu_data(ctx: Context) -> Dict[str, Any]:
    """This family's hyperd_qemu entry (data/profiles.yaml)."""
    return dict(ctx.profile.extra["hyperd_qemu"])


def qemu_on_path(ctx: Context) -> Optional[str]:
    """The qemu-system-x86_64 hyperd runs: the first executable one on its
    PATH, as Go's exec.LookPath finds it (a dangling link is skipped)."""
    for directory in HYPERD_PATH:
        candidate = f"{directory}/{QEMU_NAME}"
        if ctx.host.exists(candidate) and ctx.host.access(candidate, os.X_OK):
            return candidate
    return None


def qemu_problem(ctx: Context, *, installed: bool) -> Optional[str]:
    """Why hyperd could not start a VM with the QEMU it will find, or None.
    installed=False (preflight): a missing binary is fine when a package of
    the plan brings it."""
    data = qemu_data(ctx)
    found = qemu_on_path(ctx)
    if found is None:
        if not installed and data["installed_by"]:
            return None  # the hypervisor packages bring it; verify checks it
        where = ":".join(HYPERD_PATH)
        return f"no executable {QEMU_NAME} on hyperd's PATH ({where}), which hyperd needs"
    shown = found
    target = ctx.host.readlink(found)
    if target is not None:
        shown = f"{found} (a link to {target})"
    machines_ok, machines = ctx.facts.runs((found, "-machine", "help"))
    devices_ok, devices = ctx.facts.runs((found, "-device", "help"))
    if not (machines_ok and devices_ok):
        return f"{shown} does not run: {machines if not machines_ok else devices}"
    lacking = []
    if QEMU_MACHINE not in machines.split():
        lacking.append(f"the {QEMU_MACHINE} machine type")
    if f'"{QEMU_DEVICE}"' not in devices and QEMU_DEVICE not in devices.split():
        lacking.append(f"the {QEMU_DEVICE} device (virtfs)")
    if lacking:
        return (
            f"hyperd would run {shown}, which lacks {' and '.join(lacking)}; "
            "hyperd starts every VM with both"
        )
    return None


def _qemu_preflight(ctx: Context) -> Optional[str]:
    return qemu_problem(ctx, installed=False)


def _qemu_hint(ctx: Context) -> str:
    return str(qemu_data(ctx)["fix"])


HYPERD_QEMU_CHECK = PreflightCheck("HyperdQemu", _qemu_preflight, _qemu_hint)


class Hyperd(Step):
    name = "hyperd"
    title = "hyperd and hyperstart"

    def check(self, ctx: Context) -> Check:
        actions: List[Action] = package_actions(ctx, ctx.profile.packages["hypervisor"])
        outdated = outdated_hyper_packages(ctx)
        how = "; ".join(
            f"{name}: {ctx.artifacts.get(name).verified_with()}" for name in outdated
        )
        inputs: List[Action] = [InstallPackageFiles(outdated, how)] if outdated else []
        inputs += template_actions(
            ctx,
            CONFIG,
            "hyper-config.j2",
            kernel="/var/lib/hyper/kernel",
            initrd="/var/lib/hyper/hyper-initrd.img",
            hypervisor="qemu",
            storage_driver="overlay",
            grpc_host=ctx.settings.hyper_grpc,
        )
        actions += service_actions(ctx, UNIT, inputs)
        if not actions:
            return Check.ok(
                f"hyperd {ctx.runtime.version('hyperd')} running with gRPC on "
                f"{ctx.settings.hyper_grpc}"
            )
        return Check(actions)

    def verify(self, ctx: Context) -> None:
        problem = qemu_problem(ctx, installed=True)
        if problem:
            raise VerifyFailed(
                f"hyperd cannot start pods: {problem}", hint=str(qemu_data(ctx)["fix"])
            )
        port = grpc_port(ctx)
        wait_for(
            lambda: port in ctx.facts.listening_ports(),
            f"hyperd is not listening on {ctx.settings.hyper_grpc}",
            30,
            ctx,
        )
        super().verify(ctx)
