"""Kata Containers: preflight for the kata profile, the release tarball
unpacked into /opt/kata (verified, safely), the containerd shim on the PATH,
the RuntimeClass, and proof that a kata pod is admitted."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from frakti_install.actions import RemoveFile, run
from frakti_install.context import ADMIN_CONF
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import (
    ConfigError,
    ExitCode,
    FraktiInstallError,
    MissingChecksum,
    VerifyFailed,
)
from frakti_install.kata_profile import Kata, kata
from frakti_install.render import render
from frakti_install.steps.cluster import KUBELET_CONF
from frakti_install.steps.common import template_actions
from frakti_install.steps.preflight import (
    CHECKS,
    CONTROL_PLANE_PORTS,
    WORKER_PORTS,
    Preflight,
    PreflightCheck,
)

if TYPE_CHECKING:
    from frakti_install.context import Context

ARTIFACT = "kata"
ADMISSION_TIMEOUT = 120.0


class UnsafeArchive(FraktiInstallError):
    """An archive holds something that must not be unpacked (nothing was installed)."""

    exit_code = ExitCode.CHECKSUM


# --- preflight ----------------------------------------------------------------
def _arch(ctx: Context) -> Optional[str]:
    arches = kata(ctx).runtime["arches"]
    arch = ctx.facts.arch()
    if arch in arches:
        return None
    return f"architecture {arch}: kata's static release is built for {', '.join(arches)}"


def _ports(ctx: Context, wanted: Sequence[int] = CONTROL_PLANE_PORTS) -> Optional[str]:
    if ctx.host.exists(ADMIN_CONF) or ctx.host.exists(KUBELET_CONF):
        return None  # our own cluster holds them
    taken = sorted(set(wanted) & ctx.facts.listening_ports())
    return f"port(s) {', '.join(map(str, taken))} already in use" if taken else None


def _kvm(ctx: Context) -> Optional[str]:
    why = ctx.facts.kvm_problem()
    if why is None:
        return None
    return (
        f"{why}: Kata pods cannot start on this host (each runs in a KVM virtual "
        "machine); the cluster and its runc pods would work"
    )


def _checksums(ctx: Context) -> Optional[str]:
    artifacts = kata(ctx).artifacts
    missing = []
    for name in artifacts.names():
        try:
            artifacts.require_checksum_source(name)
        except MissingChecksum:
            missing.append(name)
    if not missing:
        return None
    return f"no sha256 given for {', '.join(missing)} (upstream publishes none)"


def _frakti_profile(ctx: Context) -> Optional[str]:
    units = [
        name
        for name, unit in ctx.facts.units(["frakti.service", "hyperd.service"]).items()
        if unit.exists
    ]
    binaries = [
        path for path in ("/usr/bin/kubelet", "/usr/bin/frakti") if path in ctx.installed.paths()
    ]
    found = units + binaries
    if not found:
        return None
    return (
        f"the frakti profile is installed here ({', '.join(found)}); its Kubernetes 1.12 "
        "binaries would clash with the packages"
    )


_SHARED = ("Root", "Systemd", "Swap", "NumCPU", "Mem", "Hostname", "FileExisting", "DiskSpace")

KATA_CHECKS: Tuple[PreflightCheck, ...] = tuple(c for c in CHECKS if c.name in _SHARED) + (
    PreflightCheck("Arch", _arch, "Use an x86_64 or arm64 host."),
    PreflightCheck("Port", _ports, "Stop whatever listens there (ss -ltnp shows it)."),
    PreflightCheck(
        "FraktiProfile",
        _frakti_profile,
        "Run 'frakti-install reset' first (add --purge to remove its packages).",
    ),
    PreflightCheck(
        "Checksums",
        _checksums,
        "Give it with --checksum kata=SHA256 (sha256sum of the release tarball) or "
        "checksums: in the config file.",
    ),
    # Fatal, unlike the frakti profile's warning: hyperd falls back to slow
    # emulation, but Kata's QEMU needs KVM, so the profile's whole point (pods
    # in VMs) would fail at the first kata pod, long after the install "worked".
    PreflightCheck(
        "KVM",
        _kvm,
        "Enable VT-x/AMD-V in the firmware (or nested virtualisation for a VM), or pass "
        "--ignore-preflight-errors KVM to install the cluster anyway.",
    ),
)


def module_loadable(ctx: Context, module: str) -> bool:
    if module_present(ctx, module):
        return True
    return ctx.host.run(["modinfo", "-F", "filename", module], check=False).ok


def _vhost_modules(ctx: Context) -> Optional[str]:
    missing = [m for m in kata(ctx).runtime["modules"] if not module_loadable(ctx, m)]
    if not missing:
        return None
    return (
        f"the kernel has no {' or '.join(missing)}: Kata's VMs reach their agent and "
        "network through them, so kata pods cannot start"
    )


KATA_CHECKS += (
    PreflightCheck(
        "VhostModules",
        _vhost_modules,
        "Use a kernel built with CONFIG_VHOST_VSOCK and CONFIG_VHOST_NET, or pass "
        "--ignore-preflight-errors VhostModules to install the cluster anyway.",
    ),
)


def skip_unloadable_modules(ctx: Context) -> bool:
    return bool({"vhostmodules", "all"} & {n.lower() for n in ctx.settings.ignore_preflight_errors})


# A worker runs no control plane: only the kubelet's port must be free.
KATA_WORKER_CHECKS = tuple(
    PreflightCheck("Port", lambda ctx: _ports(ctx, WORKER_PORTS), check.hint)
    if check.name == "Port"
    else check
    for check in KATA_CHECKS
)


class KataPreflight(Preflight):
    """The frakti profile's generic checks, kata's own, and no CgroupV1: kata
    and current kubelets are at home on cgroup v2."""

    def __init__(self, checks: Sequence[PreflightCheck] = KATA_CHECKS) -> None:
        super().__init__(checks)

    @classmethod
    def for_worker(cls) -> KataPreflight:
        return cls(KATA_WORKER_CHECKS)

    def check(self, ctx: Context) -> Check:
        kata(ctx)  # an OS the kata profile does not know stops here (exit 4)
        return super().check(ctx)


# --- the release tarball ------------------------------------------------------
@dataclass(frozen=True)
class Member:
    info: tarfile.TarInfo
    target: str  # where it goes on the host


def safe_members(archive: tarfile.TarFile, prefix: str) -> Tuple[List[Member], Dict[str, str]]:
    """Regular files, and symlinks that stay inside prefix; directories are made
    as needed. Anything else (devices, hard links, paths outside prefix,
    files below a link) refuses the whole archive before anything is written."""
    root = prefix.strip("/")
    files: List[Member] = []
    links: Dict[str, str] = {}
    for info in archive.getmembers():
        name = info.name
        while name.startswith("./"):
            name = name[2:]
        name = name.rstrip("/")
        if name in ("", "."):
            continue
        parts = name.split("/")
        if info.name.startswith("/") or ".." in parts:
            raise UnsafeArchive(f"archive member {info.name!r} leaves the tree; nothing installed")
        inside = name == root or name.startswith(root + "/")
        if info.isdir() and (inside or root.startswith(name + "/")):
            continue
        if not inside or name == root:
            raise UnsafeArchive(
                f"archive member {info.name!r} is outside ./{root}; nothing installed"
            )
        target = "/" + name
        if info.isreg():
            files.append(Member(info, target))
        elif info.issym():
            link = info.linkname
            resolved = os.path.normpath(
                link if link.startswith("/") else os.path.join(os.path.dirname(target), link)
            )
            if not resolved.startswith(prefix.rstrip("/") + "/"):
                raise UnsafeArchive(
                    f"archive link {info.name!r} points outside {prefix} ({link}); "
                    "nothing installed"
                )
            links[target] = link
        else:
            raise UnsafeArchive(
                f"archive member {info.name!r} is neither a file, a directory nor a link "
                "inside the tree; nothing installed"
            )
    for member in files:
        parent = os.path.dirname(member.target)
        while parent.startswith("/" + root):
            if parent in links:
                raise UnsafeArchive(
                    f"archive file {member.info.name!r} lies below the link {parent}; "
                    "nothing installed"
                )
            parent = os.path.dirname(parent)
    return files, links


def manifest_path(ctx: Context) -> str:
    return f"{ctx.settings.state_dir}/kata-files.json"


def read_manifest(ctx: Context) -> Optional[Dict[str, Any]]:
    text = ctx.host.read_text(manifest_path(ctx))
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def readlink(ctx: Context, path: str) -> Optional[str]:
    local = ctx.host.path(path)
    return os.readlink(local) if os.path.islink(local) else None


def tree_drift(ctx: Context, k: Kata) -> Optional[str]:
    """Why /opt/kata is not the wanted release (None: it is), judged without hashing."""
    artifact = k.artifacts.get(ARTIFACT)
    manifest = read_manifest(ctx)
    if manifest is None:
        return "not installed"
    if manifest.get("identity") != artifact.identity:
        return f"kata {manifest.get('version', '?')} installed, {k.versions.kata} wanted"
    if artifact.given_sha256 and artifact.given_sha256 != manifest.get("sha256"):
        return "installed from a tarball with another checksum"
    for path, size in sorted(manifest.get("files", {}).items()):
        st = ctx.host.stat(path)
        if st is None or st.st_size != size or os.path.islink(ctx.host.path(path)):
            return f"{path} is missing or changed"
    for path, target in sorted(manifest.get("links", {}).items()):
        if readlink(ctx, path) != target:
            return f"the link {path} is missing or changed"
    return None


def _sha256(path: Path) -> str:
    from frakti_install.download import sha256_of

    return sha256_of(path)


def _same_file(ctx: Context, target: str, staged: Path, mode: int) -> bool:
    st = ctx.host.stat(target)
    if st is None or os.path.islink(ctx.host.path(target)):
        return False
    if st.st_size != staged.stat().st_size or stat.S_IMODE(st.st_mode) != mode:
        return False
    return _sha256(ctx.host.path(target)) == _sha256(staged)


def make_link(ctx: Context, link: str, target: str) -> None:
    """A symlink through the host's command door, recorded for reset."""
    parent = os.path.dirname(link)
    if not ctx.host.exists(parent):
        ctx.host.run(["mkdir", "-p", parent])
    ctx.host.run(["ln", "-sfn", target, link])
    ctx.journal.record(event="file", action="write", path=link, created=True, backup=None)


