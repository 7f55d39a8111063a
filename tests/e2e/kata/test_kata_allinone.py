"""End-to-end: `frakti-install allinone --runtime kata` on booted Debian hosts of
three releases, each test once per suite (the test id says which):

    bookworm  Debian 12: containerd 1.6, config version 2, systemd 252
    trixie    Debian 13: containerd 1.7, config version 2, systemd 257
    sid       containerd 2.x (2.1 today), config version 3, systemd 26x

The host is the harness's systemd-nspawn container (tests/e2e/testbed.py),
from that suite's image (debootstrapped from the archive the machine's apt
sources use) plus, in apt's cache, the packages the kata profile asks apt
for (katalab.ensure_kata_image). It has no network: apt installs from that
cache, the rest comes from a mirror served inside it on 127.0.0.1:8080.

Every kata host boots with a cgroup v2 hierarchy (testbed's cgroup_v2; this
machine is cgroup v1 hybrid): the kubelet of every Kubernetes minor the kata
profile supports (1.35 and later) refuses cgroup v1 unless failCgroupV1 is
false (KEP-5573; the stand-in kubelet and kubeadm refuse it as 1.35 does),
and sid's systemd (258 and later) does not boot on cgroup v1 at all.

Real: containerd and runc (the suite's packages, installed by the installer
with apt), containerd's config merging (`containerd config dump`) and its
socket (`ctr version`), gpg, apt's signature check of the Kubernetes
repository (InRelease signed by a throw-away key; the installer trusts it by
key_fingerprints, as for a mirror that signs with its own key), dpkg,
apt-mark, systemd. Stand-ins (katalab.py, standins/, each file says what it
imitates): the Kubernetes v1.31 packages kubelet, kubeadm, kubectl,
kubernetes-cni in that repository, laid out like pkgs.k8s.io; the Kata
Containers release tarball. Accommodations of the test bed, not of the
product: the guest's CPU shows no vmx/svm and nspawn gives it no /dev/kvm, so
preflight's KVM check is ignored (ignore_preflight_errors: [KVM]); the guest
cannot load kernel modules (no /lib/modules), so when the host kernel has not
loaded vhost_vsock/vhost_net, their device nodes stand in for them (what the
kata step accepts as "available"); runc needs the keyring and bpf system
calls nspawn filters out (testbed allows them), and the container's cgroup2
hierarchy has no controllers here, so the runc container is started without
CPU shares.

(a) a fresh install exits 0 and leaves containerd running with the kata
    handler next to runc, the user's own containerd settings kept, the
    packages pinned and held, /opt/kata unpacked and the shim linked, the
    RuntimeClass in the cluster;
(b) a second run finds everything in place (ok/skip only) and restarts
    neither containerd nor kubelet; `status` then finds no drift; the real
    containerd and runc start a container (ctr run, runc's systemd cgroups);
(c) on another host: the real Kubernetes key expected from a mirror that
    signs with another key exits 8 before anything is installed from it, and
    a wrong kata checksum exits 8 with nothing unpacked into /opt/kata.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import katalab
import pytest
import testbed

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = pytest.importorskip("tomli")

pytestmark = pytest.mark.e2e

CONFIG_PATH = "/root/frakti.yaml"
INSTALL_TIMEOUT = 600
SOCKET = "/run/containerd/containerd.sock"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
DROP_IN = "/etc/containerd/conf.d/90-frakti-install.toml"
KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
APT_LIST = "/etc/apt/sources.list.d/kubernetes.list"
KATA_MANIFEST = "/var/lib/frakti-install/kata-files.json"
SHIM_LINK = "/usr/local/bin/containerd-shim-kata-v2"
SHIM = "/opt/kata/bin/containerd-shim-kata-v2"  # the Go layout's shim (3.x)
ENTRY_SHIM = "/opt/kata/frakti-install/containerd-shim-kata-v2"  # what the shim link names
ADMIN = ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"]
STATE = "/var/lib/standin-k8s/cluster.json"
INIT_LOG = "/var/log/standin-kubeadm-init.log"
# What each suite carries (tests/unit/fixtures/packages/debian-*.json): the
# containerd release, and the config version its `config dump` prints.
SUITE_CONTAINERD = {"bookworm": ("1.6.", 2), "trixie": ("1.7.", 2), "sid": ("2.", 3)}
# Where the CRI plugin of each config version reads what the kata profile sets
# (containerd docs/cri/config.md of 1.7 and 2.1; seen in the real dumps).
V2_CRI = ("plugins", "io.containerd.grpc.v1.cri")
V3_RUNTIME = ("plugins", "io.containerd.cri.v1.runtime")
V3_IMAGES = ("plugins", "io.containerd.cri.v1.images")
CRI_PATHS = {
    2: {
        "containerd": (*V2_CRI, "containerd"),
        "sandbox_image": (*V2_CRI, "sandbox_image"),
        "cni": (*V2_CRI, "cni"),
        "registry": (*V2_CRI, "registry"),
    },
    3: {
        "containerd": (*V3_RUNTIME, "containerd"),
        "sandbox_image": (*V3_IMAGES, "pinned_images", "sandbox"),
        "cni": (*V3_RUNTIME, "cni"),
        "registry": (*V3_IMAGES, "registry"),
    },
}
# ctr plugins ls: the CRI service, and in 2.x its runtime and images plugins
CRI_PLUGINS = {
    2: [("io.containerd.grpc.v1", "cri")],
    3: [
        ("io.containerd.grpc.v1", "cri"),
        ("io.containerd.cri.v1", "runtime"),
        ("io.containerd.cri.v1", "images"),
    ],
}
HELD = ("kubelet", "kubeadm", "kubectl")
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
# A setting the host's owner made before frakti-install ran: it must survive.
USER_CONTAINERD_CONFIG = """\
# containerd settings of this host's owner (written before frakti-install ran)
version = 2
oom_score = -500

