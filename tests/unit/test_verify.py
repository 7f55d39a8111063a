"""`verify` and the isolation facts, on simulated clusters.

PodAPI stands in front of a simulated host's runner (simhost.py / simkata.py)
and answers what verify asks beyond them: kubectl for pods, their logs and
events, and crictl. A pod "runs in a VM" when the node's VM runtime would
take it (kata: runtimeClassName with a working kata handler; frakti: not
privileged): it then prints the guest's kernel and boot id, else the host's.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

import pytest

from frakti_install import pods
from frakti_install import verify as verifying
from frakti_install.config import Settings, load
from frakti_install.context import Context
from frakti_install.errors import ConfigError, ExitCode, IsolationUnproven
from frakti_install.host import CommandResult, Host
from tests.unit.simhost import SimMachine, UnitState
from tests.unit.simkata import KataSimMachine

HOST_KERNEL = "6.1.0-18-amd64"
GUEST_KERNEL = "6.12.28-kata"
RUNTIME_CLASS = {
    "apiVersion": "node.k8s.io/v1",
    "kind": "RuntimeClass",
    "metadata": {"name": "kata"},
    "handler": "kata",
    "overhead": {"podFixed": {"memory": "160Mi", "cpu": "250m"}},
}


def boot_id(node: str, guest: int = 0) -> str:
    return f"{abs(hash((node, guest))) % 10**8:08d}-0000-4000-8000-{guest:012d}"


class PodAPI:
    """kubectl (pods, logs, events) and crictl, in front of a simulated runner."""

    def __init__(self, runner: Any, *, kata: bool) -> None:
        self.runner = runner
        self.kata = kata
        self.pods: Dict[str, Dict[str, Any]] = {}
        self.logs: Dict[str, str] = {}
        self.created: List[str] = []
        self.manifests: List[Dict[str, Any]] = []  # as verify sent them
        self.deleted: List[str] = []
        self.vm_works = True  # the VM runtime starts VMs (KVM, handler, ...)
        self.pull_fails = False  # the node cannot pull the verify image
        self.vm_falls_back = False  # the VM runtime hands pods to runc/docker instead
        self.crictl_handlers: Optional[Set[str]] = {"runc", "kata"}
        self.crictl_version = "Version:  0.1.0\nRuntimeName:  hyper\nRuntimeVersion:  1.1.0\n"
        self.guests = 0

    # which pods run where
    def in_vm(self, pod: Dict[str, Any]) -> bool:
        if self.vm_falls_back:
            return False
        if self.kata:
            return pod["spec"].get("runtimeClassName") == "kata"
        privileged = any(
            (c.get("securityContext") or {}).get("privileged") for c in pod["spec"]["containers"]
        )
        return not privileged

    def __call__(
        self, argv: Sequence[str], env: Any, input: Optional[str], timeout: Optional[float]
    ) -> CommandResult:
        argv = list(argv)
        if argv[0] == "crictl":
            return self.crictl(argv)
        if argv[0] == "kubectl":
            verb = argv[3]
            if verb == "create":
                return self.create(argv, input or "")
            if verb == "get" and argv[4] in ("pods", "events"):
                return self.get(argv)
            if verb == "logs":
                return self.ok(argv, self.logs.get(argv[-1], ""))
            if verb == "delete":
                names = [a for a in argv[argv.index("--ignore-not-found") + 1 :]]
                for name in names:
                    self.pods.pop(name, None)
                    self.deleted.append(name)
                return self.ok(argv, "".join(f'pod "{n}" deleted\n' for n in names))
        return self.runner(argv, env, input, timeout)

    @staticmethod
    def ok(argv: List[str], out: str) -> CommandResult:
        return CommandResult(argv, 0, out, "")

    def crictl(self, argv: List[str]) -> CommandResult:
        if argv[-1] == "version":
            return self.ok(argv, self.crictl_version)
        if self.crictl_handlers is None:
            return CommandResult(argv, 1, "", "connect: connection refused")
        runtimes = {
            name: {"runtimeType": f"io.containerd.{name}.v2"} for name in self.crictl_handlers
        }
        return self.ok(
            argv, json.dumps({"status": {}, "config": {"containerd": {"runtimes": runtimes}}})
        )

    def create(self, argv: List[str], text: str) -> CommandResult:
        pod = json.loads(text)
        self.manifests.append(json.loads(text))
        name, node = pod["metadata"]["name"], pod["spec"]["nodeName"]
        wanted = pod["spec"].get("runtimeClassName")
        if wanted and wanted not in getattr(self.runner, "runtime_classes", {}):
            return CommandResult(
                argv, 1, "", f'Error from server (Forbidden): error when creating "STDIN": pods '
                f'"{name}" is forbidden: pod rejected: RuntimeClass "{wanted}" not found',
            )  # fmt: skip
        self.created.append(name)
        host = self.runner.state.cluster.nodes[node]["status"]["nodeInfo"]
        vm = self.in_vm(pod)
        if self.pull_fails:
            pod["status"] = {
                "phase": "Pending",
                "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}],
            }
        elif vm and not self.vm_works:
            pod["status"] = {
                "phase": "Pending",
                "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}],
            }
        else:
            self.guests += 1
            kernel, boot = (
                (GUEST_KERNEL, boot_id(node, self.guests))
                if vm
                else (host["kernelVersion"], host["bootID"])
            )
            self.logs[name] = f"kernel={kernel}\nboot_id={boot}\n"
            pod["status"] = {
                "phase": "Succeeded",
                "containerStatuses": [{"state": {"terminated": {"exitCode": 0}}}],
            }
        self.pods[name] = pod
        return self.ok(argv, json.dumps(pod))

    def get(self, argv: List[str]) -> CommandResult:
        if argv[4] == "events":
            name = argv[argv.index("--field-selector") + 1].split("=", 1)[1]
            events = []
            if name in self.pods and self.pull_fails:
                events.append({
                    "type": "Warning", "reason": "Failed",
                    "message": "Failed to pull image: dial tcp: lookup registry-1.docker.io",
                    "lastTimestamp": "2026-01-01T00:00:00Z",
                })  # fmt: skip
            elif name in self.pods and self.pods[name]["status"]["phase"] == "Pending":
                events.append({
                    "type": "Warning", "reason": "FailedCreatePodSandBox",
                    "message": "Failed to create pod sandbox: rpc error: code = Unknown "
                    'desc = failed to get sandbox runtime: no runtime for "kata" is configured',
                    "lastTimestamp": "2026-01-01T00:00:00Z",
                })  # fmt: skip
            return self.ok(argv, json.dumps({"items": events}))
        label = argv[argv.index("-l") + 1].split("=", 1)[1]
        items = [
            p
            for p in self.pods.values()
            if p["metadata"]["labels"].get(verifying.RUN_LABEL) == label
        ]
        return self.ok(argv, json.dumps({"items": items}))


def cluster(m: SimMachine, nodes: Sequence[str] = ("node-1",), runtime: str = "kata") -> None:
    """A cluster as an install leaves it, set by hand: the master is the first node."""
    c = m.state.cluster
    c.cidr = "10.244.0.0/16"
    for index, name in enumerate(nodes):
        c.add_node(name, f"10.0.0.{index + 1}", master=index == 0)
        c.nodes[name]["status"]["nodeInfo"] = {
            "kernelVersion": HOST_KERNEL,
            "bootID": boot_id(name),
            "containerRuntimeVersion": "containerd://1.6.20"
            if runtime == "kata"
            else "hyper://1.1.0",
        }
    m.runner.write("/etc/kubernetes/admin.conf", "kubeconfig\n", 0o600)
    for binary in ("kubectl", "crictl"):
        m.runner.write(f"/usr/bin/{binary}", "#!/bin/sh\n", 0o755)
    if runtime == "kata":
        m.runner.runtime_classes["kata"] = json.loads(json.dumps(RUNTIME_CLASS))
        for module in ("vhost_vsock", "vhost_net"):
            m.p(f"/sys/module/{module}").mkdir(parents=True, exist_ok=True)
    else:
        m.runner.write("/var/run/frakti.sock", "")
        m.state.other_listeners.add(22318)
        m.runner._refresh_ports()


@pytest.fixture
def kata(tmp_path: Path):
    def make(nodes: Sequence[str] = ("node-1",), **kwargs: Any):
        m = KataSimMachine(tmp_path / "kata", "debian", "12", **kwargs)
        cluster(m, nodes)
        api = PodAPI(m.runner, kata=True)
        return m, api

    return make


@pytest.fixture
def frakti(tmp_path: Path):
    def make(nodes: Sequence[str] = ("node-1",), **kwargs: Any):
        m = SimMachine(tmp_path / "frakti", "ubuntu", "16.04", **kwargs)
        cluster(m, nodes, runtime="frakti")
        return m, PodAPI(m.runner, kata=False)

    return make


def context(m: SimMachine, api: PodAPI, **settings: Any) -> Context:
    return Context(host=Host(root=m.root, runner=api), settings=m.settings(**settings))


class Clock:
    """A clock that moves only when verify sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(m: SimMachine, api: PodAPI, nodes: Sequence[str] = (), keep: bool = False, **settings: Any):
    clock = Clock()
    return verifying.verify(
        context(m, api, **settings), nodes, keep=keep, clock=clock, sleep=clock.sleep
    )


