"""`verify`: show that pods really run in VMs, node by node.

For each node: the isolation facts (isolation.py, the profile's
isolation_checks), then two pods pinned to it with nodeName, both printing
their kernel release and boot id: the canary, made the way the profile sends
a pod to a VM (kata: runtimeClassName; frakti: an ordinary pod), and a pod
made to run on the host's kernel (kata: no RuntimeClass; frakti:
privileged). A VM has a kernel of its own, so the canary's boot id must
differ from the node's (status.nodeInfo.bootID), the host pod's must equal
it. The pods are deleted afterwards, on failure, timeout and Ctrl-C too,
unless keep is asked for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from frakti_install import pods
from frakti_install.constants import ADMIN_CONF
from frakti_install.errors import ConfigError, IsolationUnproven
from frakti_install.isolation import Finding, NodeView, PodShape, local_node_name
from frakti_install.polling import NotYet, poll_until
from frakti_install.probes import parse_kubectl_json, tail

if TYPE_CHECKING:
    from frakti_install.context import Context

log = logging.getLogger(__name__)

NAMESPACE = "default"
RUN_LABEL = "frakti-install/verify"
KINDS = ("vm", "host")  # the canary, and the pod that must run on the host's kernel
PROBE_SCRIPT = 'echo "kernel=$(uname -r)"; echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"'
POLL_INTERVAL = 2.0
SANDBOX_FIX = "The node's runtime could not make the pod's sandbox: see the checks above."


@dataclass(frozen=True)
class NodeVerdict:
    node: str
    local: bool
    checks: List[Finding]

    @property
    def ok(self) -> bool:
        return not any(check.failed for check in self.checks)

    @property
    def failures(self) -> List[Finding]:
        return [check for check in self.checks if check.failed]

    def as_dict(self) -> Dict[str, Any]:
        return {
            "node": self.node,
            "local": self.local,
            "ok": self.ok,
            "checks": [check.as_dict() for check in self.checks],
        }


@dataclass(frozen=True)
class VerifyReport:
    runtime: str
    image: str
    nodes: List[NodeVerdict]
    kept: List[str] = field(default_factory=list)  # pods left behind (--keep)
    cleanup_error: str = ""  # the pods could not be deleted: why

    @property
    def ok(self) -> bool:
        return bool(self.nodes) and all(node.ok for node in self.nodes)

    def as_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {
            "ok": self.ok,
            "runtime": self.runtime,
            "image": self.image,
            "nodes": [node.as_dict() for node in self.nodes],
            "kept": list(self.kept),
        }
        if self.cleanup_error:
            data["cleanup_error"] = self.cleanup_error
        return data


def raise_for(report: VerifyReport) -> None:
    """IsolationUnproven (its own exit code) unless every node isolates."""
    if report.ok:
        return
    failed = [node for node in report.nodes if not node.ok]
    reasons = "; ".join(
        f"{node.node}: {', '.join(f.name for f in node.failures)}" for node in failed
    )
    raise IsolationUnproven(
        f"{len(failed)} of {len(report.nodes)} node(s) do not run pods in VMs ({reasons})",
        hint="Each failed check above says why and how to fix it.",
    )


# --- the API ---------------------------------------------------------------------
def _kubectl(ctx: Context, *args: str, input: Optional[str] = None, timeout: float = 60) -> Any:
    return ctx.host.run(
        ["kubectl", "--kubeconfig", ADMIN_CONF, *args], check=False, input=input, timeout=timeout
    )


def cluster_nodes(ctx: Context) -> List[NodeView]:
    """Every node the API server knows, this host's marked local."""
    if not (ctx.host.exists(ADMIN_CONF) and ctx.facts.binary("kubectl")):
        raise IsolationUnproven(
            f"no cluster to verify here ({ADMIN_CONF} or kubectl missing)",
            hint="Run verify on the master, where 'frakti-install allinone' ran.",
        )
    found = ctx.facts.nodes(ADMIN_CONF)
    if found is None:
        raise IsolationUnproven(
            "the API server does not answer (kubectl get nodes failed)",
            hint="See 'systemctl status kubelet' and 'kubectl get nodes' on the master.",
        )
    here = local_node_name(ctx)
    views = [NodeView(pods.node_name(node), node, pods.node_name(node) == here) for node in found]
    return sorted(views, key=lambda view: (not view.local, view.name))


def select(nodes: List[NodeView], wanted: Sequence[str]) -> List[NodeView]:
    """The nodes asked for (all when none is named); an unknown name stops here."""
    if not wanted:
        return nodes
    known = {node.name for node in nodes}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ConfigError(
            f"no node named {', '.join(unknown)} in the cluster",
            hint="Its nodes: " + (", ".join(sorted(known)) or "none") + ".",
        )
    return [node for node in nodes if node.name in wanted]


