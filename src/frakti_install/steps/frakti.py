"""frakti: the binary (verified download) and frakti.service."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from frakti_install.engine import Check, Step
from frakti_install.steps.common import (
    artifact_actions,
    service_actions,
    template_actions,
    wait_for,
)

if TYPE_CHECKING:
    from frakti_install.context import Context

BINARY = "/usr/bin/frakti"
UNIT = "frakti.service"
CNI_NET_DIR = "/etc/cni/net.d"


def frakti_args(ctx: Context) -> List[str]:
    # No --streaming-server-addr: since v1.9 frakti picks the node address
    # itself, and upstream's %H resolved to 127.0.1.1 on Debian-style hosts.
    return [
        "--v=3",
        "--log-dir=/var/log/frakti",
        "--logtostderr=false",
        f"--cgroup-driver={ctx.runtime.cgroup_driver(ctx)}",
        f"--listen={ctx.settings.frakti_socket}",
        f"--hyper-endpoint={ctx.settings.hyper_grpc}",
        f"--streaming-server-port={ctx.settings.streaming_port}",
        f"--cni-net-dir={CNI_NET_DIR}",
        f"--cni-plugin-dir={ctx.profile.cni_bin_dir}",
    ]


def unit_path(ctx: Context) -> str:
    return f"{ctx.profile.unit_dir}/{UNIT}"


class Frakti(Step):
    name = "frakti"
    title = "frakti runtime"

    def check(self, ctx: Context) -> Check:
        binary = artifact_actions(ctx, "frakti", BINARY)
        unit = template_actions(ctx, unit_path(ctx), "frakti.service.j2", args=frakti_args(ctx))
        actions = service_actions(ctx, UNIT, binary + unit, unit_files_changed=bool(unit))
        if not actions:
            return Check.ok(
                f"frakti {ctx.runtime.version('frakti')} running on "
                f"{ctx.settings.frakti_socket} (cgroup driver {ctx.runtime.cgroup_driver(ctx)})"
            )
        return Check(actions)

    def verify(self, ctx: Context) -> None:
        wait_for(
            lambda: ctx.host.exists(ctx.settings.frakti_socket),
            f"frakti did not create {ctx.settings.frakti_socket}",
            30,
            ctx,
        )
        super().verify(ctx)
