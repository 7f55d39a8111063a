"""The facts that decide whether a node can run pods in VMs, read without
starting a pod: KVM, the kernel modules, the runtime handler the CRI runtime
runs with, the RuntimeClass. A runtime profile lists the checks it needs
(Runtime.isolation_checks); `verify` adds the proof (a pod per node) and
`status --json` shows these facts alone.

What can be read where: on this host, everything (through the Host). For
another node only what the API server knows: its status (nodeInfo, the
runtime handlers it reports, Ready) and the cluster's RuntimeClass; its
/dev/kvm, CPU flags and modules cannot be read from here, so those checks
say "unknown" (ok None) and the verify pod on that node decides.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence

from frakti_install import pods
from frakti_install.constants import ADMIN_CONF
from frakti_install.probes import tail

if TYPE_CHECKING:
    from frakti_install.context import Context

NOT_FROM_HERE = "not readable from this host (another node); its verify pod shows the effect"


@dataclass(frozen=True)
class Finding:
    """One check's answer: ok True/False, or None when it could not be read."""

    name: str
    ok: Optional[bool]
    detail: str
    fix: str = ""
    blocking: bool = True  # a False here means the node does not isolate pods
    observed: Dict[str, str] = field(default_factory=dict)  # kernel, boot id, pod name ...

    @property
    def failed(self) -> bool:
        return self.ok is False and self.blocking

    def as_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"name": self.name, "ok": self.ok, "detail": self.detail}
        if self.ok is False:
            data["fix"] = self.fix
            data["blocking"] = self.blocking
        data.update(self.observed)
        return data


@dataclass(frozen=True)
class NodeView:
    """A node as the API server shows it, and whether it is this host."""

    name: str
    obj: Dict[str, Any]
    local: bool

    @property
    def system(self) -> pods.NodeSystem:
        return pods.node_system(self.obj)


Probe = Callable[["Context", NodeView], Finding]


@dataclass(frozen=True)
class IsolationCheck:
    name: str
    probe: Probe

    def run(self, ctx: Context, node: NodeView) -> Finding:
        return self.probe(ctx, node)


@dataclass(frozen=True)
class PodShape:
    """What a profile puts in a pod to send it to a VM, or to the host's kernel."""

    what: str  # in words, for the report: "runtimeClassName: kata", "privileged"
    spec: Dict[str, Any] = field(default_factory=dict)  # merged into the pod's spec
    container: Dict[str, Any] = field(default_factory=dict)  # merged into its container
    fix: str = ""  # what to do when such a pod lands on the wrong kernel
    sandbox_fix: str = ""  # what to do when the runtime cannot make such a pod's sandbox


def unknown(name: str) -> Finding:
    return Finding(name, None, NOT_FROM_HERE)