def node_facts(ctx: Context, node: NodeView) -> List[Finding]:
    return [check.run(ctx, node) for check in ctx.runtime.isolation_checks()]


def isolation_status(ctx: Context) -> Dict[str, Any]:
    """The per-node isolation facts, no pod started: for `status --json`."""
    try:
        nodes = cluster_nodes(ctx)
    except IsolationUnproven as error:
        return {"runtime": ctx.runtime.name, "error": error.message, "nodes": []}
    verdicts = [NodeVerdict(node.name, node.local, node_facts(ctx, node)) for node in nodes]
    return {
        "runtime": ctx.runtime.name,
        "ok": all(verdict.ok for verdict in verdicts),
        "nodes": [verdict.as_dict() for verdict in verdicts],
    }


# --- the pods ----------------------------------------------------------------------
def pod_name(kind: str, run_id: str, node: str) -> str:
    return f"frakti-verify-{kind}-{run_id}-{node}"[:253].rstrip("-.")


def pod_manifest(
    name: str, node: str, image: str, shape: PodShape, run_id: str, deadline: int
) -> Dict[str, Any]:
    container: Dict[str, Any] = {
        "name": "probe",
        "image": image,
        "command": ["sh", "-c", PROBE_SCRIPT],
        **shape.container,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "frakti-install", RUN_LABEL: run_id},
        },
        "spec": {
            "nodeName": node,  # pinned: no scheduler, the node's taints do not matter
            "restartPolicy": "Never",
            "activeDeadlineSeconds": deadline,  # a kept pod stuck pending stops by itself
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "containers": [container],
            **shape.spec,
        },
    }


@dataclass
class Launched:
    kind: str
    node: NodeView
    name: str
    refused: str = ""  # why the API server did not create it
    stored: Optional[Dict[str, Any]] = None  # the pod as created


def _create(ctx: Context, launched: Launched, manifest: Dict[str, Any]) -> None:
    result = _kubectl(ctx, "create", "-f", "-", "-o", "json", input=json.dumps(manifest))
    answer = parse_kubectl_json(result.returncode, result.stdout, result.stderr)
    if answer.ok:
        launched.stored = answer.obj
    else:
        launched.refused = tail(answer.error)


def _list(ctx: Context, run_id: str) -> Dict[str, Dict[str, Any]]:
    result = _kubectl(
        ctx, "get", "pods", "-n", NAMESPACE, "-l", f"{RUN_LABEL}={run_id}", "-o", "json"
    )
    return pods.pods_by_name(result.stdout) if result.ok else {}