def check(report: verifying.VerifyReport, name: str, node: str = "node-1") -> Dict[str, Any]:
    verdict = next(v for v in report.nodes if v.node == node)
    return next(c.as_dict() for c in verdict.checks if c.name == name)


# --- a healthy node ------------------------------------------------------------------
def test_kata_node_isolates_and_the_pods_are_deleted(kata):
    m, api = kata()
    report = run(m, api)
    assert report.ok, report.as_dict()
    vm = check(report, "vm-pod")
    assert vm["ok"] and vm["kernel"] == GUEST_KERNEL and vm["boot_id"] != vm["host_boot_id"]
    host = check(report, "host-pod")
    assert host["ok"] and host["boot_id"] == host["host_boot_id"]
    assert sorted(api.deleted) == sorted(api.created) and len(api.created) == 2 and not api.pods
    verifying.raise_for(report)  # nothing raised


def test_canary_pod_is_pinned_and_made_the_profiles_way(kata, frakti):
    for make, vm_spec, host_container in (
        (kata, {"runtimeClassName": "kata"}, {}),
        (frakti, {}, {"securityContext": {"privileged": True}}),
    ):
        m, api = make()
        run(m, api)
        vm, host = sorted(api.manifests, key=lambda p: "-host-" in p["metadata"]["name"])
        assert vm["spec"]["nodeName"] == host["spec"]["nodeName"] == "node-1"
        assert {k: vm["spec"][k] for k in vm_spec} == vm_spec
        assert "runtimeClassName" not in host["spec"]
        container = host["spec"]["containers"][0]
        assert {k: container[k] for k in host_container} == host_container
        assert "privileged" not in json.dumps(vm)
        assert vm["spec"]["containers"][0]["image"].startswith("docker.io/library/busybox@sha256:")


