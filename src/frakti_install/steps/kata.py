"""Kata Containers: preflight for the kata profile, the release tarball
unpacked into /opt/kata (verified, safely), the containerd shim on the PATH,
the RuntimeClass, and proof that a kata pod is admitted."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from frakti_install import tarsafe
from frakti_install.actions import KubectlApply, Symlink, run
from frakti_install.constants import ADMIN_CONF
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import (
    ConfigError,
    VerifyFailed,
)
from frakti_install.fsio import sha256_of
from frakti_install.polling import NotYet, poll_until
from frakti_install.render import render
from frakti_install.steps.common import template_actions
from frakti_install.steps.preflight import (
    CONTROL_PLANE_PORTS,
    PORT_HINT,
    WORKER_PORTS,
    PreflightCheck,
    common,
    missing_checksums,
    ports_taken,
)

if TYPE_CHECKING:
    from frakti_install.context import Context

ARTIFACT = "kata"
ADMISSION_TIMEOUT = 120.0


def kata_spec(ctx: Context) -> Dict[str, Any]:
    """The kata: table of the profile's data (prefix, shim, handler, ...)."""
    return dict(ctx.runtime.data["kata"])


# --- preflight ----------------------------------------------------------------
def _arch(ctx: Context) -> Optional[str]:
    arches = kata_spec(ctx)["arches"]
    arch = ctx.facts.arch()
    if arch in arches:
        return None
    return f"architecture {arch}: kata's static release is built for {', '.join(arches)}"


def _kvm(ctx: Context) -> Optional[str]:
    why = ctx.facts.kvm_problem()
    if why is None:
        return None
    return (
        f"{why}: Kata pods cannot start on this host (each runs in a KVM virtual "
        "machine); the cluster and its runc pods would work"
    )


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


def _vhost_modules(ctx: Context) -> Optional[str]:
    missing = [m for m in kata_spec(ctx)["modules"] if not ctx.facts.module_loadable(m)]
    if not missing:
        return None
    return (
        f"the kernel has no {' or '.join(missing)}: Kata's VMs reach their agent and "
        "network through them, so kata pods cannot start"
    )


def _cgroup_v1(ctx: Context) -> Optional[str]:
    if ctx.facts.cgroup_version() != 1 or not ctx.runtime.data["kubernetes"]["cgroup_v1_refused"]:
        return None
    return (
        f"the host uses cgroup v1; kubelet {ctx.runtime.kubernetes_version} refuses to start "
        "on it (failCgroupV1 is true by default from Kubernetes 1.35: cgroup v1 is deprecated)"
    )


def _cgroup_v1_fix(ctx: Context) -> str:
    boot = (
        "Boot the host with cgroup v2 (the default of every kata system; with GRUB add "
        "systemd.unified_cgroup_hierarchy=1 to the kernel command line and reboot)"
    )
    allowed = [
        row["minor"]
        for row in ctx.runtime.data["kubernetes"]["releases"]
        if row["cgroup_v1"] != "refused"
    ]
    if not allowed:
        return boot + "."
    return (
        f"{boot}, or install a release whose kubelet still runs on cgroup v1: "
        f"--kubernetes-version {allowed[0]} (add --allow-eol if it is past its end of life; "
        "'frakti-install info' lists the releases)."
    )