@dataclass(frozen=True)
class ExtractKata(Action):
    """Download and verify the release tarball, unpack it into the prefix."""

    why: str
    prefix: str

    def describe(self) -> str:
        return f"download, verify and unpack the kata release into {self.prefix} ({self.why})"

    def apply(self, ctx: Context) -> None:
        k = kata(ctx)
        local = k.artifacts.fetch(ARTIFACT)  # a wrong checksum stops here
        artifact = k.artifacts.get(ARTIFACT)
        previous = read_manifest(ctx) or {}
        files: Dict[str, int] = {}
        scratch = ctx.host.path(ctx.settings.cache_dir)
        scratch.mkdir(parents=True, exist_ok=True)
        with tarfile.open(local) as archive, tempfile.TemporaryDirectory(
            prefix="kata-", dir=str(scratch)
        ) as tmp:
            members, links = safe_members(archive, self.prefix)
            staged = Path(tmp) / "member"
            for member in members:
                source = archive.extractfile(member.info)
                assert source is not None, member.info.name
                with source, open(staged, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                mode = (member.info.mode & 0o755) | 0o400
                if not _same_file(ctx, member.target, staged, mode):
                    ctx.host.install_file(staged, member.target, mode)
                files[member.target] = member.info.size
        for link, target in sorted(links.items()):
            if readlink(ctx, link) != target:
                if ctx.host.exists(link) and readlink(ctx, link) is None:
                    ctx.host.remove(link)  # a file in the link's place (ln replaces links)
                make_link(ctx, link, target)
        stale = set(previous.get("files", {})) | set(previous.get("links", {}))
        for path in sorted(stale - set(files) - set(links), reverse=True):
            if ctx.host.exists(path):
                ctx.host.remove(path)
        manifest = {
            "artifact": ARTIFACT,
            "version": k.versions.kata,
            "identity": artifact.identity,
            "sha256": _sha256(local),
            "files": files,
            "links": links,
        }
        content = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        ctx.host.write_file(manifest_path(ctx), content.encode(), 0o644)


@dataclass(frozen=True)
class Link(Action):
    path: str
    target: str

    def describe(self) -> str:
        return f"link {self.path} -> {self.target}"

    def apply(self, ctx: Context) -> None:
        make_link(ctx, self.path, self.target)


def module_present(ctx: Context, module: str) -> bool:
    """Loaded, or its device node is there (opening it loads the module)."""
    return ctx.facts.module_loaded(module) or ctx.host.exists("/dev/" + module.replace("_", "-"))


class KataRuntime(Step):
    name = "kata"
    title = "Kata Containers in /opt/kata and its containerd shim"

    def check(self, ctx: Context) -> Check:
        k = kata(ctx)
        r = k.runtime
        actions: List[Action] = []
        drift = tree_drift(ctx, k)
        if drift:
            actions.append(ExtractKata(drift, r["prefix"]))
        if readlink(ctx, r["shim"]) != r["shim_target"]:
            if ctx.host.exists(r["shim"]) and readlink(ctx, r["shim"]) is None:
                actions.append(RemoveFile(r["shim"]))
            actions.append(Link(r["shim"], r["shim_target"]))
        actions += template_actions(
            ctx, r["modules_file"], "kata-modules-load.conf.j2", modules=r["modules"]
        )
        for module in r["modules"]:
            if module_present(ctx, module):
                continue
            if skip_unloadable_modules(ctx) and not module_loadable(ctx, module):
                continue  # preflight warned: kata pods cannot start on this kernel
            actions.append(run("modprobe", module, why=f"load {module}"))
        if not actions:
            return Check.ok(
                f"kata {k.versions.kata} in {r['prefix']}, {r['shim']} -> {r['shim_target']}, "
                f"{' and '.join(r['modules'])} available"
            )
        return Check(actions)

    def verify(self, ctx: Context) -> None:
        super().verify(ctx)
        shim = kata(ctx).runtime["shim"]
        result = ctx.host.run([shim, "-v"], check=False, timeout=30)
        if not result.ok:
            raise VerifyFailed(
                f"{shim} does not run: {(result.stderr or result.stdout).strip()}",
                hint="Check that the kata release matches this host's architecture.",
            )


# --- the RuntimeClass and a kata pod --------------------------------------------
def kubectl(*args: str) -> List[str]:
    return ["kubectl", "--kubeconfig", ADMIN_CONF, *args]


@dataclass(frozen=True)
class KubectlApply(Action):
    manifest: str = field(repr=False)
    why: str = ""

    def describe(self) -> str:
        return f"{self.why}: kubectl apply -f -"

    def apply(self, ctx: Context) -> None:
        ctx.host.run(kubectl("apply", "-f", "-"), input=self.manifest, timeout=120)


def get_runtime_class(ctx: Context, name: str) -> Optional[Dict[str, Any]]:
    """The RuntimeClass, or None when it is absent (or the API cannot be asked yet)."""
    if not ctx.host.exists(ADMIN_CONF):
        return None
    result = ctx.host.run(
        kubectl("get", "runtimeclass", name, "-o", "json"), check=False, timeout=60
    )
    if not result.ok:
        return None
    try:
        found = json.loads(result.stdout)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


class RuntimeClass(Step):
    name = "runtimeclass"
    title = "RuntimeClass kata (handler kata)"

    def check(self, ctx: Context) -> Check:
        r = kata(ctx).runtime
        name, handler = r["runtime_class"], r["handler"]
        wanted_overhead = {"memory": r["overhead"]["memory"], "cpu": r["overhead"]["cpu"]}
        manifest = render(
            "kata-runtimeclass.yaml.j2", name=name, handler=handler, overhead=r["overhead"]
        )
        current = get_runtime_class(ctx, name)
        if current is None:
            return Check(
                [KubectlApply(manifest, f"create RuntimeClass {name} (handler {handler})")]
            )
        if current.get("handler") != handler:
            raise ConfigError(
                f"RuntimeClass {name} exists with handler {current.get('handler')!r}, not "
                f"{handler!r} (a handler cannot be changed)",
                hint=f"It was made by something else (kata-deploy?). Delete it "
                f"(kubectl delete runtimeclass {name}) and run frakti-install again.",
            )
        overhead = (current.get("overhead") or {}).get("podFixed") or {}
        if overhead != wanted_overhead:
            return Check([KubectlApply(manifest, f"update RuntimeClass {name}'s pod overhead")])
        return Check.ok(f"RuntimeClass {name} exists with handler {handler}")


def admission(ctx: Context, k: Kata) -> Tuple[bool, str]:
    """Would the API server admit a pod with runtimeClassName: kata? (server dry run)"""
    if not ctx.host.exists(ADMIN_CONF):
        return False, "there is no cluster yet"
    name = k.runtime["runtime_class"]
    manifest = render(
        "kata-admission-pod.yaml.j2", runtime_class=name, image=k.containerd["sandbox_image"]
    )
    result = ctx.host.run(
        kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-"),
        input=manifest,
        check=False,
        timeout=60,
    )
    if not result.ok:
        return False, (result.stderr or result.stdout).strip() or "kubectl failed"
    try:
        spec = json.loads(result.stdout).get("spec", {})
    except (ValueError, AttributeError):
        return False, "kubectl printed no pod"
    if spec.get("runtimeClassName") != name:
        return False, f"the admitted pod lost runtimeClassName {name}"
    if not spec.get("overhead"):
        return False, f"the pod got no overhead: RuntimeClass {name} was not applied to it"
    overhead = ", ".join(f"{key} {value}" for key, value in sorted(spec["overhead"].items()))
    return True, f"admitted with the RuntimeClass's overhead ({overhead})"


@dataclass(frozen=True)
class WaitForAdmission(Action):
    runtime_class: str
    timeout: float

    def describe(self) -> str:
        return (
            f"check, up to {self.timeout:.0f} s, that the API server admits a pod with "
            f"runtimeClassName: {self.runtime_class} (kubectl apply --dry-run=server)"
        )

    def apply(self, ctx: Context) -> None:
        # Right after init the default service account may not exist yet.
        k = kata(ctx)
        deadline = time.monotonic() + self.timeout
        while True:
            ok, detail = admission(ctx, k)
            if ok:
                return
            if time.monotonic() >= deadline:
                raise VerifyFailed(
                    f"a pod with runtimeClassName: {self.runtime_class} is not admitted: {detail}",
                    hint=f"See 'kubectl get runtimeclass {self.runtime_class} -o yaml' and the "
                    "API server's admission plugins.",
                )
            time.sleep(2)


class KataPodAdmitted(Step):
    name = "kata-pod"
    title = "A pod with runtimeClassName: kata is admitted"

    def check(self, ctx: Context) -> Check:
        k = kata(ctx)
        ok, detail = admission(ctx, k)
        if ok:
            return Check.ok(
                f"a pod with runtimeClassName: {k.runtime['runtime_class']} is {detail}"
            )
        return Check([WaitForAdmission(k.runtime["runtime_class"], ADMISSION_TIMEOUT)])