[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
  endpoint = ["https://registry-mirror.example.invalid"]
"""
USER_MIRROR = ["https://registry-mirror.example.invalid"]
# Files the installer (or a package, or kubeadm) writes: a no-op run leaves them alone.
TRACKED_FILES = (
    CONTAINERD_CONFIG,
    DROP_IN,
    APT_LIST,
    KEYRING,
    KATA_MANIFEST,
    SHIM,
    "/etc/default/kubelet",
    "/etc/cni/net.d/10-mynet.conf",
    "/etc/cni/net.d/99-loopback.conf",
    "/etc/modules-load.d/frakti-install.conf",
    "/etc/modules-load.d/frakti-install-kata.conf",
    "/etc/sysctl.d/90-frakti-install.conf",
    "/etc/kubernetes/admin.conf",
    "/var/lib/kubelet/config.yaml",
)
DIAGNOSE = {
    "journal.txt": ["journalctl", "-b", "--no-pager", "-o", "short-precise"],
    "units.txt": ["systemctl", "list-units", "--all", "--no-pager"],
    "processes.txt": ["ps", "-ef"],
    "containerd-config-dump.toml": ["containerd", "config", "dump"],
    "dpkg-l.txt": ["dpkg", "-l"],
    "apt-policy.txt": ["apt-cache", "policy", "kubelet", "kubeadm", "kubectl", "containerd"],
}
DIAGNOSE_FILES = (
    "/var/log/frakti-install.log",
    "/var/lib/frakti-install",
    "/var/lib/standin-k8s",
    INIT_LOG,
    "/etc/containerd",
    "/etc/apt/sources.list.d",
    "/etc/default/kubelet",
    "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/cni/net.d",
    "/var/log/apt",
    CONFIG_PATH,
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", params=testbed.SUITES)
def suite(request: pytest.FixtureRequest) -> str:
    """The Debian suite of the hosts (every test of this file runs once per suite)."""
    return str(request.param)


def ready_kata_image(suite: str, record_timing: Callable[[str, float], None]) -> Path:
    """The suite's kata image (built once, then cached), or the test fails."""
    started = time.monotonic()
    try:
        base = testbed.ensure_image(suite)
        record_timing(f"{suite} host image ready ({base.name})", time.monotonic() - started)
        path = katalab.ensure_kata_image(base)
    except testbed.TestbedError as exc:
        pytest.fail(f"could not build the {suite} kata test image:\n{exc}", pytrace=False)
    record_timing(f"{suite} kata image ready ({path.name})", time.monotonic() - started)
    return path


def built_kata_mirror(
    dest: Path, what: str, record_timing: Callable[[str, float], None], kube_patch: str = ""
) -> Dict[str, object]:
    """A signed stand-in repository and the kata tarball in dest, with a key of its own."""
    if shutil.which("gpg") is None:
        pytest.skip("the kata e2e test signs its apt repository with gpg, which is not installed")
    started = time.monotonic()
    key = katalab.RepoKey()
    try:
        info = katalab.build_kata_mirror(dest, key, kube_patch=kube_patch)
    finally:
        key.close()
    record_timing(f"{what} built (signed repo, tarball)", time.monotonic() - started)
    return {**info, "dir": dest}


@pytest.fixture(scope="session")
def kata_image(
    testbed_ready: None, suite: str, record_timing: Callable[[str, float], None]
) -> Path:
    return ready_kata_image(suite, record_timing)


@pytest.fixture(scope="session")
def kata_wheelhouse(kata_image: Path, wheelhouses: Callable[[str], Path]) -> Path:
    """frakti-install's wheels for the suite's python3 (3.11, 3.13, 3.14...)."""
    return wheelhouses(testbed.image_python(kata_image))


@pytest.fixture(scope="session")
def kata_mirror(run_dir: Path, record_timing: Callable[[str, float], None]) -> Dict[str, object]:
    """The signed stand-in repository and the kata tarball, built once per session."""
    return built_kata_mirror(run_dir / "mirror-kata", "kata stand-in mirror", record_timing)


def collect_diagnostics(machine: testbed.Machine, run_dir: Path) -> Path:
    dest = testbed.WORK_ROOT / "diagnostics" / run_dir.name / machine.name
    dest.mkdir(parents=True, exist_ok=True)
    if machine.console.exists():
        shutil.copy(machine.console, dest / "console.log")
    for name, argv in DIAGNOSE.items():
        try:
            result = machine.run(argv, check=False, timeout=60)
            (dest / name).write_text(result.stdout + result.stderr)
        except testbed.TestbedError as exc:
            (dest / name).write_text(str(exc))
    for inside in DIAGNOSE_FILES:
        src, target = machine.path(inside), dest / inside.strip("/").replace("/", "__")
        try:
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True)
            elif src.is_file():
                shutil.copy(src, target)
        except OSError:
            pass
    return dest