# --- checks every profile may list -------------------------------------------------
def ready() -> IsolationCheck:
    def probe(ctx: Context, node: NodeView) -> Finding:
        for condition in (node.obj.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready":
                if condition.get("status") == "True":
                    return Finding("ready", True, "the node is Ready")
                why = condition.get("message") or condition.get("reason") or "not Ready"
                return Finding(
                    "ready",
                    False,
                    f"the node is not Ready: {why}",
                    f"See 'journalctl -u kubelet' on {node.name}.",
                )
        return Finding(
            "ready", False, "the node reports no Ready condition", "Is its kubelet running?"
        )

    return IsolationCheck("ready", probe)


def kvm(*, blocking: bool, without: str) -> IsolationCheck:
    """/dev/kvm usable and the vmx/svm CPU flag; `without`: what happens without it."""

    def probe(ctx: Context, node: NodeView) -> Finding:
        if not node.local:
            return unknown("kvm")
        why = ctx.facts.kvm_problem()
        if why is None:
            return Finding("kvm", True, "/dev/kvm usable, CPU flag vmx/svm present")
        return Finding(
            "kvm",
            False,
            f"{why}: {without}",
            "Enable VT-x/AMD-V in the firmware (or nested virtualisation for a VM) and "
            "check that /dev/kvm exists and is readable and writable by root.",
            blocking=blocking,
        )

    return IsolationCheck("kvm", probe)


def modules(names: Sequence[str], *, why: str) -> IsolationCheck:
    """Kernel modules present (loaded, or their device node there)."""

    def probe(ctx: Context, node: NodeView) -> Finding:
        if not node.local:
            return unknown("modules")
        missing = [name for name in names if not ctx.facts.module_present(name)]
        if not missing:
            return Finding("modules", True, f"{' and '.join(names)} present")
        return Finding(
            "modules",
            False,
            f"{' and '.join(missing)} not loaded: {why}",
            f"modprobe {' '.join(missing)} (and see /etc/modules-load.d); a kernel "
            "without them needs CONFIG_VHOST_VSOCK and CONFIG_VHOST_NET.",
        )

    return IsolationCheck("modules", probe)


def changed_since_start(ctx: Context, unit: str, paths: Sequence[str]) -> Optional[str]:
    """The first of `paths` (a file, or a glob of files) modified after the unit's main
    process started, or None (also when that cannot be read)."""
    pid = ctx.facts.unit(unit).main_pid
    if pid <= 0:
        return None
    started = pods.process_started(
        ctx.host.read_text(f"/proc/{pid}/stat"),
        ctx.host.read_text("/proc/stat"),
        os.sysconf("SC_CLK_TCK"),
    )
    if started is None:
        return None
    for pattern in paths:
        folder, name = posixpath.split(pattern)
        names = (
            sorted(fnmatch.filter(ctx.host.listdir(folder), name))
            if any(c in name for c in "*?[")
            else [name]
        )
        for found in names:
            path = posixpath.join(folder, found)
            st = ctx.host.stat(path)
            if st is not None and st.st_mtime > started + 1:  # +1: the clocks' rounding
                return path
    return None


def cri_handler(
    handler: str,
    *,
    socket: str,
    runtime_type: str,
    config: str,
    runtimes_at: Callable[[int], Sequence[str]],
    unit: str = "",
    reads: Sequence[str] = (),
) -> IsolationCheck:
    """The handler is one the CRI runtime runs with: on this host from `crictl
    info` (the live configuration), or, without crictl, from `containerd config
    dump` (the files as containerd merges them; they are what containerd runs
    with only when none of them, `reads`, changed after `unit` started); on
    another node from the runtime handlers its kubelet reports, when it reports
    them."""
    fix = (
        f"Run frakti-install again on the node (it writes containerd's {handler} runtime "
        f"and restarts containerd); 'containerd config dump' must show runtime_type "
        f"{runtime_type} under the {handler} runtime."
    )

    def probe(ctx: Context, node: NodeView) -> Finding:
        if not node.local:
            reported = node.system.handlers
            if reported is None:
                return unknown("handler")
            if handler in reported:
                return Finding("handler", True, f"the node reports runtime handler {handler}")
            return Finding(
                "handler",
                False,
                f"the node reports runtime handlers {', '.join(sorted(reported))}, not {handler}",
                fix,
            )
        if ctx.facts.binary("crictl"):
            ok, output = ctx.facts.runs(
                ("crictl", "--runtime-endpoint", f"unix://{socket}", "info"), timeout=30
            )
            live = pods.crictl_handlers(output) if ok else None
            if not ok:
                return Finding(
                    "handler",
                    False,
                    f"the CRI runtime does not answer on {socket}: {tail(output)}",
                    "systemctl status containerd; journalctl -u containerd",
                )
            if live is not None:
                if handler in live:
                    return Finding(
                        "handler", True, f"containerd runs with the {handler} handler (crictl info)"
                    )
                return Finding(
                    "handler",
                    False,
                    f"containerd runs without a {handler} handler "
                    f"(crictl info: {', '.join(sorted(live)) or 'none'})",
                    fix,
                )
        dump = ctx.facts.containerd_config(config)
        if not dump.ok:
            return Finding(
                "handler", False, f"containerd cannot read its configuration: {dump.error}", fix
            )
        # the dump is in the newest config version that containerd release reads
        found = dump.get(*runtimes_at(dump.version), handler, "runtime_type", default="")
        stale = changed_since_start(ctx, unit, reads) if unit else None
        if found == runtime_type and stale:
            return Finding(
                "handler",
                False,
                f"containerd's files have the {handler} handler, but {stale} changed after "
                "containerd started: it runs with what it read then, maybe without it",
                f"systemctl restart {unit}",
                blocking=False,  # what containerd runs with shows in the verify pod
            )
        if found == runtime_type:
            return Finding(
                "handler",
                True,
                f"containerd's configuration has the {handler} handler ({runtime_type}; "
                "config dump, crictl is not installed)",
            )
        return Finding(
            "handler", False, f"containerd's configuration has no {handler} handler", fix
        )

    return IsolationCheck("handler", probe)


def node_runtime(runtime_name: str, *, what: str, fix: str) -> IsolationCheck:
    """The CRI runtime kubelet talks to, from the node's containerRuntimeVersion
    ("<RuntimeName>://<version>"): readable for every node."""

    def probe(ctx: Context, node: NodeView) -> Finding:
        reported = node.system.runtime
        if reported.startswith(runtime_name + "://"):
            return Finding("cri-runtime", True, f"kubelet runs pods through {what} ({reported})")
        return Finding(
            "cri-runtime",
            False,
            f"kubelet's runtime is {reported or 'not reported'}, not {what} ({runtime_name}://...)",
            fix,
        )

    return IsolationCheck("cri-runtime", probe)


def cri_answers(socket: str, *, what: str, fix: str) -> IsolationCheck:
    """On this host: the CRI socket answers `crictl version`."""

    def probe(ctx: Context, node: NodeView) -> Finding:
        if not node.local:
            return unknown("cri-socket")
        if not ctx.host.exists(socket):
            why = f"{socket} does not exist: {what} is not running"
            return Finding("cri-socket", False, why, fix)
        ok, output = ctx.facts.runs(
            ("crictl", "--runtime-endpoint", f"unix://{socket}", "version"), timeout=30
        )
        if not ok:
            return Finding(
                "cri-socket", False, f"{what} does not answer on {socket}: {tail(output)}", fix
            )
        name = pods.crictl_runtime_name(output) or "?"
        return Finding("cri-socket", True, f"{what} answers on {socket} (RuntimeName {name})")

    return IsolationCheck("cri-socket", probe)


def listening(port: int, *, what: str, fix: str) -> IsolationCheck:
    """On this host: something listens on the TCP port (hyperd's gRPC)."""

    def probe(ctx: Context, node: NodeView) -> Finding:
        if not node.local:
            return unknown("grpc")
        if port in ctx.facts.listening_ports():
            return Finding("grpc", True, f"{what} listens on port {port}")
        return Finding("grpc", False, f"nothing listens on port {port}: {what} is down", fix)

    return IsolationCheck("grpc", probe)


def runtime_class(name: str, handler: str, overhead: Dict[str, str]) -> IsolationCheck:
    """The cluster's RuntimeClass exists, with the handler and pod overhead wanted."""
    fix = (
        f"Run 'frakti-install allinone --runtime kata' on the master again: it (re)creates "
        f"RuntimeClass {name} (a wrong handler: kubectl delete runtimeclass {name} first)."
    )

    def probe(ctx: Context, node: NodeView) -> Finding:
        current = ctx.facts.runtime_class(ADMIN_CONF, name)
        if current is None:
            return Finding("runtimeclass", False, f"there is no RuntimeClass {name}", fix)
        if current.get("handler") != handler:
            return Finding(
                "runtimeclass",
                False,
                f"RuntimeClass {name} has handler {current.get('handler')!r}, not {handler!r}",
                fix,
            )
        found = (current.get("overhead") or {}).get("podFixed") or {}
        if found != overhead:
            shown = ", ".join(f"{k} {v}" for k, v in sorted(found.items())) or "none"
            return Finding(
                "runtimeclass",
                False,
                f"RuntimeClass {name} has pod overhead {shown}, not "
                + ", ".join(f"{k} {v}" for k, v in sorted(overhead.items())),
                fix,
                blocking=False,  # pods still run in VMs; the scheduler just undercounts them
            )
        return Finding("runtimeclass", True, f"RuntimeClass {name}: handler {handler}, overhead ok")

    return IsolationCheck("runtimeclass", probe)


def local_node_name(ctx: Context) -> str:
    """This host's node name: kubeadm registers the lower-cased hostname."""
    return ctx.facts.hostname().lower()