def test_json_shape(kata):
    m, api = kata()
    data = json.loads(json.dumps(run(m, api).as_dict()))
    assert set(data) == {"ok", "runtime", "image", "nodes", "kept"}
    assert data["runtime"] == "kata" and data["ok"] is True
    node = data["nodes"][0]
    assert set(node) == {"node", "local", "ok", "checks"} and node["local"] is True
    assert [c["name"] for c in node["checks"]] == [
        "ready", "kvm", "modules", "handler", "runtimeclass", "vm-pod", "host-pod",
    ]  # fmt: skip
    assert all(set(c) >= {"name", "ok", "detail"} for c in node["checks"])


# --- every failure, with its reason ---------------------------------------------------
def failures(report: verifying.VerifyReport, node: str = "node-1") -> Dict[str, Dict[str, Any]]:
    verdict = next(v for v in report.nodes if v.node == node)
    return {f.name: f.as_dict() for f in verdict.failures}


def test_no_kvm(kata):
    m, api = kata(cpu_flags="fpu sse")
    api.vm_works = False  # Kata's QEMU cannot start without KVM
    report = run(m, api)
    failed = failures(report)
    assert "the CPU shows no vmx/svm flag" in failed["kvm"]["detail"]
    assert "VT-x/AMD-V" in failed["kvm"]["fix"]
    assert "did not run to the end" in failed["vm-pod"]["detail"]
    assert "host-pod" not in failed
    with pytest.raises(IsolationUnproven) as raised:
        verifying.raise_for(report)
    assert raised.value.exit_code == ExitCode.ISOLATION == 20
    assert "node-1: kvm, vm-pod" in raised.value.message


def test_handler_missing_from_the_live_cri_config(kata):
    m, api = kata()
    api.crictl_handlers = {"runc"}
    api.vm_works = False
    failed = failures(run(m, api))
    assert (
        "containerd runs without a kata handler (crictl info: runc)" in failed["handler"]["detail"]
    )
    assert 'no runtime for "kata"' in failed["vm-pod"]["detail"]  # the event says why


