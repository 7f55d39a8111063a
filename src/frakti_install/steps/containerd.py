"""containerd for the kata profile: the distro package, our settings in a
drop-in, and the main config.toml touched only where the drop-in needs it.

- /etc/containerd/conf.d/90-frakti-install.toml (ours, rewritten each run):
  the kata handler (io.containerd.kata.v2) next to runc, which stays the
  default; runc's SystemdCgroup matching kubelet's cgroup driver.
- /etc/containerd/config.toml (the user's): created minimal when missing;
  otherwise a targeted edit, backed up by the host: `version = 2`, our glob
  in `imports`, and "cri" out of `disabled_plugins` (Docker's containerd.io
  disables it; an import cannot turn it back on: lists are appended).
- containerd 1.x replaces a plugin's whole section with the last file that
  sets it (containerd issue #5837, fixed only in 2.0), so a drop-in that
  sets the CRI plugin would silently drop the user's CRI settings (registry
  mirrors, ...). The drop-in therefore repeats the CRI tables of the file
  that set them last, merged key by key with ours.
- containerd restarts only when the files it reads differ from the ones it
  was last (re)started with (a digest in the state directory), so a run
  killed between writing and restarting still restarts on the next run.

The TOML handling is line-based on purpose (toml_text): the user's file
keeps its bytes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from frakti_install.actions import EditFile, Systemctl, WriteFile
from frakti_install.engine import Action, Check, Step
from frakti_install.errors import ConfigError, VerifyFailed
from frakti_install.render import render
from frakti_install.steps.common import file_actions, package_actions, wait_for
from frakti_install.steps.proxy import Proxy
from frakti_install.toml_text import TomlItem, flatten, scalar, scan_toml, string_list, toml_header

if TYPE_CHECKING:
    from frakti_install.context import Context

CRI = ("plugins", "io.containerd.grpc.v1.cri")
CRI_NAMES = ("cri", "io.containerd.grpc.v1.cri")


# --- the main config: a targeted edit ---------------------------------------
def edit_main_config(text: Optional[str], imports_glob: str) -> Tuple[str, List[str]]:
    """config.toml as our drop-in needs it, and what changed (empty: nothing).

    Only three top-level statements are ever touched: version, imports,
    disabled_plugins. Everything else keeps its bytes."""
    if text is None:
        return render("containerd-config.toml.j2", imports_glob=imports_glob), ["create it"]
    lines, items = scan_toml(text)
    first_table = next(
        (it.start for it in items if it.kind in ("table", "array-table")), len(lines)
    )
    top = {it.path: it for it in items if it.kind == "key" and it.start < first_table}
    version_item = top.get(("version",))
    version = scalar(version_item.value) if version_item else "1"
    if version not in ("1", "2"):
        raise ConfigError(
            f"/etc/containerd/config.toml says version = {version}; the kata profile "
            "writes a version 2 drop-in (containerd 1.6/1.7 from the distribution)",
            hint="Use the distribution's containerd (1.x) with a version 2 config.",
        )
    if version == "1" and any(it.path[:1] == ("plugins",) for it in items if it.kind != "other"):
        raise ConfigError(
            "/etc/containerd/config.toml is a version 1 config (no 'version = 2') with "
            "plugin sections; version 2 names plugins differently, so it cannot simply be "
            "switched and imports would not reach the CRI plugin",
            hint="Add 'version = 2' at its top and rename its plugin sections to the full "
            'names (plugins.cri -> plugins."io.containerd.grpc.v1.cri"; see \'containerd '
            "config default'), then run frakti-install again.",
        )
    # (first line, line after the last, replacement lines), applied bottom-up
    edits: List[Tuple[int, int, List[str]]] = []
    done: List[str] = []
    new_top: List[str] = []
    if version == "1":
        if version_item:
            edits.append((version_item.start, version_item.end, ["version = 2\n"]))
        else:
            new_top.append("version = 2\n")
        done.append("set version = 2")
    imports = top.get(("imports",))
    if imports is None:
        new_top.append(f"imports = [{json.dumps(imports_glob)}]\n")
        done.append("add the imports line")
    elif imports_glob not in string_list(imports.value):
        raw = "".join(lines[imports.start : imports.end])
        if imports.strings:
            at, insert = imports.strings[-1][1], f", {json.dumps(imports_glob)}"
        else:
            at, insert = imports.open_bracket + 1, json.dumps(imports_glob)
        if at <= 0:
            raise ConfigError(
                "cannot read the imports list of /etc/containerd/config.toml",
                hint=f'Make it a list, e.g. imports = ["{imports_glob}"].',
            )
        edits.append((imports.start, imports.end, [raw[:at] + insert + raw[at:]]))
        done.append(f"append {imports_glob} to imports")
    disabled = top.get(("disabled_plugins",))
    if disabled is not None:
        names = string_list(disabled.value)
        kept = [name for name in names if name not in CRI_NAMES]
        if kept != names:
            line = "disabled_plugins = [" + ", ".join(json.dumps(n) for n in kept) + "]\n"
            edits.append((disabled.start, disabled.end, [line]))
            done.append("enable the CRI plugin (remove cri from disabled_plugins)")
    if new_top:
        if version_item:
            edits.append((version_item.end, version_item.end, new_top))
        else:
            anchor = next(
                (it.start for it in items if it.kind == "key" and it.start < first_table),
                first_table,
            )
            if anchor == len(lines) and lines and not lines[-1].endswith("\n"):
                new_top = ["\n", *new_top]
            edits.append((anchor, anchor, new_top))
    for start, end, replacement in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[start:end] = replacement
    return "".join(lines), done


# --- the drop-in ------------------------------------------------------------
@dataclass(frozen=True)
class TomlTable:
    path: Tuple[str, ...]
    header: str  # as written
    body: Tuple[str, ...]  # lines, as written
    items: Tuple[TomlItem, ...]  # the body's statements (line numbers relative to body)


def cri_tables(text: str) -> List[TomlTable]:
    """The tables of a file that configure the CRI plugin (or its sub-tables)."""
    lines, items = scan_toml(text)
    tables: List[TomlTable] = []
    current: Optional[TomlItem] = None
    body: List[TomlItem] = []

    def close(end: int) -> None:
        if current is not None and current.path[: len(CRI)] == CRI:
            shifted = tuple(
                TomlItem(it.kind, it.start - current.end, it.end - current.end, it.path, it.value)
                for it in body
            )
            tables.append(
                TomlTable(
                    current.path,
                    lines[current.start].rstrip("\n"),
                    tuple(line.rstrip("\n") for line in lines[current.end : end]),
                    shifted,
                )
            )

    for item in items:
        if item.kind in ("table", "array-table"):
            close(item.start)
            current, body = item, []
        else:
            body.append(item)
    close(len(lines))
    return tables


def sets_cri(text: str) -> bool:
    if cri_tables(text):
        return True
    # dotted keys under [plugins], or at the top level
    return any(path[: len(CRI)] == CRI for path in flatten(text))


def our_tables(
    c: Dict[str, Any], r: Dict[str, Any], systemd_cgroup: bool
) -> List[Tuple[Tuple[str, ...], List[Tuple[str, str]]]]:
    """Our CRI settings: (table path, [(key, TOML value)])."""
    runtimes = (*CRI, "containerd", "runtimes")
    return [
        (CRI, [("sandbox_image", json.dumps(c["sandbox_image"]))]),
        (
            (*CRI, "cni"),
            [
                ("bin_dir", json.dumps(c["cni_bin_dir"])),
                ("conf_dir", json.dumps(c["cni_conf_dir"])),
            ],
        ),
        ((*CRI, "containerd"), [("default_runtime_name", '"runc"')]),
        ((*runtimes, "runc"), [("runtime_type", '"io.containerd.runc.v2"')]),
        ((*runtimes, "runc", "options"), [("SystemdCgroup", json.dumps(systemd_cgroup))]),
        (
            (*runtimes, r["handler"]),
            [
                ("runtime_type", '"io.containerd.kata.v2"'),
                ("privileged_without_host_devices", "true"),
                ("pod_annotations", '["io.katacontainers.*"]'),
            ],
        ),
        ((*runtimes, r["handler"], "options"), [("ConfigPath", json.dumps(r["config_path"]))]),
    ]


def drop_in_blocks(
    ours: List[Tuple[Tuple[str, ...], List[Tuple[str, str]]]], carried: List[TomlTable]
) -> List[str]:
    """The drop-in's tables: the user's CRI tables as written, then ours; where
    both have a table, one table with our keys and the user's other lines."""
    our_paths = {path for path, _ in ours}
    blocks: List[str] = []
    extra: Dict[Tuple[str, ...], List[str]] = {}
    for table in carried:
        if table.path not in our_paths:
            blocks.append("\n".join((table.header, *table.body)).rstrip())
            continue
        keys = {key for path, values in ours if path == table.path for key, _ in values}
        kept: List[str] = []
        for item in table.items:
            if item.kind == "key" and item.path[:1] and item.path[0] in keys:
                continue
            kept += table.body[item.start : item.end]
        extra[table.path] = [line for line in kept if line.strip()]
    for path, values in ours:
        lines = [toml_header(path)] + [f"  {key} = {value}" for key, value in values]
        blocks.append("\n".join(lines + extra.get(path, [])))
    return blocks


