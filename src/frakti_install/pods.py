"""Pure readers of what kubectl and crictl say about nodes and pods, for
`verify` and the isolation facts of `status`.

No I/O here (as probes.py): the caller runs the command and hands its output
in. Tested on captured shapes in tests/unit/test_verify.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Optional

from frakti_install.probes import parse_json_object, tail


@dataclass(frozen=True)
class NodeSystem:
    """status.nodeInfo (NodeSystemInfo) and status.runtimeHandlers of a Node."""

    kernel: str  # kernelVersion: `uname -r` on the node
    boot_id: str  # bootID
    runtime: str  # containerRuntimeVersion: "<CRI RuntimeName>://<version>"
    handlers: Optional[FrozenSet[str]]  # runtimeHandlers' names; None when not reported


def node_system(node: Dict[str, Any]) -> NodeSystem:
    status = node.get("status") or {}
    info = status.get("nodeInfo") or {}
    reported = status.get("runtimeHandlers")
    handlers = (
        frozenset(str(h.get("name") or "") for h in reported if isinstance(h, dict))
        if isinstance(reported, list) and reported
        else None
    )
    return NodeSystem(
        kernel=str(info.get("kernelVersion") or ""),
        boot_id=str(info.get("bootID") or ""),
        runtime=str(info.get("containerRuntimeVersion") or ""),
        handlers=handlers,
    )


def node_name(node: Dict[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name") or "")


# --- pods ----------------------------------------------------------------------
@dataclass(frozen=True)
class PodState:
    phase: str  # Pending | Running | Succeeded | Failed | Unknown | "" (not found)
    reason: str  # why it is not done yet, or why it failed ("" when nothing said)
    exit_code: Optional[int] = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def pod_state(pod: Optional[Dict[str, Any]]) -> PodState:
    """Where a pod is, from its status (containerStatuses' waiting or terminated
    state, else the conditions' messages)."""
    if pod is None:
        return PodState("", "the pod is gone")
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if "terminated" in state:
            done = state["terminated"] or {}
            code = done.get("exitCode")
            why = done.get("message") or done.get("reason") or ""
            return PodState(phase, str(why), code if isinstance(code, int) else None)
        if "waiting" in state:
            waiting = state["waiting"] or {}
            why = ": ".join(str(w) for w in (waiting.get("reason"), waiting.get("message")) if w)
            return PodState(phase, why)
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True" and condition.get("message"):
            return PodState(phase, str(condition["message"]))
    return PodState(phase, str(status.get("message") or status.get("reason") or ""))


def pods_by_name(text: str) -> Dict[str, Dict[str, Any]]:
    """`kubectl get pods -o json`: name -> pod."""
    listing = parse_json_object(text) or {}
    items = listing.get("items") or []
    return {str(pod.get("metadata", {}).get("name")): pod for pod in items if isinstance(pod, dict)}


def last_warning(text: str) -> str:
    """`kubectl get events -o json`: the newest Warning's reason and message."""
    listing = parse_json_object(text) or {}
    warnings = [
        event
        for event in listing.get("items") or []
        if isinstance(event, dict) and event.get("type") == "Warning"
    ]
    if not warnings:
        return ""
    newest = max(warnings, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return f"{newest.get('reason', '')}: {tail(str(newest.get('message', '')), 2)}".strip(": ")


SANDBOX_FAILED = "FailedCreatePodSandBox"  # the kubelet's event reason


def sandbox_failed(warning: str) -> bool:
    """Whether last_warning's answer says the runtime could not make the sandbox."""
    return warning.startswith(SANDBOX_FAILED + ":")


@dataclass(frozen=True)
class Probe:
    """What a verify pod printed: its kernel release and boot id."""

    kernel: str
    boot_id: str


def probe_output(text: str) -> Probe:
    """The lines `kernel=<uname -r>` and `boot_id=<boot id>` (others are ignored)."""
    found: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key in ("kernel", "boot_id"):
            found[key] = value.strip()
    return Probe(found.get("kernel", ""), found.get("boot_id", ""))


# --- crictl ---------------------------------------------------------------------
def crictl_handlers(text: str) -> Optional[FrozenSet[str]]:
    """`crictl info`: the runtime handlers the CRI runtime runs with now (its
    runtimeHandlers, else the runtimes of containerd's CRI config), or None
    when the output says neither."""
    info = parse_json_object(text)
    if info is None:
        return None
    handlers = info.get("runtimeHandlers")
    if isinstance(handlers, list) and handlers:
        return frozenset(str(h.get("name") or "") for h in handlers if isinstance(h, dict))
    config = info.get("config")
    if isinstance(config, str):  # older crictl printed the info values unparsed
        try:
            config = json.loads(config)
        except ValueError:
            return None
    runtimes = (
        ((config or {}).get("containerd") or {}).get("runtimes")
        if isinstance(config, dict)
        else None
    )
    if isinstance(runtimes, dict):
        return frozenset(str(name) for name in runtimes)
    return None


def crictl_runtime_name(text: str) -> str:
    """`crictl version`: the RuntimeName line's value ("" when absent)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "RuntimeName":
            return value.strip()
    return ""


# --- /proc ----------------------------------------------------------------------
def process_started(
    pid_stat: Optional[str], proc_stat: Optional[str], ticks: int
) -> Optional[float]:
    """When a process started, in seconds since the epoch: /proc/PID/stat's starttime
    (field 22, clock ticks after boot) plus /proc/stat's btime; None when unreadable."""
    if not pid_stat or not proc_stat or ticks <= 0:
        return None
    fields = pid_stat.rpartition(")")[2].split()  # the name (field 2) may hold spaces
    boot = next(
        (line.split()[1] for line in proc_stat.splitlines() if line.startswith("btime ")), ""
    )
    if len(fields) < 20 or not fields[19].isdigit() or not boot.isdigit():
        return None
    return int(boot) + int(fields[19]) / ticks