def test_handler_read_from_the_config_dump_without_crictl(kata):
    m, api = kata()
    m.p("/usr/bin/crictl").unlink()
    m.runner.write("/etc/containerd/config.toml", "version = 2\n")
    failed = failures(run(m, api))
    assert "containerd's configuration has no kata handler" in failed["handler"]["detail"]
    m.runner.write(
        "/etc/containerd/config.toml",
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n'
        '  runtime_type = "io.containerd.kata.v2"\n',
    )
    assert "handler" not in failures(run(m, api))


def test_runtime_class_missing(kata):
    m, api = kata()
    del m.runner.runtime_classes["kata"]
    failed = failures(run(m, api))
    assert failed["runtimeclass"]["detail"] == "there is no RuntimeClass kata"
    assert 'RuntimeClass "kata" not found' in failed["vm-pod"]["detail"]
    assert set(failed) == {"runtimeclass", "vm-pod"}
    assert not api.pods  # the host pod that was created is deleted too


def test_runtime_class_with_the_wrong_handler(kata):
    m, api = kata()
    m.runner.runtime_classes["kata"]["handler"] = "kata-qemu"
    failed = failures(run(m, api))
    assert "has handler 'kata-qemu', not 'kata'" in failed["runtimeclass"]["detail"]


def test_runtime_class_without_overhead_is_a_warning_only(kata):
    m, api = kata()
    m.runner.runtime_classes["kata"].pop("overhead")
    report = run(m, api)
    assert report.ok
    assert (
        check(report, "runtimeclass")["ok"] is False
        and not check(report, "runtimeclass")["blocking"]
    )


def test_canary_on_the_host_kernel_fails(kata, frakti):
    shim = "its shim Kata's ('containerd-shim-kata-v2 --version')"
    for make, fix in ((kata, shim), (frakti, "")):
        m, api = make()
        api.vm_falls_back = True  # runc (or docker) ran it: same boot id as the node
        failed = failures(run(m, api))
        assert set(failed) == {"vm-pod"}
        assert "ran on the host's kernel" in failed["vm-pod"]["detail"]
        assert failed["vm-pod"]["kernel"] == HOST_KERNEL
        assert fix in failed["vm-pod"]["fix"]


def test_pod_that_never_starts_times_out_cleanly_and_is_deleted(kata):
    m, api = kata()
    api.vm_works = False
    clock = Clock()
    report = verifying.verify(
        context(m, api, verify_timeout=30), keep=False, clock=clock, sleep=clock.sleep
    )
    failed = failures(report)
    assert "within 30 s (ContainerCreating; FailedCreatePodSandBox" in failed["vm-pod"]["detail"]
    # the runtime could not make the sandbox: the fix points at the runtime, not the image
    fix = failed["vm-pod"]["fix"]
    assert "containerd could not make the pod's sandbox with the kata handler" in fix, fix
    assert "verify_image" not in fix and "kubectl describe pod" in fix
    assert 30 <= clock.now <= 32
    assert sorted(api.deleted) == sorted(api.created) and not api.pods


def test_pod_whose_image_cannot_be_pulled_points_at_verify_image(kata, frakti):
    for make in (kata, frakti):
        m, api = make()
        api.pull_fails = True
        failed = failures(run(m, api, verify_timeout=20))
        assert set(failed) == {"vm-pod", "host-pod"}
        for name in ("vm-pod", "host-pod"):
            assert "(ImagePullBackOff; Failed: Failed to pull image" in failed[name]["detail"]
            assert "set verify_image to a registry it reaches" in failed[name]["fix"]


def test_frakti_sandbox_failure_has_the_generic_runtime_fix(frakti):
    m, api = frakti()
    api.vm_works = False
    failed = failures(run(m, api, verify_timeout=20))
    assert failed["vm-pod"]["fix"].startswith(verifying.SANDBOX_FIX)


def containerd_started(m: SimMachine, seconds_ago: float) -> None:
    """containerd active, its process started `seconds_ago` (/proc/PID/stat, /proc/stat)."""
    m.state.units.setdefault("containerd.service", UnitState()).active = True
    pid = 4000 + len("containerd.service")  # simhost's MainPID of an active unit
    started = int(time.time() - seconds_ago)
    m.runner.write("/proc/stat", f"cpu  1 2 3\nbtime {started - 50}\nprocesses 9\n")
    fields = ["S"] + ["0"] * 18 + [str(50 * os.sysconf("SC_CLK_TCK"))] + ["0"] * 30
    m.runner.write(f"/proc/{pid}/stat", f"{pid} (containerd x) " + " ".join(fields) + "\n")