def boot_kata_host(
    request: pytest.FixtureRequest,
    label: str,
    kata_image: Path,
    kata_mirror: Dict[str, object],
    run_dir: Path,
    wheelhouse: Path,
    record_timing: Callable[[str, float], None],
    serve: bool = True,
) -> testbed.Machine:
    """A booted host with frakti-install installed and the mirror served (unless not
    `serve`); torn down by a finalizer on request (its diagnostics kept first when a
    test failed)."""
    started = time.monotonic()
    failures_before = request.session.testsfailed
    suite = testbed.image_suite(kata_image)
    label = f"{suite}-{label}"
    # cgroup v2: Kubernetes 1.35+ kubelets refuse cgroup v1 (this module's docstring)
    machine = testbed.boot_machine(kata_image, run_dir, f"kata-{label}", cgroup_v2=True)

    def finish() -> None:
        try:
            if request.session.testsfailed > failures_before:
                testbed.DIAGNOSTICS.append(collect_diagnostics(machine, run_dir))
        finally:
            machine.stop()

    request.addfinalizer(finish)
    testbed.install_project(machine, wheelhouse)
    if serve:
        testbed.serve_mirror(machine, Path(str(kata_mirror["dir"])))
    # The guest cannot load modules: stand in for vhost_vsock/vhost_net with their
    # device nodes (misc minors 241 and 238), unless the host kernel has them loaded.
    for module, device, minor in (
        ("vhost_vsock", "vhost-vsock", 241),
        ("vhost_net", "vhost-net", 238),
    ):
        if not machine.exists(f"/sys/module/{module}") and not machine.exists(f"/dev/{device}"):
            machine.run(["mknod", "-m", "600", f"/dev/{device}", "c", "10", str(minor)])
    record_timing(f"kata-{label}: booted, project installed", time.monotonic() - started)
    return machine


def make_config(mirror: Dict[str, object], **overrides: object) -> Dict[str, object]:
    config: Dict[str, object] = {
        "mirrors": dict(mirror["mirrors"]),  # type: ignore[call-overload]
        "checksums": {"kata": mirror["kata_sha256"]},
        "key_fingerprints": {"kubernetes-apt-key": mirror["fingerprint"]},
        # no vmx/svm flag in the guest and no /dev/kvm in an nspawn container
        "ignore_preflight_errors": ["KVM"],
    }
    config.update(overrides)
    return {k: v for k, v in config.items() if v is not None}


def write_config(machine: testbed.Machine, config: Dict[str, object]) -> None:
    machine.write(CONFIG_PATH, json.dumps(config, indent=1) + "\n", 0o600)  # JSON is YAML


