"""Kata Containers: preflight for the kata profile, the release tarball
unpacked into a tree of its own that /opt/kata links to (verified, safely;
an upgrade switches the link in one rename), the containerd shim on the PATH,
the RuntimeClass, and proof that a kata pod is admitted."""

from __future__ import annotations

import json
import os
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
        "KataPrefix",
        lambda ctx: _foreign_prefix(ctx),  # defined with the trees, below
        "Another Kata Containers install owns it (kata-deploy's, or one by hand): remove it "
        "(kata-deploy: its cleanup), or move it away, then run again; frakti-install does not "
        "replace or delete a Kata it did not install.",
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


def _foreign_prefix(ctx: Context) -> Optional[str]:
    """A /opt/kata that frakti-install did not make: a directory no manifest of ours
    lists (kata-deploy's, a hand install), or a link to somewhere else than a tree."""
    prefix = kata_spec(ctx)["prefix"]
    points_to = ctx.host.readlink(prefix)
    if points_to is not None:
        if os.path.dirname(active_tree(ctx) or "") == kata_spec(ctx)["trees"]:
            return None
        return f"{prefix} is a link to {points_to}, not to a tree of ours"
    if not ctx.host.exists(prefix) or "in_place" in read_manifest(ctx):
        return None
    journal = ctx.host.undo_log(f"{ctx.settings.state_dir}/journal.jsonl")
    if any(path.startswith(prefix + "/") for path in journal.files):
        return None  # an in-place unpack of ours, killed before its manifest was written
    return (
        f"{prefix} exists and frakti-install did not install it (neither kata-files.json "
        "nor the journal lists it)"
    )


def skip_unloadable_modules(ctx: Context) -> bool:
    return bool({"vhostmodules", "all"} & {n.lower() for n in ctx.settings.ignore_preflight_errors})


# --- the release tarball, one tree per release -----------------------------------
# Each release is unpacked into trees/<version>; the prefix (/opt/kata) is a
# relative symlink to the active tree, switched by one rename. The manifest
# (kata-files.json) lists each tree's files and links; a manifest without
# "trees" is the in-place layout (/opt/kata a directory), migrated by SwitchKata.
def manifest_path(ctx: Context) -> str:
    return f"{ctx.settings.state_dir}/kata-files.json"


def read_manifest(ctx: Context) -> Dict[str, Any]:
    """{"trees": {tree: entry}} (entry: version, identity, sha256, files, links);
    the in-place layout's single entry is under "in_place"."""
    text = ctx.host.read_text(manifest_path(ctx))
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {"trees": {}}
    if "trees" not in data:
        return {"trees": {}, "in_place": data}
    return data


def write_manifest(ctx: Context, manifest: Dict[str, Any]) -> None:
    """The trees, and the in-place layout's entry until SwitchKata has moved it."""
    kept = {key: manifest[key] for key in ("trees", "in_place") if key in manifest}
    content = json.dumps(kept, indent=1, sort_keys=True) + "\n"
    ctx.host.write_file(manifest_path(ctx), content.encode(), 0o644)


def tree_of(ctx: Context) -> str:
    """The wanted release's tree: /opt/kata-versions/3.32.0; a tree of this
    release already unpacked from the wanted tarball (its sha256, given or
    pinned, known before the download); or, when 3.32.0 holds a tarball with
    another checksum (a mirror's rebuild), 3.32.0+<its first 12 hex digits>,
    so the rebuild is unpacked beside the tree in use and switched to, never
    written over it."""
    version = ctx.runtime.version("kata")
    plain = f"{kata_spec(ctx)['trees']}/{version}"
    artifact = ctx.artifacts.get(ARTIFACT)
    wanted = artifact.given_sha256 or artifact.pinned_sha256
    if wanted is None:
        return plain
    trees = read_manifest(ctx)["trees"]
    unpacked = [
        tree
        for tree, entry in trees.items()
        if entry.get("identity") == artifact.identity and entry.get("sha256") == wanted
    ]
    if unpacked:
        return plain if plain in unpacked else sorted(unpacked)[0]
    return plain if plain not in trees else f"{plain}+{wanted[:12]}"


def link_text(ctx: Context, tree: str) -> str:
    """The prefix's link to a tree, relative (kata-versions/3.32.0)."""
    return os.path.relpath(tree, os.path.dirname(kata_spec(ctx)["prefix"]))


def active_tree(ctx: Context) -> Optional[str]:
    """The tree the prefix links to (None: no link, e.g. the in-place layout)."""
    r = kata_spec(ctx)
    text = ctx.host.readlink(r["prefix"])
    if text is None:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(r["prefix"]), text))


