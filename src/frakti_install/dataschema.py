"""The shapes of the YAML tables in frakti_install/data, as plain data, and their checker.

A shape is one of:

    str, bool, object       a value of that type (object: anything)
    frozenset({...})        one of these values
    (shape, shape, ...)     any one of these shapes
    [shape]                 a list of items of that shape
    {"key": shape, ...}     a table of exactly these keys ("key?": may be absent)
    {"*": shape}            a table of any names (strings), each value of that shape
    Dotted(shape, what)     a table of dotted keys into the table `shape` ("packages.cni"),
                            each value of the shape found there

A shape requires what the code indexes with [] and marks "?" what it reads
with .get(). Beyond shape, a Spec's `references` name the table some values
must be a key of ("" names nothing), and its `requires` the key a value needs
beside it. check() returns every problem as "dotted.key: what is wrong".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

Shape = Any  # one of the forms above


@dataclass(frozen=True)
class Dotted:
    table: Dict[str, Shape]
    what: str  # the table's name in messages


@dataclass(frozen=True)
class Spec:
    shape: Dict[str, Shape]
    # (values at this path, the top-level table they must be a key of)
    references: Tuple[Tuple[str, str], ...] = ()
    # (tables at this path, key, value, the key that value requires beside it)
    requires: Tuple[Tuple[str, str, str, str], ...] = ()


# --- the shapes ---------------------------------------------------------------
def _strings(keys: str) -> Dict[str, Shape]:
    """A table of these keys, each a string."""
    return {key: str for key in keys.split()}


NAMES = {"*": str}  # bases: kind -> URL
ARTIFACT = {
    "kind": str,
    "url": (str, {"deb": str, "rpm": str}),  # one URL, or one per package format
    "sha256": frozenset({"published", "given"}),
    "sha256_url?": str,  # a .sha256 published beside the file for every release
    "hash_files?": str,  # or a hash_files entry: which hash file, by release
}
VERIFY = {"image": str}  # the image of verify's pods (runtimes.base.Runtime.verify_image)
KATA_ARTIFACT = {
    **ARTIFACT,
    "sha256": frozenset({"published", "given", "fingerprint", "pinned"}),
    "fingerprints?": [str],
    "pinned?": {"*": str},  # file name -> sha256 (sha256: pinned)
    "pinned_source?": str,  # where those sums come from (plan, info)
}
KATA_LAYOUT = {  # runtimes.kata.kata_layout
    **_strings("from archive shim_target config_path"),
    "runtime": frozenset({"go", "runtime-rs"}),
    "not_installed?": str,
}
KUBERNETES_RELEASE = {  # versions.KubernetesRelease
    **_strings("minor latest eol source"),
    "cgroup_v1": frozenset({"refused", "allowed"}),
    "containerd_min?": str,  # the oldest containerd release (major.minor) it supports
}
HASH_FILES = {  # artifacts.Artifacts.published_hash
    "*": {
        "version": str,  # a key of the version set: its value picks the range
        "ranges": [
            {
                "from": str,
                "algorithm": frozenset({"sha256", "sha512", "none"}),  # none: must be given
                "url?": str,
                "source": str,
            }
        ],
    }
}
SYSTEM = {"id": str, "version": str, "match?": frozenset({"major", "suffix"})}
PUBLISHED_NEEDS_URL = ("artifacts.*", "sha256", "published", "sha256_url")

ARTIFACTS = Spec(
    {
        "bases": NAMES,
        "hash_files": HASH_FILES,
        "artifacts": {"*": ARTIFACT},
        "verify": VERIFY,
    },
    references=(("artifacts.*.kind", "bases"), ("artifacts.*.hash_files", "hash_files")),
    requires=(
        ("artifacts.*", "sha256", "published", "hash_files"),
        ("hash_files.*.ranges.*", "algorithm", "sha256", "url"),
        ("hash_files.*.ranges.*", "algorithm", "sha512", "url"),
    ),
)

KATA = Spec(
    {
        "versions": {"kubernetes": str, "kata": str},
        "bases": NAMES,
        "artifacts": {"*": KATA_ARTIFACT},
        "containerd": _strings(
            "unit socket config imports drop_in sandbox_image cni_bin_dir cni_conf_dir"
        ),
        "kata": {
            **_strings("prefix trees shim handler runtime_class modules_file"),
            "entry": _strings("shim config"),
            "overhead": {"memory": str, "cpu": str},
            "modules": [str],
            "arches": [str],
            "layouts": [KATA_LAYOUT],
            "version_args": [str],
        },
        "kubernetes": {
            "packages": [str],
            "extra_packages": [str],
            "repo_dependencies?": [{"package": str, "before": str}],
            "reviewed": str,
            "releases": [KUBERNETES_RELEASE],
        },
        "verify": VERIFY,
        "families": {
            "*": {
                "containerd_packages": [str],
                "containerd_alternatives": [str],
                "repo_packages": [str],
                "repo": _strings("path template url keyring key_artifact"),
                "package_spec": str,
                "install_options": [str],
                "files_install_options?": [str],
                "hold": frozenset({"apt-mark", "exclude"}),
            }
        },
        "systems": [SYSTEM],
    },
    references=(
        ("artifacts.*.kind", "bases"),
        ("families.*.repo.key_artifact", "artifacts"),
    ),
    requires=(
        PUBLISHED_NEEDS_URL,
        ("artifacts.*", "sha256", "fingerprint", "fingerprints"),
        ("artifacts.*", "sha256", "pinned", "pinned"),
    ),
)

FAMILY = {  # profiles.Profile's fields
    "package_manager": frozenset({"apt", "yum", "dnf"}),  # packages.MANAGERS
    "kubelet_env_file": str,
    "unit_dir": str,
    "selinux": bool,
    "package_format": frozenset({"deb", "rpm"}),
    "hyper_packages": {"hypercontainer": str, "hyperstart": str},  # artifact -> package
    "packages": {"hypervisor": [str], "docker": [str], "kube_deps": [str], "cni": [str]},
    "repos": [str],
    "cni_source": frozenset({"package", "release"}),
    "cni_bin_dir": str,
    "extra?": {"*": object},
}

PROFILES = Spec(
    {
        "families": {"*": FAMILY},
        "systems": [
            {
                **SYSTEM,
                "family": str,
                "runtimes?": [str],  # the profiles that run there (absent: every one)
                "set?": Dotted(FAMILY, "families.<family>"),
            }
        ],
        "repos": {"*": _strings("path template baseurl gpgkey")},
        "package_data_dirs": {"*": [str]},
        "runtime_dirs": [str],
    },
    references=(
        ("systems.*.family", "families"),
        ("families.*.repos.*", "repos"),
        ("systems.*.set.repos.*", "repos"),
    ),
)

VERSIONS = Spec(
    {
        "default": str,
        "sets": {"*": _strings("frakti kubernetes cri hyperd crictl cni_plugins")},
        "removed?": {"*": str},  # a set no longer offered -> why (versions.resolve says it)
        "rules": {
            "frakti_matches_kubernetes_minor_from": str,
            "hyperd_for_frakti": [
                {"frakti_from": str, "frakti_below?": str, "hyperd_from": str, "hyperd_below": str}
            ],
            "kubernetes_below": str,
        },
    },
    references=(("default", "sets"),),
)

CONTAINERD = Spec(
    {
        "releases": [
            {
                **_strings("from max_version default_version"),
                "sections": frozenset({"merged", "replaced"}),
                "cni_bin": frozenset({"bin_dir", "bin_dirs"}),
            }
        ],
        "config_versions": {
            "*": {
                "runtimes": [str],  # table keys from the top of the file
                "default_runtime": [str],
                "sandbox_image": [str],
                "cni": [str],
                "plugins": [str],
                "disabled": [str],
            }
        },
    },
    references=(("releases.*.max_version", "config_versions"),),
)

PACKAGE_LOCKS = Spec(  # packages.PackageManager.guard
    {
        "managers": {
            "*": {
                "lock_files": [str],
                "commands": [str],
                "wait_option?": {"command": str, "argv": [str]},
            }
        }
    }
)

SCHEMAS: Dict[str, Spec] = {
    "artifacts": ARTIFACTS,
    "containerd": CONTAINERD,
    "kata": KATA,
    "package_locks": PACKAGE_LOCKS,
    "profiles": PROFILES,
    "versions": VERSIONS,
}


# --- the checker ----------------------------------------------------------------
_PLAIN_KEY = re.compile(r"^[A-Za-z_][\w-]*$")
_TYPES = {str: "a string", bool: "true or false", object: "anything"}


def key_path(path: str, key: Any) -> str:
    """families.debian.repo; sets["1.12"] where a key is no plain name."""
    if isinstance(key, str) and _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]" if isinstance(key, str) else f"{path}[{key}]"


def describe(shape: Shape) -> str:
    if isinstance(shape, Dotted):
        return f"a table of dotted keys into {shape.what}"
    if isinstance(shape, frozenset):
        return "one of " + ", ".join(repr(choice) for choice in sorted(shape))
    if isinstance(shape, tuple):
        return " or ".join(describe(alternative) for alternative in shape)
    if isinstance(shape, list):
        item = shape[0]
        if item is str or isinstance(item, dict):
            return "a list of " + ("strings" if item is str else "tables")
        return f"a list of items ({describe(item)})"
    if isinstance(shape, dict):
        if "*" in shape:
            return "a table of names"
        return "a table (" + ", ".join(key for key in shape if not key.endswith("?")) + ")"
    return _TYPES.get(shape, getattr(shape, "__name__", str(shape)))


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _where(path: str) -> str:
    return path or "(top level)"


def _fields(table: Dict[str, Shape]) -> Dict[str, Tuple[Shape, bool]]:
    """Key -> (shape, required)."""
    return {key.rstrip("?"): (shape, not key.endswith("?")) for key, shape in table.items()}


def _inside(table: Shape, dotted: str) -> Optional[Shape]:
    """The shape at a dotted key of a table shape, None where there is no such key."""
    shape = table
    for part in dotted.split("."):
        if not isinstance(shape, dict):
            return None
        shape = shape["*"] if "*" in shape else _fields(shape).get(part, (None,))[0]
    return shape


def _check(shape: Shape, value: Any, path: str) -> Iterator[str]:
    mismatch = f"{_where(path)}: expected {describe(shape)}, got {_shown(value)}"
    if isinstance(shape, tuple):
        if not any(not list(_check(alternative, value, path)) for alternative in shape):
            yield mismatch
    elif isinstance(shape, frozenset):
        if isinstance(value, (list, dict)) or value not in shape:
            yield f"{_where(path)}: {_shown(value)} is not {describe(shape)}"
    elif isinstance(shape, list):
        if not isinstance(value, list):
            yield mismatch
            return
        for index, item in enumerate(value):
            yield from _check(shape[0], item, f"{path}[{index}]")
    elif isinstance(shape, (dict, Dotted)):
        if not isinstance(value, dict):
            yield mismatch
            return
        yield from _check_table(shape, value, path)
    elif shape is not object and (
        not isinstance(value, shape) or (isinstance(value, bool) and shape is not bool)
    ):
        yield mismatch


def _check_table(shape: Any, value: Dict[Any, Any], path: str) -> Iterator[str]:
    if isinstance(shape, Dotted) or "*" in shape:
        for key, item in value.items():
            where = key_path(path, key)
            if not isinstance(key, str):
                yield f"{where}: the key {key!r} is not a string (quote it)"
                continue
            inner = _inside(shape.table, key) if isinstance(shape, Dotted) else shape["*"]
            if inner is None:
                yield f"{where}: no such key in {shape.what}"
            else:
                yield from _check(inner, item, where)
        return
    fields = _fields(shape)
    for key, (inner, required) in fields.items():
        if key in value:
            yield from _check(inner, value[key], key_path(path, key))
        elif required:
            yield f"{key_path(path, key)}: missing ({describe(inner)})"
    for key in value:
        if key not in fields:
            yield f"{key_path(path, key)}: unknown key (known: {', '.join(fields)})"


def _select(value: Any, parts: List[str], path: str = "") -> Iterator[Tuple[str, Any]]:
    """(path, value) of everything at a dotted pattern; "*": every item or value."""
    if not parts:
        yield path, value
        return
    head, rest = parts[0], parts[1:]
    if head == "*" and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _select(item, rest, f"{path}[{index}]")
    elif head == "*" and isinstance(value, dict):
        for key, item in value.items():
            yield from _select(item, rest, key_path(path, key))
    elif isinstance(value, dict) and head in value:
        yield from _select(value[head], rest, key_path(path, head))


def check(spec: Spec, data: Any) -> List[str]:
    """Every problem of `data` against `spec`; empty when it is well formed."""
    found = list(_check(spec.shape, data, ""))
    if found:
        return found  # references and requirements assume the shape
    for pattern, table in spec.references:
        names = data[table]
        for where, value in _select(data, pattern.split(".")):
            if value != "" and value not in names:
                known = ", ".join(map(str, names))
                found.append(f"{where}: {value!r} is not one of {table}: {known}")
    for pattern, key, value, needed in spec.requires:
        for where, table in _select(data, pattern.split(".")):
            if table.get(key) == value and needed not in table:
                found.append(f"{key_path(where, needed)}: missing ({key}: {value} needs it)")
    return found