def import_files(ctx: Context, main: str, config_path: str) -> List[str]:
    """The files containerd reads after the main config, in its order (globs sorted)."""
    imports = string_list(next((v for p, v in flatten(main).items() if p == ("imports",)), "[]"))
    base = os.path.dirname(config_path)
    ordered: List[str] = []
    for pattern in imports:
        pattern = pattern if pattern.startswith("/") else f"{base}/{pattern}"
        directory, name = os.path.split(pattern)
        if any(ch in name for ch in "*?["):
            matches = [
                f"{directory}/{entry}"
                for entry in ctx.host.listdir(directory)
                if fnmatch.fnmatchcase(entry, name)
            ]
        else:
            matches = [pattern] if ctx.host.exists(pattern) else []
        ordered += [path for path in sorted(matches) if path not in ordered]
    return ordered


def drop_in_content(ctx: Context, main: str) -> Tuple[str, Optional[str]]:
    """The drop-in, and the file whose CRI settings it repeats (if any)."""
    c = ctx.runtime.data["containerd"]
    files = import_files(ctx, main, c["config"])
    ours = c["drop_in"]
    position = files.index(ours) if ours in files else len(files)
    later = [f for f in files[position + 1 :] if sets_cri(ctx.host.read_text(f) or "")]
    if later:
        raise ConfigError(
            f"{', '.join(later)} sets the CRI plugin and is read after {ours}: containerd 1.x "
            "would then drop the kata runtime (a plugin's section is replaced as a whole)",
            hint=f"Rename it to sort before {os.path.basename(ours)}; frakti-install carries "
            "its CRI settings over into its drop-in.",
        )
    source: Optional[str] = None
    carried: List[TomlTable] = []
    for path, text in [(c["config"], main)] + [(f, ctx.host.read_text(f) or "") for f in files]:
        if path != ours and sets_cri(text):
            source, carried = path, cri_tables(text)
    if source is not None and not carried:
        raise ConfigError(
            f"{source} sets the CRI plugin with dotted keys outside its own tables; "
            'frakti-install can carry over only [plugins."io.containerd.grpc.v1.cri"...] tables',
            hint="Write those settings as tables, then run frakti-install again.",
        )
    systemd = ctx.runtime.cgroup_driver(ctx) == "systemd"
    content = render(
        "containerd-kata.toml.j2",
        main_config=c["config"],
        carried_from=source or "",
        blocks=drop_in_blocks(our_tables(c, ctx.runtime.data["kata"], systemd), carried),
    )
    return content, source