def _wait(
    ctx: Context,
    run_id: str,
    waiting: List[Launched],
    timeout: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Dict[str, Dict[str, Any]]:
    """Poll until every created pod has finished, or the timeout; the last listing."""
    last: Dict[str, Dict[str, Any]] = {}

    def finished() -> object:
        last.clear()
        last.update(_list(ctx, run_id))
        pending = [p.name for p in waiting if not pods.pod_state(last.get(p.name)).finished]
        return True if not pending else NotYet(", ".join(pending))

    class _TimedOut(Exception):
        pass

    if waiting:
        with contextlib.suppress(_TimedOut):  # judged pod by pod afterwards
            poll_until(
                finished, timeout=timeout, interval=POLL_INTERVAL, what="verify pods",
                on_timeout=lambda detail: _TimedOut(detail), clock=clock, sleep=sleep,
            )  # fmt: skip
    return last


def _logs(ctx: Context, name: str) -> str:
    result = _kubectl(ctx, "logs", "-n", NAMESPACE, name)
    return result.stdout if result.ok else ""


def _events(ctx: Context, name: str) -> str:
    result = _kubectl(
        ctx, "get", "events", "-n", NAMESPACE,
        "--field-selector", f"involvedObject.name={name}", "-o", "json",
    )  # fmt: skip
    return pods.last_warning(result.stdout) if result.ok else ""


def _delete(ctx: Context, names: List[str]) -> str:
    """Delete the pods; why not, or ""."""
    if not names:
        return ""
    result = _kubectl(
        ctx, "delete", "pod", "-n", NAMESPACE, "--ignore-not-found", *names, timeout=120
    )
    if result.ok:
        return ""
    why = tail(result.stderr or result.stdout)
    log.warning("could not delete the verify pods %s: %s", " ".join(names), why)
    return why


# --- judging what the pods printed ------------------------------------------------------
def judge(
    ctx: Context, launched: Launched, listing: Dict[str, Dict[str, Any]], timeout: float
) -> Finding:
    runtime = ctx.runtime
    shape = runtime.vm_pod() if launched.kind == "vm" else runtime.host_pod()
    check = "vm-pod" if launched.kind == "vm" else "host-pod"
    host = launched.node.system
    observed = {"pod": launched.name, "host_kernel": host.kernel, "host_boot_id": host.boot_id}
    describe = f"kubectl describe pod -n {NAMESPACE} {launched.name} (run verify with --keep)"
    if launched.refused:
        return Finding(
            check, False, f"the API server refused a pod with {shape.what}: {launched.refused}",
            "See the runtimeclass check, and the API server's admission plugins.",
            observed=observed,
        )  # fmt: skip
    pod = listing.get(launched.name)
    state = pods.pod_state(pod)
    if not state.finished:
        warning = _events(ctx, launched.name)
        why = "; ".join(w for w in (state.reason, warning) if w) or state.phase or "no status"
        if pods.sandbox_failed(warning):
            fix = f"{shape.sandbox_fix or SANDBOX_FIX} {describe}."
        else:
            fix = (
                f"{describe}. The image ({runtime.verify_image}) must be pullable by the node: "
                "set verify_image to a registry it reaches; raise verify_timeout for slow pulls."
            )
        return Finding(
            check, False, f"did not run to the end within {timeout:.0f} s ({why})", fix,
            observed=observed,
        )  # fmt: skip
    output = _logs(ctx, launched.name)
    probe = pods.probe_output(output)
    observed.update({"kernel": probe.kernel, "boot_id": probe.boot_id})
    if state.phase == "Failed" or not probe.boot_id:
        code = "" if state.exit_code is None else f" (exit {state.exit_code})"
        said = tail(output) or state.reason or "nothing"
        return Finding(
            check, False, f"the pod failed{code} and printed {said}", describe, observed=observed
        )
    # boot_id is not namespaced: a container shows its host's, a VM its own kernel's
    same = probe.boot_id == host.boot_id if host.boot_id else probe.kernel == host.kernel
    seen = f"kernel {probe.kernel}, boot id {probe.boot_id[:8]}"
    node_seen = f"the node's kernel {host.kernel}, boot id {host.boot_id[:8]}"
    if launched.kind == "vm":
        if same:
            return Finding(
                check, False, f"a pod with {shape.what} ran on the host's kernel ({seen}; "
                f"{node_seen})", shape.fix, observed=observed,
            )  # fmt: skip
        problem = runtime.sandbox_problem(pod or {}, launched.node.obj)
        if problem:
            return Finding(check, False, problem, shape.fix, observed=observed)
        return Finding(check, True, f"ran in a VM: {seen}, not {node_seen}", observed=observed)
    if not same:
        return Finding(
            check, False, f"a pod that must run on the host ({shape.what}) ran on another "
            f"kernel ({seen}; {node_seen})", shape.fix, observed=observed,
        )  # fmt: skip
    return Finding(check, True, f"ran on the host's kernel ({shape.what})", observed=observed)


def verify(
    ctx: Context,
    nodes: Sequence[str] = (),
    *,
    keep: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> VerifyReport:
    """The isolation facts and the two pods on every node (or those named)."""
    chosen = select(cluster_nodes(ctx), nodes)  # an unknown name stops before any pod
    runtime = ctx.runtime
    timeout = float(ctx.settings.verify_timeout)
    image = runtime.verify_image
    facts = {node.name: node_facts(ctx, node) for node in chosen}
    run_id = secrets.token_hex(3)
    launched: List[Launched] = []
    cleanup_error = ""
    try:
        for node in chosen:
            for kind in KINDS:
                shape = runtime.vm_pod() if kind == "vm" else runtime.host_pod()
                name = pod_name(kind, run_id, node.name)
                pod = Launched(kind, node, name)
                launched.append(pod)
                _create(ctx, pod, pod_manifest(name, node.name, image, shape, run_id, int(timeout)))
        created = [pod for pod in launched if pod.stored is not None]
        listing = _wait(ctx, run_id, created, timeout, clock, sleep)
        results: Dict[str, List[Finding]] = {node.name: [] for node in chosen}
        for pod in launched:
            results[pod.node.name].append(judge(ctx, pod, listing, timeout))
    finally:
        names = [pod.name for pod in launched if pod.stored is not None]
        if not keep:
            cleanup_error = _delete(ctx, names)
    verdicts = [
        NodeVerdict(node.name, node.local, facts[node.name] + results[node.name]) for node in chosen
    ]
    return VerifyReport(
        runtime.name, image, verdicts, kept=names if keep else [], cleanup_error=cleanup_error
    )