def unpack_drift(ctx: Context, tree: str) -> Optional[str]:
    """Why `tree` does not hold the wanted release (None: it does), judged without hashing."""
    artifact = ctx.artifacts.get(ARTIFACT)
    manifest = read_manifest(ctx)
    entry = manifest["trees"].get(tree)
    if entry is None:
        in_place = manifest.get("in_place")
        if in_place:
            return f"kata {in_place.get('version', '?')} unpacked in place, {tree} wanted"
        return "not installed"
    if entry.get("identity") != artifact.identity:
        return f"{tree} holds kata {entry.get('version', '?')}"
    if artifact.given_sha256 and artifact.given_sha256 != entry.get("sha256"):
        return "installed from a tarball with another checksum"
    for path, size in sorted(entry.get("files", {}).items()):
        st = ctx.host.stat(path)
        if st is None or st.st_size != size or ctx.host.readlink(path) is not None:
            return f"{path} is missing or changed"
    for path, target in sorted(entry.get("links", {}).items()):
        if ctx.host.readlink(path) != target:
            return f"the link {path} is missing or changed"
    return None


def entry_links(ctx: Context, tree: str) -> Dict[str, str]:
    """The tree's entry links (kata.entry moved into it) -> where its release's
    layout keeps the shim and the configuration, relative, so that they hold
    in whichever tree the prefix links to."""
    r = kata_spec(ctx)
    pairs = ((r["entry"]["shim"], r["layout_shim"]), (r["entry"]["config"], r["layout_config"]))
    return {
        _in_tree(entry, r["prefix"], tree): os.path.relpath(target, os.path.dirname(entry))
        for entry, target in pairs
    }


def entry_drift(ctx: Context, tree: str) -> Optional[str]:
    """Why `tree` lacks its entry links (a tree unpacked by an older frakti-install)."""
    for link, target in sorted(entry_links(ctx, tree).items()):
        if ctx.host.readlink(link) != target:
            return f"the entry link {link} is missing or changed"
    return None


def tree_drift(ctx: Context) -> Optional[str]:
    """Why the prefix does not give the wanted release (None: it does)."""
    tree = tree_of(ctx)
    drift = unpack_drift(ctx, tree) or entry_drift(ctx, tree)
    if drift:
        return drift
    active = active_tree(ctx)
    if active != tree:
        prefix = kata_spec(ctx)["prefix"]
        return f"{prefix} links to {active}" if active else f"{prefix} is not a link to {tree}"
    return None


def _same_file(ctx: Context, target: str, staged: Path, mode: int) -> bool:
    st = ctx.host.lstat(target)
    if st is None or not stat.S_ISREG(st.st_mode):
        return False
    if st.st_size != staged.stat().st_size or stat.S_IMODE(st.st_mode) != mode:
        return False
    return ctx.host.sha256(target) == sha256_of(staged)


def _in_tree(path: str, prefix: str, tree: str) -> str:
    """An archive path under the prefix, moved into the tree."""
    if path == prefix or path.startswith(prefix + "/"):
        return tree + path[len(prefix):]
    return path