def run_installer(machine: testbed.Machine, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = ["frakti-install", "allinone", "--runtime", "kata", "--yes", "-c", CONFIG_PATH, *extra]
    return machine.run(argv, check=False, timeout=INSTALL_TIMEOUT)


def describe(machine: testbed.Machine, result: subprocess.CompletedProcess[str]) -> str:
    log = machine.run(["tail", "-n", "40", "/var/log/frakti-install.log"], check=False).stdout
    return (
        f"frakti-install exited {result.returncode}\n"
        f"--- stdout (tail) ---\n{result.stdout[-5000:]}\n"
        f"--- stderr (tail) ---\n{result.stderr[-3000:]}\n"
        f"--- /var/log/frakti-install.log (tail) ---\n{log}"
    )


def steps_of(result: subprocess.CompletedProcess[str]) -> List[dict]:
    try:
        doc = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"--json output is not one JSON document:\n{result.stdout[-3000:]}")
    return list(doc.get("steps") or [])


def dpkg_status(machine: testbed.Machine, package: str) -> Dict[str, str]:
    out = machine.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}|${Status}|${Version}", package], check=False
    ).stdout
    abbrev, status, version = (out.split("|") + ["", "", ""])[:3]
    return {"abbrev": abbrev.strip(), "status": status, "version": version}


def containerd_dump(machine: testbed.Machine) -> dict:
    out = machine.run(["containerd", "--config", CONTAINERD_CONFIG, "config", "dump"]).stdout
    return tomllib.loads(out)


def dig(doc: dict, path: tuple) -> object:
    for key in path:
        doc = doc.get(key, {}) if isinstance(doc, dict) else {}
    return doc


def from_suite(machine: testbed.Machine, package: str, version: str, suite: str) -> bool:
    """Whether `version` of `package` is the one the suite's archive carries
    (apt-cache madison: '... | VERSION | URI SUITE[-POCKET]/main amd64 Packages')."""
    out = machine.run(["apt-cache", "madison", package], check=False).stdout
    for line in out.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 3 and fields[1] == version:
            where = fields[2].split()
            if len(where) >= 2 and where[1].split("/")[0].split("-")[0] == suite:
                return True
    return False


def service_snapshot(machine: testbed.Machine) -> Dict[str, Dict[str, str]]:
    props = (
        "MainPID",
        "ActiveEnterTimestampMonotonic",
        "ExecMainStartTimestampMonotonic",
        "NRestarts",
    )
    return {unit: machine.unit_props(unit, *props) for unit in ("containerd", "kubelet")}


def file_prints(machine: testbed.Machine) -> Dict[str, tuple]:
    prints = {}
    for path in TRACKED_FILES:
        host = machine.path(path)
        if host.is_file():
            st = host.stat()
            prints[path] = (hashlib.sha256(host.read_bytes()).hexdigest(), st.st_mtime_ns)
    return prints


def process_argv(machine: testbed.Machine, unit: str) -> List[str]:
    pid = machine.unit_props(unit, "MainPID")["MainPID"]
    argv = [a.decode() for a in machine.read(f"/proc/{pid}/cmdline").split(b"\0") if a]
    if argv and os.path.basename(argv[0]).startswith("python") and len(argv) > 1:
        argv = argv[1:]  # the stand-ins are Python scripts
    return argv


def flag(argv: List[str], name: str) -> Optional[str]:
    """The last value of --name (pflag: the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def cgroup_hierarchy(machine: testbed.Machine) -> str:
    fs = machine.run(["stat", "-fc", "%T", "/sys/fs/cgroup"]).stdout.strip()
    return {"cgroup2fs": "v2 (unified)", "tmpfs": "v1 (legacy/hybrid)"}.get(fs, fs)


@pytest.fixture(scope="module")
def fresh(
    request: pytest.FixtureRequest,
    kata_image: Path,
    kata_mirror: Dict[str, object],
    run_dir: Path,
    kata_wheelhouse: Path,
    suite: str,
    record_timing: Callable[[str, float], None],
) -> Dict[str, object]:
    """One host: the owner's containerd config, then a fresh install."""
    machine = boot_kata_host(
        request, "fresh", kata_image, kata_mirror, run_dir, kata_wheelhouse, record_timing
    )
    machine.write(CONTAINERD_CONFIG, USER_CONTAINERD_CONFIG)
    config = make_config(kata_mirror)
    write_config(machine, config)
    started = time.monotonic()
    first = run_installer(machine)
    record_timing(
        f"{suite}: frakti-install allinone --runtime kata, fresh host", time.monotonic() - started
    )
    return {"machine": machine, "config": config, "first": first, "suite": suite}


@pytest.fixture
def installed(fresh: Dict[str, object]) -> Dict[str, object]:
    first = fresh["first"]
    assert isinstance(first, subprocess.CompletedProcess)
    if first.returncode != 0:
        pytest.skip("the fresh install failed: see test_fresh_install")
    return fresh


# --------------------------------------------------------------------------- (a)