# --- what containerd actually sees ------------------------------------------
def effective_config_problems(ctx: Context) -> List[str]:
    """`containerd config dump` (files merged as containerd merges them) against what we want."""
    c = ctx.runtime.data["containerd"]
    dump = ctx.facts.containerd_config(c["config"])
    if not dump.ok:
        return ["containerd cannot read its configuration: " + dump.error]
    runtimes = (*CRI, "containerd", "runtimes")
    problems = []
    handler = ctx.runtime.data["kata"]["handler"]
    kata_type = dump.get(*runtimes, handler, "runtime_type", default="")
    if kata_type != "io.containerd.kata.v2":
        problems.append(f"no {handler} runtime (io.containerd.kata.v2)")
    wanted = ctx.runtime.cgroup_driver(ctx) == "systemd"
    systemd = dump.get(*runtimes, "runc", "options", "SystemdCgroup", default=False)
    if systemd is not wanted:
        problems.append(
            f"runc has SystemdCgroup = {str(systemd).lower()}, not {str(wanted).lower()}"
        )
    disabled = set(dump.get("disabled_plugins", default=[]) or []) & set(CRI_NAMES)
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


def record_path(ctx: Context, unit: str) -> str:
    return f"{ctx.settings.state_dir}/{unit}.config-sha256"


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


class Containerd(Step):
    name = "containerd"
    title = "containerd with the kata runtime handler"

    def check(self, ctx: Context) -> Check:
        c = ctx.runtime.data["containerd"]
        current = ctx.host.read_text(c["config"])
        main, done = edit_main_config(current, c["imports"])
        actions: List[Action] = []
        if current is None:
            actions.append(WriteFile(c["config"], main, 0o644, "create"))
        elif done:
            actions.append(EditFile(c["config"], main, "; ".join(done)))
        content, carried_from = drop_in_content(ctx, main)
        actions += file_actions(ctx, c["drop_in"], content, 0o644)
        unit = c["unit"]
        state = ctx.facts.unit(unit)
        if not state.is_enabled:
            actions.append(Systemctl("enable", unit, f"enable {unit} at boot"))
        digest = _digest(main, content)
        recorded = (ctx.host.read_text(record_path(ctx, unit)) or "").strip()
        if recorded != digest:
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
            f"containerd runs with runc (default, SystemdCgroup = "
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