@dataclass(frozen=True)
class UnpackKata(Action):
    """Download and verify the release tarball, unpack it into its own tree
    (the active tree and every other stay as they are), and make the tree's
    entry links."""

    why: str
    prefix: str
    tree: str

    def describe(self) -> str:
        return f"download, verify and unpack the kata release into {self.tree} ({self.why})"

    def apply(self, ctx: Context) -> None:
        local = ctx.artifacts.fetch(ARTIFACT)  # a wrong checksum stops here
        artifact = ctx.artifacts.get(ARTIFACT)
        manifest = read_manifest(ctx)
        previous = manifest["trees"].get(self.tree) or {}
        selection = tarsafe.safe_members(local, prefix=self.prefix)  # refused: nothing written
        ctx.host.note(event="tree", path=kata_spec(ctx)["trees"])  # reset removes it whole
        files: Dict[str, int] = {}
        links = {
            _in_tree(link, self.prefix, self.tree): _in_tree(target, self.prefix, self.tree)
            for link, target in selection.links.items()
        }
        links.update(entry_links(ctx, self.tree))
        # staged beside the download: the cache has room for the release
        with tempfile.TemporaryDirectory(prefix="kata-", dir=str(local.parent)) as tmp:
            staged = Path(tmp) / "member"
            for member, source in selection.read():
                with open(staged, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                mode = (member.info.mode & 0o755) | 0o400
                target = _in_tree(member.target, self.prefix, self.tree)
                if not _same_file(ctx, target, staged, mode):
                    ctx.host.install_file(staged, target, mode)
                files[target] = member.info.size
        for link, target in sorted(links.items()):
            if ctx.host.readlink(link) != target:
                ctx.host.symlink(link, target)
        stale = set(previous.get("files", {})) | set(previous.get("links", {}))
        for path in sorted(stale - set(files) - set(links), reverse=True):
            if ctx.host.exists(path):
                ctx.host.remove(path)
        manifest["trees"][self.tree] = {
            "artifact": ARTIFACT,
            "version": ctx.runtime.version("kata"),
            "identity": artifact.identity,
            "sha256": sha256_of(local),
            "files": files,
            "links": links,
        }
        write_manifest(ctx, manifest)


@dataclass(frozen=True)
class LinkKataEntries(Action):
    """Give a tree unpacked by an older frakti-install its entry links, so the
    shim link and ConfigPath can name the entry paths."""

    tree: str

    def describe(self) -> str:
        return f"link {self.tree}/frakti-install/ to its release's shim and configuration"

    def apply(self, ctx: Context) -> None:
        links = entry_links(ctx, self.tree)
        for link, target in sorted(links.items()):
            if ctx.host.readlink(link) != target:
                ctx.host.symlink(link, target)
        manifest = read_manifest(ctx)
        entry = manifest["trees"].get(self.tree)
        if entry is not None:
            entry.setdefault("links", {}).update(links)
            write_manifest(ctx, manifest)


@dataclass(frozen=True)
class SwitchKata(Action):
    """Point the prefix at the unpacked tree in one rename: the shim link and
    the drop-in's ConfigPath (both name the entry links under the prefix) and
    Kata's own paths switch together, whatever the release's layout. The in-place
    layout's directory is exchanged for the link and kept beside the trees
    (removed with the other old trees once the node is Ready); meanwhile the
    shim link points straight into the new tree, so the shim is never missing."""

    prefix: str
    tree: str
    shim: str
    shim_target: str

    def describe(self) -> str:
        return f"switch {self.prefix} to {self.tree} (one rename of the link)"

    def apply(self, ctx: Context) -> None:
        foreign = _foreign_prefix(ctx)
        if foreign:
            raise ConfigError(foreign, hint="Remove or move it away, then run again.")
        link = link_text(ctx, self.tree)
        if ctx.host.readlink(self.prefix) is not None or not ctx.host.is_dir(self.prefix):
            ctx.host.symlink(self.prefix, link)
            return
        direct = _in_tree(self.shim_target, self.prefix, self.tree)
        ctx.host.symlink(self.shim, direct)
        trees = kata_spec(ctx)["trees"]
        ctx.host.note(event="tree", path=trees)
        aside = next(
            name
            for name in (f"{trees}/.in-place-{os.getpid()}-{n}" for n in range(1000))
            if not ctx.host.exists(name)
        )
        ctx.host.replace_dir_with_link(self.prefix, link, aside)
        ctx.host.symlink(self.shim, self.shim_target)
        manifest = read_manifest(ctx)
        if manifest.pop("in_place", None) is not None:
            write_manifest(ctx, manifest)


def old_trees(ctx: Context) -> List[str]:
    """The trees beside the active one (older releases, the in-place layout's)."""
    trees, active = kata_spec(ctx)["trees"], active_tree(ctx)
    if active is None:
        return []
    return [f"{trees}/{name}" for name in ctx.host.listdir(trees) if f"{trees}/{name}" != active]


@dataclass(frozen=True)
class RemoveKataTree(Action):
    tree: str

    def describe(self) -> str:
        return f"remove the previous kata tree {self.tree}"

    def apply(self, ctx: Context) -> None:
        manifest = read_manifest(ctx)
        if ctx.host.is_dir(self.tree):
            ctx.host.remove_tree(self.tree)
        else:  # the link of a migration killed before its exchange
            ctx.host.remove(self.tree)
        if manifest["trees"].pop(self.tree, None) is not None:
            write_manifest(ctx, manifest)


class KataPrune(Step):
    name = "kata-prune"
    title = "Previous Kata trees removed once the node is Ready"

    def check(self, ctx: Context) -> Check:
        old = old_trees(ctx)
        if not old:
            return Check.ok(f"only the active kata tree {active_tree(ctx) or '(none)'} is kept")
        return Check([RemoveKataTree(tree) for tree in old])


class KataRuntime(Step):
    name = "kata"
    title = "Kata Containers in its own tree, /opt/kata linked to it, and its containerd shim"

    def check(self, ctx: Context) -> Check:
        r = kata_spec(ctx)
        actions: List[Action] = []
        tree = tree_of(ctx)
        drift = unpack_drift(ctx, tree)
        if drift:
            actions.append(UnpackKata(drift, r["prefix"], tree))
        elif entry_drift(ctx, tree):
            actions.append(LinkKataEntries(tree))
        if active_tree(ctx) != tree:
            actions.append(SwitchKata(r["prefix"], tree, r["shim"], r["shim_target"]))
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
                f"kata {ctx.runtime.version('kata')} in {tree} ({r['prefix']} links to it), "
                f"{r['shim']} -> {r['shim_target']} (-> {r['layout_shim']}), "
                f"{' and '.join(r['modules'])} available"
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