def check_installed(machine: testbed.Machine, mirror: Dict[str, object], suite: str) -> None:
    """What a successful kata install leaves; every problem is listed at once."""
    problems: List[str] = []
    release, config_version = SUITE_CONTAINERD[suite]
    paths = CRI_PATHS[config_version]

    def expect(condition: object, message: str) -> None:
        if not condition:
            problems.append(message)

    hierarchy = cgroup_hierarchy(machine)
    expect(hierarchy == "v2 (unified)", f"the {suite} host booted with cgroup {hierarchy}")
    # containerd: the suite's, running, with the kata handler next to runc
    expect(machine.is_active("containerd"), "containerd is not active")
    enabled = machine.run(["systemctl", "is-enabled", "containerd"], check=False).stdout.strip()
    expect(enabled == "enabled", f"containerd is {enabled!r} at boot")
    for package in ("containerd", "runc"):
        status = dpkg_status(machine, package)
        expect(status["status"] == "install ok installed", f"{package}: {status}")
        expect(
            from_suite(machine, package, status["version"], suite),
            f"{package} {status['version']} is not {suite}'s",
        )
    version = machine.run(["ctr", "--address", SOCKET, "version"], check=False)
    server = re.search(r"Server:\s*\n\s*Version:\s*(\S+)", version.stdout)
    expect(
        version.returncode == 0 and server and server.group(1).startswith(release),
        f"ctr version (containerd {release}x wanted): {version.stdout}{version.stderr}",
    )
    plugins = machine.run(["ctr", "--address", SOCKET, "plugins", "ls"], check=False).stdout
    for plugin in CRI_PLUGINS[config_version]:
        expect(
            any(
                tuple(line.split()[:2]) == plugin and line.split()[-1] == "ok"
                for line in plugins.splitlines()
            ),
            f"containerd's {'.'.join(plugin)} plugin is not ok:\n{plugins}",
        )
    dump = containerd_dump(machine)
    expect(
        dump.get("version") == config_version,
        f"containerd {release}x dumps config version {dump.get('version')}",
    )
    containerd = dig(dump, paths["containerd"])
    assert isinstance(containerd, dict)
    runtimes = containerd.get("runtimes", {})
    kata = runtimes.get("kata", {})
    expect(kata.get("runtime_type") == "io.containerd.kata.v2", f"kata runtime: {kata}")
    expect(
        kata.get("options", {}).get("ConfigPath") == "/opt/kata/frakti-install/configuration.toml",
        f"kata runtime options: {kata.get('options')}",
    )
    runc = runtimes.get("runc", {})
    expect(runc.get("runtime_type") == "io.containerd.runc.v2", f"runc runtime: {runc}")
    # cgroup_driver "auto" means systemd for the kata profile, whatever the hierarchy
    expect(
        runc.get("options", {}).get("SystemdCgroup") is True,
        f"runc SystemdCgroup on a cgroup {hierarchy} guest: {runc.get('options')}",
    )
    expect(
        containerd.get("default_runtime_name") == "runc",
        f"default runtime: {containerd.get('default_runtime_name')}",
    )
    sandbox = dig(dump, paths["sandbox_image"])
    expect(sandbox == "registry.k8s.io/pause:3.10", f"sandbox image: {sandbox}")
    cni = dig(dump, paths["cni"])
    assert isinstance(cni, dict)
    # 2.1 reads bin_dirs (bin_dir is deprecated there); 1.x reads bin_dir
    cni_dirs = cni.get("bin_dirs") or [cni.get("bin_dir")]
    expect("/opt/cni/bin" in cni_dirs, f"CNI: {cni}")
    disabled = set(dump.get("disabled_plugins", []))
    cri_names = {"cri", "io.containerd.grpc.v1.cri"} | {p[1] for p in paths.values()}
    expect(not cri_names & disabled, f"CRI plugin disabled: {sorted(disabled)}")
    # the owner's settings survive, in the file and in what containerd runs with
    registry = dig(dump, paths["registry"])
    assert isinstance(registry, dict)
    mirrors = registry.get("mirrors", {})
    expect(
        mirrors.get("docker.io", {}).get("endpoint") == USER_MIRROR,
        f"the owner's registry mirror is gone from containerd's config: {mirrors}",
    )
    expect(dump.get("oom_score") == -500, f"the owner's oom_score: {dump.get('oom_score')}")
    main = machine.read(CONTAINERD_CONFIG).decode()
    for line in USER_CONTAINERD_CONFIG.splitlines():
        expect(line in main.splitlines(), f"{CONTAINERD_CONFIG} lost the owner's line {line!r}")
    expect(
        '"/etc/containerd/conf.d/*.toml"' in main and "imports" in main,
        f"{CONTAINERD_CONFIG} imports no drop-ins:\n{main}",
    )
    # the Kubernetes packages: from the signed repo, pinned and held
    package_version = str(mirror["package_version"])
    for package in HELD:
        status = dpkg_status(machine, package)
        expect(
            status["status"].endswith("ok installed") and status["version"] == package_version,
            f"{package}: {status}, wanted {package_version}",
        )
    expect(
        dpkg_status(machine, "kubernetes-cni")["status"] == "install ok installed",
        "kubernetes-cni is not installed",
    )
    holds = set(machine.run(["apt-mark", "showhold"]).stdout.split())
    expect(set(HELD) <= holds, f"apt-mark showhold: {sorted(holds)}")
    listing = machine.read(APT_LIST).decode() if machine.exists(APT_LIST) else ""
    minor = mirror["versions"]["minor"]  # type: ignore[index]
    url = f"{mirror['mirrors']['kubernetes-pkgs']}/core:/stable:/{minor}/deb/"  # type: ignore[index]
    expect(f"[signed-by={KEYRING}] {url} /" in listing, f"{APT_LIST}: {listing!r}")
    keyring = machine.run(["gpg", "--batch", "--show-keys", "--with-colons", KEYRING], check=False)
    expect(
        f"fpr:::::::::{mirror['fingerprint']}:" in keyring.stdout,
        f"{KEYRING} does not hold the test key: {keyring.stdout}{keyring.stderr}",
    )
    # kata: the tarball unpacked, the shim on the PATH
    shim = machine.run([SHIM_LINK, "--version"], check=False)
    kata_version = mirror["versions"]["kata"]  # type: ignore[index]
    expect(shim.returncode == 0 and f"version: {kata_version}" in shim.stdout, f"shim: {shim}")
    expect(
        machine.run(["readlink", SHIM_LINK], check=False).stdout.strip() == ENTRY_SHIM,
        f"{SHIM_LINK} does not link to {ENTRY_SHIM}",
    )
    expect(
        machine.run(["readlink", "-f", SHIM_LINK], check=False).stdout.strip()
        == f"/opt/kata-versions/{kata_version}/bin/containerd-shim-kata-v2",
        f"{SHIM_LINK} does not reach the Go shim of the {kata_version} tree",
    )
    for link, target in (
        ("/opt/kata/share/defaults/kata-containers/configuration.toml", "configuration-qemu.toml"),
        ("/opt/kata/share/kata-containers/vmlinux.container", "vmlinux-6.12.28-153"),
        ("/opt/kata/share/kata-containers/kata-containers.img", "kata-ubuntu-noble.image"),
    ):
        found = machine.run(["readlink", link], check=False).stdout.strip()
        expect(found == target, f"{link} -> {found!r}, not {target}")
    modules = machine.read("/etc/modules-load.d/frakti-install-kata.conf").decode().split()
    expect({"vhost_vsock", "vhost_net"} <= set(modules), f"kata modules-load file: {modules}")
    # kubelet on containerd, the cluster, the RuntimeClass
    expect(machine.is_active("kubelet"), "kubelet is not active")
    if machine.is_active("kubelet"):
        argv = process_argv(machine, "kubelet")
        expect(flag(argv, "container-runtime-endpoint") == f"unix://{SOCKET}", f"kubelet: {argv}")
        expect(flag(argv, "cgroup-driver") == "systemd", f"kubelet cgroup driver: {argv}")
    inits = [json.loads(line) for line in machine.read(INIT_LOG).decode().splitlines() if line]
    expect(len(inits) == 1, f"kubeadm init ran {len(inits)} times: {inits}")
    expect(inits and inits[-1]["cri_socket"] == f"unix://{SOCKET}", f"kubeadm init: {inits}")
    expect(
        inits and inits[-1]["kubernetes_version"] == mirror["versions"]["kubernetes"],  # type: ignore[index]
        f"kubeadm init: {inits}",
    )
    expect(
        inits and inits[-1]["runtime_sandbox_image"] == "registry.k8s.io/pause:3.10",
        f"containerd's sandbox image differs from kubeadm's: {inits}",
    )
    nodes = json.loads(machine.run([*ADMIN, "get", "nodes", "-o", "json"]).stdout)["items"]
    expect(len(nodes) == 1, f"nodes: {[n['metadata']['name'] for n in nodes]}")
    for node in nodes:
        ready = [c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"]
        expect(ready == ["True"], f"node Ready: {node['status']['conditions']}")
        taints = [t["key"] for t in node["spec"].get("taints", [])]
        expect(CONTROL_PLANE_TAINT not in taints, f"node taints: {taints}")
        expect(
            node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith(
                f"containerd://{release}"
            ),
            f"runtime (containerd {release}x wanted): {node['status']['nodeInfo']}",
        )
        cni = json.loads(machine.read("/etc/cni/net.d/10-mynet.conf"))
        expect(
            cni.get("ipam", {}).get("subnet") == node["spec"].get("podCIDR"),
            f"10-mynet.conf {cni.get('ipam')} vs podCIDR {node['spec'].get('podCIDR')}",
        )
    state = json.loads(machine.read(STATE))
    runtime_class = state.get("runtimeclasses", {}).get("kata")
    expect(runtime_class is not None, f"no RuntimeClass kata in the API state: {state.keys()}")
    if runtime_class:
        expect(runtime_class["handler"] == "kata", f"RuntimeClass: {runtime_class}")
        expect(
            runtime_class.get("overhead", {}).get("podFixed") == {"memory": "160Mi", "cpu": "250m"},
            f"RuntimeClass overhead: {runtime_class}",
        )
    assert not problems, f"{suite} host (cgroup {hierarchy}) did not converge:\n- " + "\n- ".join(
        problems
    )


def test_fresh_install(fresh: Dict[str, object], kata_mirror: Dict[str, object]) -> None:
    machine, first = fresh["machine"], fresh["first"]
    assert isinstance(machine, testbed.Machine)
    assert isinstance(first, subprocess.CompletedProcess)
    assert first.returncode == 0, describe(machine, first)
    check_installed(machine, kata_mirror, str(fresh["suite"]))
    # Without -c, join-command goes by the recorded settings: workers must run kata too.
    line = machine.run(["frakti-install", "join-command"]).stdout
    words = line.split()
    assert words[0].startswith("FRAKTI_INSTALL_JOIN_TOKEN=") and "--token" not in words, line
    assert " ".join(words[1:]).startswith("frakti-install node --yes --runtime kata --join "), line


# --------------------------------------------------------------------------- (b)


def test_second_run_changes_nothing(
    installed: Dict[str, object],
    kata_mirror: Dict[str, object],
    record_timing: Callable[[str, float], None],
) -> None:
    machine = installed["machine"]
    assert isinstance(machine, testbed.Machine)
    services, files = service_snapshot(machine), file_prints(machine)
    classes = json.loads(machine.read(STATE))["runtimeclasses"]
    started = time.monotonic()
    again = run_installer(machine, "--json")
    record_timing(
        f"{installed['suite']}: frakti-install allinone --runtime kata, second run",
        time.monotonic() - started,
    )
    assert again.returncode == 0, describe(machine, again)
    steps = steps_of(again)
    acted = [s for s in steps if s.get("status") not in ("ok", "skip")]
    assert steps and not acted, f"a second run should find everything in place, but: {acted}"
    after = service_snapshot(machine)
    assert after == services, f"a no-op run restarted a service: {services} -> {after}"
    now = file_prints(machine)
    changed = sorted(p for p in set(files) | set(now) if files.get(p) != now.get(p))
    assert not changed, f"a no-op run rewrote {changed}"
    assert json.loads(machine.read(STATE))["runtimeclasses"] == classes, "RuntimeClass re-applied"
    check_installed(machine, kata_mirror, str(installed["suite"]))


def test_status_is_clean_and_changes_nothing(installed: Dict[str, object]) -> None:
    """`status` (no -c: the recorded settings) checks every step of the converged
    host, finds no drift (exit 0, README exit codes) and touches nothing."""
    machine = installed["machine"]
    assert isinstance(machine, testbed.Machine)
    services, files = service_snapshot(machine), file_prints(machine)
    result = machine.run(["frakti-install", "status", "--json"], check=False, timeout=300)
    assert result.returncode == 0, describe(machine, result)
    steps = steps_of(result)
    names = {s.get("name") for s in steps}
    assert {"containerd", "kubelet"} <= names, f"status checked only {sorted(map(str, names))}"
    drifted = [s for s in steps if s.get("status") not in ("ok", "skip")]
    assert not drifted, f"status found drift on a converged {installed['suite']} host: {drifted}"
    assert service_snapshot(machine) == services, "status restarted a service"
    now = file_prints(machine)
    assert now == files, f"status rewrote {sorted(p for p in now if now[p] != files.get(p))}"


ROOTFS = "/var/lib/frakti-install-e2e/rootfs"
ROOTFS_PROGRAMS = ("/bin/sh", "/usr/bin/uname", "/usr/bin/cat")


def make_rootfs(machine: testbed.Machine) -> None:
    """A container root of the host's own sh, uname and cat with their libraries
    (ldd): no image to pull, the hosts have no registry."""
    script = (
        'R="$1"; shift; mkdir -p "$R/bin" "$R/proc" "$R/dev" "$R/sys"; '
        'for b in "$@"; do cp -L "$b" "$R/bin/"; '
        "for l in $(ldd \"$b\" | grep -o '/[^ ]*'); do "
        'mkdir -p "$R$(dirname "$l")"; cp -L "$l" "$R$l"; done; done'
    )
    machine.run(["sh", "-ec", script, "sh", ROOTFS, *ROOTFS_PROGRAMS])


def test_real_containerd_and_runc_start_a_container(installed: Dict[str, object]) -> None:
    """The containerd and runc the installer set up start a container, with runc's
    systemd cgroup driver as the profile configures it. Through ctr, containerd's
    own client: the hosts have no CRI client (crictl is not in Debian, the
    stand-in kubelet speaks no gRPC), so it does not go through the CRI plugin."""
    machine = installed["machine"]
    assert isinstance(machine, testbed.Machine)
    make_rootfs(machine)
    ran = machine.run(
        ["ctr", "--address", SOCKET, "-n", "k8s.io", "run", "--rm",
         "--runtime", "io.containerd.runc.v2", "--runc-systemd-cgroup",
         "--cgroup", "system.slice:frakti-install-e2e:runc", "--cpu-shares", "0",
         "--rootfs", ROOTFS, "frakti-install-e2e-runc",
         "/bin/sh", "-c", "echo kernel=$(uname -r)"],
        check=False, timeout=120,
    )  # fmt: skip
    host_kernel = machine.run(["uname", "-r"]).stdout.strip()
    assert ran.returncode == 0, f"ctr run with runc exited {ran.returncode}:\n{ran.stderr}"
    assert ran.stdout.strip() == f"kernel={host_kernel}", ran.stdout
    left = machine.run(["ctr", "--address", SOCKET, "-n", "k8s.io", "containers", "ls", "-q"])
    assert "frakti-install-e2e-runc" not in left.stdout.split(), "the container was not removed"


# --------------------------------------------------------------------------- (c)


@pytest.fixture
def bare(
    request: pytest.FixtureRequest,
    kata_image: Path,
    kata_mirror: Dict[str, object],
    run_dir: Path,
    kata_wheelhouse: Path,
    record_timing: Callable[[str, float], None],
) -> testbed.Machine:
    return boot_kata_host(
        request, "checksums", kata_image, kata_mirror, run_dir, kata_wheelhouse, record_timing
    )


def test_untrusted_key_and_wrong_kata_checksum_exit_8(
    bare: testbed.Machine, kata_mirror: Dict[str, object]
) -> None:
    machine = bare
    # The mirror signs with its own key; without key_fingerprints the installer
    # expects the real Kubernetes key and installs nothing from the mirror.
    write_config(machine, make_config(kata_mirror, key_fingerprints=None))
    result = run_installer(machine)
    assert result.returncode == 8, describe(machine, result)
    output = result.stdout + result.stderr
    assert str(kata_mirror["fingerprint"]) in output.replace("\n", ""), output[-3000:]
    assert not machine.exists(KEYRING), f"{KEYRING} installed from an untrusted key"
    assert not machine.exists(APT_LIST), f"{APT_LIST} written although its key is untrusted"
    for package in ("kubelet", "containerd"):
        assert dpkg_status(machine, package)["abbrev"] != "ii", f"{package} got installed"

    # Trusted key, but a kata tarball whose sha256 is not the given one.
    wrong = hashlib.sha256(b"not the kata release").hexdigest()
    write_config(machine, make_config(kata_mirror, checksums={"kata": wrong}))
    result = run_installer(machine)
    assert result.returncode == 8, describe(machine, result)
    output = (result.stdout + result.stderr).replace("\n", "")
    assert wrong in output or "checksum" in output.lower(), output[-3000:]
    assert not machine.exists("/opt/kata"), machine.run(["find", "/opt/kata"], check=False).stdout
    assert not machine.exists(SHIM_LINK), f"{SHIM_LINK} exists"
    assert not machine.exists(KATA_MANIFEST), f"{KATA_MANIFEST} exists"
    assert machine.exists(KEYRING), "the trusted key was not installed on the way"
    assert dpkg_status(machine, "kubelet")["abbrev"] != "ii", "kubelet installed after kata failed"