def test_handler_in_files_changed_after_containerd_started(kata):
    """Without crictl the files are read: they are what containerd runs with only
    when none changed after it started (restoring them does not restart it)."""
    m, api = kata()
    m.p("/usr/bin/crictl").unlink()
    m.runner.write(
        "/etc/containerd/config.toml", 'version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n'
    )
    m.runner.write(
        "/etc/containerd/conf.d/90-frakti-install.toml",
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n'
        '  runtime_type = "io.containerd.kata.v2"\n',
    )
    containerd_started(m, seconds_ago=600)  # before the files were written
    api.vm_works = False  # containerd runs without the handler
    report = run(m, api, verify_timeout=20)
    handler = check(report, "handler")
    assert handler["detail"] == (
        "containerd's files have the kata handler, but /etc/containerd/config.toml changed "
        "after containerd started: it runs with what it read then, maybe without it"
    ), handler
    assert handler["fix"] == "systemctl restart containerd.service"
    assert handler["blocking"] is False  # a warning: the pod decides
    assert set(failures(report)) == {"vm-pod"}
    os.utime(m.p("/etc/containerd/config.toml"), (time.time() - 900, time.time() - 900))
    detail = check(run(m, api, verify_timeout=20), "handler")["detail"]
    assert "but /etc/containerd/conf.d/90-frakti-install.toml changed" in detail  # an import
    api.vm_works = True  # containerd happened to run with the handler: the node isolates
    assert run(m, api).ok
    containerd_started(m, seconds_ago=0)  # restarted since
    assert check(run(m, api), "handler")["ok"] is True


def test_process_started():
    ticks = 100
    stat = "4018 (containerd (x)) S " + " ".join(["0"] * 18 + ["12345"] + ["0"] * 30)
    assert pods.process_started(stat, "cpu 1\nbtime 1700000000\n", ticks) == 1700000123.45
    assert pods.process_started(None, "btime 1\n", ticks) is None
    assert pods.process_started(stat, "cpu 1\n", ticks) is None
    assert pods.process_started("4018 (x) S 1 2", "btime 1\n", ticks) is None


def test_pods_are_deleted_when_interrupted(kata):
    m, api = kata()
    api.vm_works = False

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        verifying.verify(context(m, api), clock=lambda: 0.0, sleep=interrupted)
    assert api.created and sorted(api.deleted) == sorted(api.created) and not api.pods


def test_keep_leaves_the_pods(kata):
    m, api = kata()
    report = run(m, api, keep=True)
    assert not api.deleted and sorted(report.kept) == sorted(api.created) == sorted(api.pods)
    assert report.as_dict()["kept"] == report.kept


def test_frakti_node_isolates(frakti):
    m, api = frakti()
    report = run(m, api)
    assert report.ok, report.as_dict()
    assert [c.name for c in report.nodes[0].checks] == [
        "ready", "kvm", "cri-runtime", "cri-socket", "grpc", "vm-pod", "host-pod",
    ]  # fmt: skip
    assert "RuntimeName hyper" in check(report, "cri-socket")["detail"]


def test_frakti_without_kvm_warns_and_the_canary_decides(frakti):
    m, api = frakti(cpu_flags="fpu sse")
    report = run(m, api)
    assert (
        report.ok and check(report, "kvm")["ok"] is False and not check(report, "kvm")["blocking"]
    )


def test_frakti_privileged_pod_in_a_vm_fails(frakti):
    m, api = frakti()
    api.in_vm = lambda pod: True  # type: ignore[method-assign]
    failed = failures(run(m, api))
    assert set(failed) == {"host-pod"}
    assert "must run on the host (privileged" in failed["host-pod"]["detail"]
    assert "docker" in failed["host-pod"]["fix"]