KATA_CHECKS: Tuple[PreflightCheck, ...] = (
    *common("Root", "Systemd", "Swap", "NumCPU", "Mem", "Hostname", "FileExisting", "DiskSpace"),
    PreflightCheck("Arch", _arch, "Use an x86_64 or arm64 host."),
    PreflightCheck(
        "Port",
        lambda ctx: ports_taken(ctx, CONTROL_PLANE_PORTS),
        PORT_HINT,
        worker_probe=lambda ctx: ports_taken(ctx, WORKER_PORTS),
    ),
    PreflightCheck("CgroupV2", _cgroup_v1, _cgroup_v1_fix),
    PreflightCheck(
        "FraktiProfile",
        _frakti_profile,
        "Run 'frakti-install reset' first (add --purge to remove its packages).",
    ),
    PreflightCheck(
        "Checksums",
        missing_checksums,
        "The default Kata release's sha256 is pinned; for another release give it with "
        "--checksum kata=SHA256 (sha256sum of the release tarball) or checksums: in the "
        "config file.",
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
    PreflightCheck(
        "VhostModules",
        _vhost_modules,
        "Use a kernel built with CONFIG_VHOST_VSOCK and CONFIG_VHOST_NET, or pass "
        "--ignore-preflight-errors VhostModules to install the cluster anyway.",
    ),
)


def skip_unloadable_modules(ctx: Context) -> bool:
    return bool({"vhostmodules", "all"} & {n.lower() for n in ctx.settings.ignore_preflight_errors})


# --- the release tarball ------------------------------------------------------
def manifest_path(ctx: Context) -> str:
    return f"{ctx.settings.state_dir}/kata-files.json"


def read_manifest(ctx: Context) -> Optional[Dict[str, Any]]:
    text = ctx.host.read_text(manifest_path(ctx))
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def tree_drift(ctx: Context) -> Optional[str]:
    """Why /opt/kata is not the wanted release (None: it is), judged without hashing."""
    artifact = ctx.artifacts.get(ARTIFACT)
    manifest = read_manifest(ctx)
    if manifest is None:
        return "not installed"
    if manifest.get("identity") != artifact.identity:
        wanted = ctx.runtime.version("kata")
        return f"kata {manifest.get('version', '?')} installed, {wanted} wanted"
    if artifact.given_sha256 and artifact.given_sha256 != manifest.get("sha256"):
        return "installed from a tarball with another checksum"
    for path, size in sorted(manifest.get("files", {}).items()):
        st = ctx.host.stat(path)
        if st is None or st.st_size != size or ctx.host.readlink(path) is not None:
            return f"{path} is missing or changed"
    for path, target in sorted(manifest.get("links", {}).items()):
        if ctx.host.readlink(path) != target:
            return f"the link {path} is missing or changed"
    return None


def _same_file(ctx: Context, target: str, staged: Path, mode: int) -> bool:
    st = ctx.host.lstat(target)
    if st is None or not stat.S_ISREG(st.st_mode):
        return False
    if st.st_size != staged.stat().st_size or stat.S_IMODE(st.st_mode) != mode:
        return False
    return ctx.host.sha256(target) == sha256_of(staged)


@dataclass(frozen=True)
class ExtractKata(Action):
    """Download and verify the release tarball, unpack it into the prefix."""

    why: str
    prefix: str

    def describe(self) -> str:
        return f"download, verify and unpack the kata release into {self.prefix} ({self.why})"

    def apply(self, ctx: Context) -> None:
        local = ctx.artifacts.fetch(ARTIFACT)  # a wrong checksum stops here
        artifact = ctx.artifacts.get(ARTIFACT)
        previous = read_manifest(ctx) or {}
        files: Dict[str, int] = {}
        selection = tarsafe.safe_members(local, prefix=self.prefix)  # refused: nothing written
        links = selection.links
        # staged beside the download: the cache has room for the release
        with tempfile.TemporaryDirectory(prefix="kata-", dir=str(local.parent)) as tmp:
            staged = Path(tmp) / "member"
            for member, source in selection.read():
                with open(staged, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                mode = (member.info.mode & 0o755) | 0o400
                if not _same_file(ctx, member.target, staged, mode):
                    ctx.host.install_file(staged, member.target, mode)
                files[member.target] = member.info.size
        for link, target in sorted(links.items()):
            if ctx.host.readlink(link) != target:
                ctx.host.symlink(link, target)
        stale = set(previous.get("files", {})) | set(previous.get("links", {}))
        for path in sorted(stale - set(files) - set(links), reverse=True):
            if ctx.host.exists(path):
                ctx.host.remove(path)
        manifest = {
            "artifact": ARTIFACT,
            "version": ctx.runtime.version("kata"),
            "identity": artifact.identity,
            "sha256": sha256_of(local),
            "files": files,
            "links": links,
        }
        content = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        ctx.host.write_file(manifest_path(ctx), content.encode(), 0o644)


class KataRuntime(Step):
    name = "kata"
    title = "Kata Containers in /opt/kata and its containerd shim"

    def check(self, ctx: Context) -> Check:
        r = kata_spec(ctx)
        actions: List[Action] = []
        drift = tree_drift(ctx)
        if drift:
            actions.append(ExtractKata(drift, r["prefix"]))
        if ctx.host.readlink(r["shim"]) != r["shim_target"]:
            actions.append(Symlink(r["shim"], r["shim_target"]))
        actions += template_actions(
            ctx, r["modules_file"], "kata-modules-load.conf.j2", modules=r["modules"]
        )
        for module in r["modules"]:
            if ctx.facts.module_present(module):
                continue
            if skip_unloadable_modules(ctx) and not ctx.facts.module_loadable(module):
                continue  # preflight warned: kata pods cannot start on this kernel
            actions.append(run("modprobe", module, why=f"load {module}"))
        if not actions:
            return Check.ok(
                f"kata {ctx.runtime.version('kata')} in {r['prefix']}, "
                f"{r['shim']} -> {r['shim_target']}, {' and '.join(r['modules'])} available"
            )
        return Check(actions)

    def verify(self, ctx: Context) -> None:
        super().verify(ctx)
        r = kata_spec(ctx)
        shim = r["shim"]
        runs, output = ctx.facts.runs((shim, *r["version_args"]), timeout=30)
        if not runs:
            raise VerifyFailed(
                f"{shim} does not run: {output}",
                hint="Check that the kata release matches this host's architecture.",
            )


# --- the RuntimeClass and a kata pod --------------------------------------------
class RuntimeClass(Step):
    name = "runtimeclass"
    title = "RuntimeClass kata (handler kata)"

    def check(self, ctx: Context) -> Check:
        r = kata_spec(ctx)
        name, handler = r["runtime_class"], r["handler"]
        wanted_overhead = {"memory": r["overhead"]["memory"], "cpu": r["overhead"]["cpu"]}
        manifest = render(
            "kata-runtimeclass.yaml.j2", name=name, handler=handler, overhead=r["overhead"]
        )
        current = ctx.facts.runtime_class(ADMIN_CONF, name)
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


def admission(ctx: Context) -> Tuple[bool, str]:
    """Would the API server admit a pod with runtimeClassName: kata? (server dry run)"""
    if not ctx.host.exists(ADMIN_CONF):
        return False, "there is no cluster yet"
    name = kata_spec(ctx)["runtime_class"]
    image = ctx.runtime.data["containerd"]["sandbox_image"]
    manifest = render("kata-admission-pod.yaml.j2", runtime_class=name, image=image)
    answer = ctx.facts.server_dry_run(ADMIN_CONF, manifest)
    if not answer.ok or answer.obj is None:
        return False, answer.error
    spec = answer.obj.get("spec") or {}
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
        def admitted() -> object:
            ok, detail = admission(ctx)
            return True if ok else NotYet(detail)

        def refused(detail: str) -> VerifyFailed:
            return VerifyFailed(
                f"a pod with runtimeClassName: {self.runtime_class} is not admitted: {detail}",
                hint=f"See 'kubectl get runtimeclass {self.runtime_class} -o yaml' and the "
                "API server's admission plugins.",
            )

        poll_until(
            admitted, timeout=self.timeout, interval=2, what="admission",
            on_timeout=refused, before_each=ctx.facts.invalidate,
        )  # fmt: skip


class KataPodAdmitted(Step):
    name = "kata-pod"
    title = "A pod with runtimeClassName: kata is admitted"

    def check(self, ctx: Context) -> Check:
        runtime_class = kata_spec(ctx)["runtime_class"]
        ok, detail = admission(ctx)
        if ok:
            return Check.ok(f"a pod with runtimeClassName: {runtime_class} is {detail}")
        return Check([WaitForAdmission(runtime_class, ADMISSION_TIMEOUT)])
