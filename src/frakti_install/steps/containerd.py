"""containerd for the kata profile: the distribution's package, our settings in
a drop-in, and the main config.toml touched only where the drop-in needs it.

- The installed release (`containerd --version`) and the `version = N` of
  /etc/containerd/config.toml decide where the settings go (data/containerd.yaml):
  containerd 2.x merges its files first and migrates the result by the version
  of the last file that names one, so the drop-in is written at the main
  config's version, with that version's plugin paths (v2:
  io.containerd.grpc.v1.cri; v3/v4: io.containerd.cri.v1.runtime and .images).
- /etc/containerd/conf.d/90-frakti-install.toml (ours, rewritten each run):
  the kata handler (io.containerd.kata.v2) next to runc, which stays the
  default; runc's SystemdCgroup matching kubelet's cgroup driver.
- /etc/containerd/config.toml (the user's): created when missing (containerd
  reads conf.d only through an `imports` line: 2.2's default config lists it,
  but nothing imports it when the file is absent or lacks the line); otherwise
  edited with tomlkit, which keeps its comments and layout, backed up by the
  host: a version where it has none, our glob in `imports`, the CRI out of
  `disabled_plugins` (Docker's containerd.io disables it; an import cannot
  turn it back on: lists are appended).
- containerd 1.x replaces a plugin's whole table with the last file that sets
  it (containerd issue #5837, fixed in 2.0), so there the drop-in repeats the
  CRI tables of the file that set them last, merged key by key with ours.
- containerd restarts when a file it reads is written, or when they differ
  from the ones it was last (re)started with (a digest in the state
  directory), so a run killed between writing and restarting still restarts
  on the next run.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import tomlkit
from tomlkit.exceptions import TOMLKitError

from frakti_install import datafiles
from frakti_install.actions import EditFile, Systemctl, WriteFile
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import ConfigError, FraktiInstallError, VerifyFailed
from frakti_install.render import render
from frakti_install.steps.common import file_actions, package_actions, wait_for
from frakti_install.steps.preflight import PreflightCheck
from frakti_install.steps.proxy import Proxy

if TYPE_CHECKING:
    from frakti_install.context import Context

Version = Tuple[int, int, int]


# --- what the installed release reads ----------------------------------------
@dataclass(frozen=True)
class Release:
    """What one containerd release reads (an entry of data/containerd.yaml)."""

    version: Version
    max_version: int  # the newest config version it reads
    default_version: int  # what `containerd config default` writes
    sections: str  # "replaced" (1.x) or "merged": how imports merge a plugin's table
    cni_bin: str  # "bin_dir" or "bin_dirs"

    @property
    def name(self) -> str:
        return ".".join(str(part) for part in self.version)


def release(version: Version) -> Release:
    for entry in datafiles.load("containerd")["releases"]:
        major, minor = (int(part) for part in entry["from"].split("."))
        if version[:2] >= (major, minor):
            return Release(
                version,
                int(entry["max_version"]),
                int(entry["default_version"]),
                entry["sections"],
                entry["cni_bin"],
            )
    raise ConfigError(
        f"containerd {'.'.join(map(str, version))} is too old: it reads no config version 2 "
        "(containerd 1.3 and later do)",
        hint="Install the distribution's current containerd, then run frakti-install again.",
    )


def config_paths(config_version: int) -> Dict[str, List[str]]:
    """Where config version N has the CRI settings (data/containerd.yaml)."""
    found: Dict[str, List[str]] = datafiles.load("containerd")["config_versions"][
        str(config_version)
    ]
    return found


def cri_names() -> List[str]:
    """Every name that turns the CRI off in disabled_plugins, in any config version."""
    versions = datafiles.load("containerd")["config_versions"].values()
    return sorted({name for paths in versions for name in paths["disabled"]})


# --- reading TOML -------------------------------------------------------------
def parse(path: str, text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except (TOMLKitError, ValueError) as error:
        raise ConfigError(
            f"{path} is not valid TOML ({error}); containerd cannot read it either",
            hint=f"Fix {path} (or move it away), then run frakti-install again.",
        ) from error


def file_version(path: str, doc: Any) -> int:
    """A config file's `version` (1 when it has none, as containerd assumes)."""
    value = doc.get("version", 1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"{path} has version = {value!r}; containerd wants a number there",
            hint=f"Write version = 2 (containerd 1.x) or 3 (2.x) at the top of {path}.",
        )
    return max(int(value), 1)


