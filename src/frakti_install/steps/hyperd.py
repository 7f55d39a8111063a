"""hyperd: the hypervisor, the hyperd and hyperstart packages, /etc/hyper/config
with gRPCHost (the packaged config has none, so no gRPC API for frakti)."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from frakti_install.actions import InstallPackageFiles
from frakti_install.engine import Action, Check, Step
from frakti_install.steps.common import (
    outdated_hyper_packages,
    package_actions,
    service_actions,
    template_actions,
    wait_for,
)

if TYPE_CHECKING:
    from frakti_install.context import Context

CONFIG = "/etc/hyper/config"
UNIT = "hyperd.service"


def grpc_port(ctx: Context) -> int:
    return int(ctx.settings.hyper_grpc.rsplit(":", 1)[1])


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
        port = grpc_port(ctx)
        wait_for(
            lambda: port in ctx.facts.listening_ports(),
            f"hyperd is not listening on {ctx.settings.hyper_grpc}",
            30,
            ctx,
        )
        super().verify(ctx)