def test_frakti_kubelet_on_another_runtime_and_frakti_down(frakti):
    m, api = frakti()
    m.state.cluster.nodes["node-1"]["status"]["nodeInfo"]["containerRuntimeVersion"] = (
        "docker://18.6"
    )
    m.p("/var/run/frakti.sock").unlink()
    m.state.other_listeners.clear()
    m.runner._refresh_ports()
    failed = failures(run(m, api))
    assert "kubelet's runtime is docker://18.6, not frakti" in failed["cri-runtime"]["detail"]
    assert "/var/run/frakti.sock does not exist" in failed["cri-socket"]["detail"]
    assert "nothing listens on port 22318" in failed["grpc"]["detail"]
    assert "runs pods through docker://18.6, not frakti" in failed["vm-pod"]["detail"]


# --- several nodes -------------------------------------------------------------------------
def test_remote_node_facts_are_unknown_and_its_pods_decide(kata):
    m, api = kata(nodes=("node-1", "node-2"))
    report = run(m, api)
    assert report.ok and [v.node for v in report.nodes] == ["node-1", "node-2"]
    assert check(report, "kvm", "node-2")["ok"] is None
    assert check(report, "handler", "node-2")["ok"] is None
    assert report.nodes[1].local is False
    m.state.cluster.nodes["node-2"]["status"]["runtimeHandlers"] = [{"name": ""}, {"name": "runc"}]
    failed = failures(run(m, api), "node-2")
    assert "reports runtime handlers , runc, not kata" in failed["handler"]["detail"]


def test_node_option_selects_and_an_unknown_node_creates_nothing(kata):
    m, api = kata(nodes=("node-1", "node-2"))
    report = run(m, api, nodes=["node-2"])
    assert [v.node for v in report.nodes] == ["node-2"] and all("node-2" in p for p in api.created)
    api.created.clear()
    with pytest.raises(ConfigError, match="no node named node-9"):
        run(m, api, nodes=["node-9"])
    assert not api.created


def test_no_cluster_is_a_clear_error(kata):
    m, api = kata()
    m.p("/etc/kubernetes/admin.conf").unlink()
    with pytest.raises(IsolationUnproven, match="no cluster to verify here"):
        run(m, api)


# --- status --json ---------------------------------------------------------------------------
def test_status_isolation_facts_start_no_pod(kata):
    m, api = kata(cpu_flags="fpu sse")
    data = verifying.isolation_status(context(m, api))
    assert not api.created
    assert data["runtime"] == "kata" and data["ok"] is False
    checks = {c["name"]: c for c in data["nodes"][0]["checks"]}
    assert set(checks) == {"ready", "kvm", "modules", "handler", "runtimeclass"}
    assert checks["kvm"]["ok"] is False
    m.p("/etc/kubernetes/admin.conf").unlink()
    assert verifying.isolation_status(context(m, api))["error"].startswith("no cluster")


# --- settings and parsers ----------------------------------------------------------------------
def test_verify_settings():
    assert load(environ={"FRAKTI_INSTALL_VERIFY_TIMEOUT": "45"}).verify_timeout == 45
    with pytest.raises(ConfigError, match="verify_timeout: 0 is not between 1 and 86400 seconds"):
        load(flags={"verify_timeout": 0}, environ={})
    from frakti_install import runtimes

    assert runtimes.runtime_for(Settings(verify_image="reg.local/busybox:1")).verify_image == (
        "reg.local/busybox:1"
    )


def test_crictl_info_shapes():
    newer = {"status": {}, "runtimeHandlers": [{"name": ""}, {"name": "kata"}]}
    assert pods.crictl_handlers(json.dumps(newer)) == frozenset({"", "kata"})
    older = {"status": {}, "config": json.dumps({"containerd": {"runtimes": {"runc": {}}}})}
    assert pods.crictl_handlers(json.dumps(older)) == frozenset({"runc"})
    assert pods.crictl_handlers("not json") is None
    assert pods.crictl_handlers(json.dumps({"status": {}})) is None


def test_pod_state_and_probe_output():
    assert pods.pod_state(None).phase == ""
    pending = {"status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "message": "0/1 nodes are available"},
    ]}}  # fmt: skip
    assert pods.pod_state(pending).reason == "0/1 nodes are available"
    failed = {"status": {"phase": "Failed", "containerStatuses": [
        {"state": {"terminated": {"exitCode": 127, "reason": "Error"}}},
    ]}}  # fmt: skip
    state = pods.pod_state(failed)
    assert state.finished and state.exit_code == 127 and state.reason == "Error"
    probe = pods.probe_output("noise\nkernel=6.1.0\nboot_id= abc \n")
    assert probe == pods.Probe("6.1.0", "abc")