def dig(values: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return None
        values = values[key]
    return values


def put(values: Dict[str, Any], path: Sequence[str], value: Any) -> None:
    for key in path[:-1]:
        values = values.setdefault(key, {})
    values[path[-1]] = value


def merge(into: Dict[str, Any], other: Dict[str, Any]) -> Dict[str, Any]:
    """`other` over `into`, table by table (a copy)."""
    merged = copy.deepcopy(into)
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --- the main config: a targeted edit ---------------------------------------
def add_key(doc: tomlkit.TOMLDocument, key: str, value: Any, after: Optional[str]) -> None:
    """A new top-level key: after `after` when the file has it, else before its first
    key or table, below the comments that open it. (tomlkit's public append puts it
    after the last top-level statement, under a comment that may belong to a table;
    it has no public insert, hence its _insert_at/_insert_after, tested here.)"""
    if after is not None and after in doc:
        doc._insert_after(after, key, value)
        return
    first = next((i for i, (name, _) in enumerate(doc.body) if name is not None), None)
    if first is None:
        doc.append(key, value)
    else:
        doc._insert_at(first, key, value)


@dataclass(frozen=True)
class MainConfig:
    text: str  # as it is to be
    done: Tuple[str, ...]  # what changed (empty: nothing)
    config_version: int  # the version it says, which the drop-in follows
    imports: Tuple[str, ...]


def edit_main_config(
    text: Optional[str], imports_glob: str, found: Release, path: str = "config.toml"
) -> MainConfig:
    """config.toml as our drop-in needs it: a version, our glob in imports, the
    CRI enabled. Everything else keeps its bytes (tomlkit)."""
    if text is None:
        created = render(
            "containerd-config.toml.j2",
            imports_glob=imports_glob,
            version=found.default_version,
        )
        return MainConfig(created, ("create it",), found.default_version, (imports_glob,))
    doc = parse(path, text)
    version = file_version(path, doc)
    done: List[str] = []
    if version > found.max_version:
        raise ConfigError(
            f"{path} says version = {version}; containerd {found.name} reads config versions "
            f"up to {found.max_version}",
            hint=f"Write it as version {found.max_version} ('containerd config default' "
            "shows the layout), or install a containerd that reads it.",
        )
    if version == 1:
        if doc.get("plugins"):
            raise ConfigError(
                f"{path} is a version 1 config (no 'version = ...') with plugin sections; "
                "later versions name plugins differently, so it cannot simply be switched "
                "and imports would not reach the CRI plugin",
                hint=f"Add 'version = {found.default_version}' at its top and rename its plugin "
                "sections as 'containerd config default' names them, then run frakti-install "
                "again.",
            )
        version = found.default_version
        add_key(doc, "version", version, None)
        done.append(f"set version = {version}")
    imports = doc.get("imports")
    if imports is None:
        add_key(doc, "imports", [imports_glob], "version")
        done.append("add the imports line")
    elif isinstance(imports, str):
        doc["imports"] = [str(imports)] + ([imports_glob] if str(imports) != imports_glob else [])
        done.append(f"make imports a list (containerd reads no single string) with {imports_glob}")
    elif not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise ConfigError(
            f"cannot read the imports of {path}: it is not a list of file names",
            hint=f'Make it a list, e.g. imports = ["{imports_glob}"].',
        )
    elif imports_glob not in imports:
        imports.append(imports_glob)
        done.append(f"append {imports_glob} to imports")
    disabled = doc.get("disabled_plugins")
    if isinstance(disabled, list):
        names = cri_names()
        off = [str(name) for name in disabled if name in names]
        for index in reversed(range(len(disabled))):
            if disabled[index] in names:
                del disabled[index]
        if off:
            done.append(f"enable the CRI plugin (remove {', '.join(off)} from disabled_plugins)")
    return MainConfig(
        doc.as_string(), tuple(done), version, tuple(str(i) for i in doc.get("imports", []))
    )


# --- the drop-in ------------------------------------------------------------
def cri_settings(doc: Any, config_version: int) -> Dict[str, Any]:
    """The CRI plugin tables a file sets (as tables, dotted keys or inline tables),
    as plain values: the drop-in writes them as tables of its own."""
    values = doc.unwrap() if isinstance(doc, tomlkit.TOMLDocument) else doc
    plugins = values.get("plugins") if isinstance(values, dict) else None
    if not isinstance(plugins, dict):
        return {}
    names = config_paths(config_version)["plugins"]
    return {name: plugins[name] for name in names if name in plugins}


def our_settings(ctx: Context, found: Release, config_version: int) -> Dict[str, Any]:
    """Our CRI settings at that config version's paths."""
    c = ctx.runtime.data["containerd"]
    k = ctx.runtime.data["kata"]
    paths = config_paths(config_version)
    ours: Dict[str, Any] = {}
    put(ours, paths["sandbox_image"], c["sandbox_image"])
    cni_bin = [c["cni_bin_dir"]] if found.cni_bin == "bin_dirs" else c["cni_bin_dir"]
    put(ours, [*paths["cni"], found.cni_bin], cni_bin)
    put(ours, [*paths["cni"], "conf_dir"], c["cni_conf_dir"])
    put(ours, paths["default_runtime"], "runc")
    runtimes = paths["runtimes"]
    systemd = ctx.runtime.cgroup_driver(ctx) == "systemd"
    put(ours, [*runtimes, "runc", "runtime_type"], "io.containerd.runc.v2")
    put(ours, [*runtimes, "runc", "options", "SystemdCgroup"], systemd)
    kata = {
        "runtime_type": "io.containerd.kata.v2",
        "privileged_without_host_devices": True,
        "pod_annotations": ["io.katacontainers.*"],
        "options": {"ConfigPath": k["config_path"]},
    }
    put(ours, [*runtimes, k["handler"]], kata)
    return ours


def import_files(ctx: Context, imports: Sequence[str], config_path: str) -> List[str]:
    """The files containerd reads after the main config, in its order (globs sorted)."""
    base = os.path.dirname(config_path)
    ordered: List[str] = []
    for pattern in imports:
        pattern = pattern if pattern.startswith("/") else f"{base}/{pattern}"
        directory, name = os.path.split(pattern)
        if "*" in name:
            matches = [
                f"{directory}/{entry}"
                for entry in ctx.host.listdir(directory)
                if fnmatch.fnmatchcase(entry, name)
            ]
        else:
            matches = [pattern] if ctx.host.exists(pattern) else []
        ordered += [path for path in sorted(matches) if path not in ordered]
    return ordered


def drop_in_content(ctx: Context, main: MainConfig, found: Release) -> Tuple[str, Optional[str]]:
    """The drop-in, and the file whose CRI settings it repeats (if any)."""
    c = ctx.runtime.data["containerd"]
    version = main.config_version
    ours = c["drop_in"]
    files = import_files(ctx, main.imports, c["config"])
    source: Optional[str] = None
    carried: Dict[str, Any] = {}
    if found.sections == "replaced":
        position = files.index(ours) if ours in files else len(files)
        read = [(c["config"], main.text)] + [(f, ctx.host.read_text(f) or "") for f in files]
        later = [path for path, text in read if path in files[position + 1 :]]
        later = [path for path in later if cri_settings(parse(path, dict(read)[path]), version)]
        if later:
            raise ConfigError(
                f"{', '.join(later)} sets the CRI plugin and is read after {ours}: containerd "
                f"{found.name} would then drop the kata runtime (a plugin's table is replaced "
                "as a whole)",
                hint=f"Rename it to sort before {os.path.basename(ours)}; frakti-install carries "
                "its CRI settings over into its drop-in.",
            )
        for path, text in read:
            settings = cri_settings(parse(path, text), version) if path != ours else {}
            if settings:
                source, carried = path, settings
    body = merge({"plugins": carried}, our_settings(ctx, found, version))
    doc = tomlkit.document()
    doc.append("version", version)
    doc.update(body)
    content = render(
        "containerd-kata.toml.j2",
        main_config=c["config"],
        carried_from=source or "",
        config_version=version,
        body=tomlkit.dumps(doc).strip(),
    )
    return content, source


# --- what containerd actually sees ------------------------------------------
def effective_config_problems(ctx: Context) -> List[str]:
    """`containerd config dump` (files merged and migrated as containerd does) against
    what we want, read at the plugin paths of the version the dump is in."""
    c = ctx.runtime.data["containerd"]
    dump = ctx.facts.containerd_config(c["config"])
    if not dump.ok:
        return ["containerd cannot read its configuration: " + dump.error]
    if str(dump.version) not in datafiles.load("containerd")["config_versions"]:
        return [f"containerd's effective configuration is version {dump.version}, unknown here"]
    paths = config_paths(dump.version)
    problems = []
    handler = ctx.runtime.data["kata"]["handler"]
    kata_type = dump.get(*paths["runtimes"], handler, "runtime_type", default="")
    if kata_type != "io.containerd.kata.v2":
        problems.append(f"no {handler} runtime (io.containerd.kata.v2)")
    wanted = ctx.runtime.cgroup_driver(ctx) == "systemd"
    options = (*paths["runtimes"], "runc", "options")
    systemd = dump.get(*options, "SystemdCgroup", default=False)
    if systemd is not wanted:
        problems.append(
            f"runc has SystemdCgroup = {str(systemd).lower()}, not {str(wanted).lower()}"
        )
    disabled = set(dump.get("disabled_plugins", default=[]) or []) & set(paths["disabled"])
    if disabled:
        problems.append("the CRI plugin is disabled")
    return problems


def _digest(*contents: str) -> str:
    digest = hashlib.sha256()
    for content in contents:
        digest.update(hashlib.sha256(content.encode()).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class RestartWithConfig(Action):
    """(Re)start a unit, then record the digest of the config it started with."""

    unit: str
    record: str
    digest: str
    why: str

    def describe(self) -> str:
        return f"{self.why}: systemctl restart {self.unit}"

    def apply(self, ctx: Context) -> None:
        ctx.host.run(["systemctl", "restart", self.unit], timeout=300)
        ctx.host.write_file(self.record, (self.digest + "\n").encode(), 0o600)


@dataclass(frozen=True)
class ConfigureInstalled(Action):
    """The plan for a containerd not installed yet: what it reads is known only
    once the package is in, so the files are worked out then."""

    config: str
    drop_in: str
    unit: str

    def describe(self) -> str:
        return (
            f"once containerd is installed, write {self.config} and {self.drop_in} for the "
            f"config version it reads (containerd --version), enable and start {self.unit}"
        )

    def apply(self, ctx: Context) -> None:
        ctx.facts.invalidate()
        if ctx.facts.containerd_version() is None:
            raise FraktiInstallError(
                "containerd is still not installed, so its configuration cannot be written",
                hint="See the containerd-package step's output, then run frakti-install again.",
            )
        for action in Containerd().check(ctx).actions:
            action.apply(ctx)


def record_path(ctx: Context, unit: str) -> str:
    return f"{ctx.settings.state_dir}/{unit}.config-sha256"


# --- which containerd the chosen Kubernetes supports ----------------------------
_PACKAGE_RELEASE = re.compile(r"^(?:\d+:)?(\d+)\.(\d+)")  # [epoch:]major.minor...


def containerd_to_run(ctx: Context) -> Optional[Tuple[Tuple[int, int], str]]:
    """(major, minor) of the containerd this host will run, and where that was
    read: the installed one, else the candidate of the package the install
    would pick now (apt only); None when it cannot be told before the install."""
    installed = ctx.facts.containerd_version()
    if installed is not None:
        return installed[:2], "installed"
    name = ctx.runtime.family(ctx.profile)["containerd_packages"][0]
    candidate = ctx.packages.candidates(ctx.host, [name]).get(name)
    match = _PACKAGE_RELEASE.match(candidate or "")
    if match is None:
        return None
    return (int(match.group(1)), int(match.group(2))), f"package {name} {candidate}"


def too_old_containerd(ctx: Context) -> Optional[str]:
    """Why the containerd here is older than the chosen Kubernetes supports
    (the kubernetes.releases row's containerd_min), or None."""
    wanted = ctx.runtime.data["kubernetes"]["containerd_min"]
    found = containerd_to_run(ctx) if wanted else None
    if found is None or found[0] >= tuple(wanted):
        return None
    (major, minor), where = found
    return (
        f"containerd {major}.{minor} ({where}) is older than Kubernetes "
        f"{ctx.runtime.kubernetes_version} supports: it needs containerd "
        f"{wanted[0]}.{wanted[1]} or later (1.35 is the last minor that supports "
        "containerd 1.x)"
    )


def too_old_containerd_fix(ctx: Context) -> str:
    return (
        "Kubernetes v1.35 is the newest minor that supports this containerd "
        "(--kubernetes-version v1.35); for a newer one, first install a containerd 2.x (a "
        "newer release of the distribution, or Docker's containerd.io) and run again."
    )


CONTAINERD_VERSION = PreflightCheck(
    "ContainerdVersion", too_old_containerd, too_old_containerd_fix
)


# --- the steps ----------------------------------------------------------------
class ContainerdPackage(Step):
    name = "containerd-package"
    title = "containerd from the distribution (EL9: Docker's containerd.io)"

    def check(self, ctx: Context) -> Check:
        family = ctx.runtime.family(ctx.profile)
        names: List[str] = list(family["containerd_packages"])
        candidates = names + list(family["containerd_alternatives"])
        installed = ctx.facts.packages(ctx.profile.package_manager, tuple(candidates))
        present = [name for name in candidates if installed.get(name)]
        if present:
            return Check.ok(f"{present[0]} {installed[present[0]]} installed")
        return Check(package_actions(ctx, names))


def installed_release(ctx: Context) -> Optional[Release]:
    """What the installed containerd reads; None when none is installed."""
    version = ctx.facts.containerd_version()
    if version is not None:
        return release(version)
    if ctx.host.which("containerd"):
        raise ConfigError(
            "cannot tell which containerd is installed: 'containerd --version' printed no "
            "release",
            hint="Check that 'containerd --version' works, then run frakti-install again.",
        )
    return None


class Containerd(Step):
    name = "containerd"
    title = "containerd with the kata runtime handler"

    def check(self, ctx: Context) -> Check:
        c = ctx.runtime.data["containerd"]
        unit = c["unit"]
        found = installed_release(ctx)
        if found is None:
            return Check([ConfigureInstalled(c["config"], c["drop_in"], unit)])
        too_old = too_old_containerd(ctx)  # where preflight could not tell (no candidate)
        if too_old:
            raise ConfigError(too_old, hint=too_old_containerd_fix(ctx))
        current = ctx.host.read_text(c["config"])
        main = edit_main_config(current, c["imports"], found, c["config"])
        actions: List[Action] = []
        if current is None:
            actions.append(WriteFile(c["config"], main.text, 0o644, "create"))
        elif main.done:
            actions.append(EditFile(c["config"], main.text, "; ".join(main.done)))
        content, carried_from = drop_in_content(ctx, main, found)
        actions += file_actions(ctx, c["drop_in"], content, 0o644)
        # a file put back that someone else changed (and maybe restarted
        # containerd with) is read only by a restart, whatever the record says
        rewrites = bool(actions)
        state = ctx.facts.unit(unit)
        if not state.is_enabled:
            actions.append(Systemctl("enable", unit, f"enable {unit} at boot"))
        digest = _digest(main.text, content)
        recorded = (ctx.host.read_text(record_path(ctx, unit)) or "").strip()
        if recorded != digest or rewrites:
            why = "start containerd with this configuration"
            if state.active:
                why = "restart containerd (its configuration changed)"
            actions.append(RestartWithConfig(unit, record_path(ctx, unit), digest, why))
        elif not state.active:
            actions.append(Systemctl("start", unit, f"start {unit}"))
        if actions:
            return Check(actions)
        problems = effective_config_problems(ctx)
        if problems:
            raise VerifyFailed(
                "containerd's effective configuration is not as wanted: " + "; ".join(problems),
                hint="See 'containerd config dump'; another file under /etc/containerd may "
                "override frakti-install's drop-in.",
            )
        kept = f"; CRI settings of {carried_from} carried over" if carried_from else ""
        return Check.ok(
            f"containerd {found.name} (config version {main.config_version}) runs with runc "
            f"(default, SystemdCgroup = "
            f"{str(ctx.runtime.cgroup_driver(ctx) == 'systemd').lower()}) and "
            f"{ctx.runtime.data['kata']['handler']} "
            f"(io.containerd.kata.v2) from {c['drop_in']}{kept}"
        )

    def verify(self, ctx: Context) -> None:
        socket = ctx.runtime.cri_socket

        def answers() -> bool:
            if not ctx.host.exists(socket):
                return False
            return ctx.facts.runs(("ctr", "--address", socket, "version"))[0]

        wait_for(answers, f"containerd does not answer on {socket} (ctr version)", 60, ctx)
        super().verify(ctx)


class ContainerdProxy(Proxy):
    """HTTP(S)_PROXY for containerd (image pulls) and kubelet."""

    title = "Proxy settings for containerd and kubelet"
    units = ("containerd.service", "kubelet.service")
