"""The compatibility table (data/versions.yaml): version sets and the rules they obey."""

from __future__ import annotations

import datetime
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

from frakti_install import datafiles
from frakti_install.errors import ConfigError, IncompatibleVersions


@dataclass(frozen=True)
class VersionSet:
    frakti: str
    kubernetes: str
    cri: str
    hyperd: str
    crictl: str
    cni_plugins: str

    def as_dict(self) -> Dict[str, str]:
        return asdict(self)


def parse(version: str) -> Tuple[int, ...]:
    """'v1.12.10' -> (1, 12, 10); suffixes such as '-beta.2' are ignored."""
    core = version.lstrip("v").split("-")[0]
    try:
        return tuple(int(part) for part in core.split("."))
    except ValueError:
        raise ConfigError(
            f"{version!r} is not a version number", hint="Write it like v1.12.10 or 1.1.0."
        ) from None


def _minor(version: str) -> Tuple[int, ...]:
    return parse(version)[:2]


def default_set_name() -> str:
    return str(datafiles.load("versions")["default"])


def known_sets() -> Dict[str, Dict[str, str]]:
    return dict(datafiles.load("versions")["sets"])


def resolve(set_name: Optional[str] = None, **overrides: Optional[str]) -> VersionSet:
    """Pick a version set, apply single-version overrides, then check the rules."""
    name = set_name or default_set_name()
    sets = known_sets()
    removed = datafiles.load("versions").get("removed", {})
    if name not in sets and name in removed:
        raise ConfigError(
            f"version set {name!r} was removed: {removed[name]}.",
            hint="Known sets: " + ", ".join(sorted(sets)) + ".",
        )
    if name not in sets:
        raise ConfigError(
            f"unknown version set {name!r}", hint="Known sets: " + ", ".join(sorted(sets)) + "."
        )
    values = dict(sets[name])
    for key, value in overrides.items():
        if value and len(parse(value)) < 3:  # a minor: this profile keeps no table of patches
            raise ConfigError(
                f"--{key}-version {value!r} is a minor, not a release: the frakti profile installs "
                "an exact release",
                hint=f"Give the whole release, like {sets[name][key]}.",
            )
    values.update({key: value for key, value in overrides.items() if value})
    chosen = VersionSet(**values)
    check_compatible(chosen)
    return chosen


def check_compatible(versions: VersionSet) -> None:
    rules = datafiles.load("versions")["rules"]
    frakti, kube, hyperd = (
        parse(versions.frakti),
        parse(versions.kubernetes),
        parse(versions.hyperd),
    )

    if kube[:2] >= parse(rules["kubernetes_below"]):
        raise IncompatibleVersions(
            f"Kubernetes {versions.kubernetes} speaks only CRI v1; no frakti release supports it.",
            hint=f"Use Kubernetes below {rules['kubernetes_below']} (for example the default set).",
        )
    same_minor_from = parse(rules["frakti_matches_kubernetes_minor_from"])
    if frakti[:2] >= same_minor_from and frakti[:2] != kube[:2]:
        raise IncompatibleVersions(
            f"frakti {versions.frakti} works with Kubernetes {frakti[0]}.{frakti[1]}.x only, "
            f"not {versions.kubernetes}.",
            hint="Pick matching minors, or a version set with --version-set.",
        )
    for rule in rules["hyperd_for_frakti"]:
        low = parse(rule["frakti_from"])
        high = parse(rule["frakti_below"]) if "frakti_below" in rule else None
        if frakti[:2] < low or (high is not None and frakti[:2] >= high):
            continue
        if not parse(rule["hyperd_from"]) <= hyperd < parse(rule["hyperd_below"]):
            raise IncompatibleVersions(
                f"frakti {versions.frakti} needs hyperd >= {rule['hyperd_from']} and "
                f"< {rule['hyperd_below']}; {versions.hyperd} was asked for "
                "(the wire format differs: 'proto: bad wiretype' errors).",
                hint="Use the hyperd version of the frakti's version set.",
            )
        return
    raise IncompatibleVersions(
        f"frakti {versions.frakti} is not in the compatibility table.",
        hint="Known sets: " + ", ".join(sorted(known_sets())) + ".",
    )


# --- Kubernetes minors with their end of life (the kata profile's table) -------
@dataclass(frozen=True)
class KubernetesRelease:
    """A row of kata.yaml's kubernetes.releases: a minor, its latest known patch, its EOL."""

    minor: str  # v1.35
    latest: str  # v1.35.9
    eol: datetime.date
    source: str
    cgroup_v1_refused: bool = False  # its kubelet exits on a cgroup v1 host (failCgroupV1)
    containerd_min: Optional[Tuple[int, int]] = None  # the oldest containerd it supports

    def supported_on(self, day: datetime.date) -> bool:
        """Upstream supports it until the day before its end-of-life date."""
        return day < self.eol


def today() -> datetime.date:
    """The host's date, which end of life is judged by (tests pass their own day)."""
    return datetime.date.today()


def kubernetes_releases(table: Dict[str, Any]) -> List[KubernetesRelease]:
    """The rows of a profile's kubernetes.releases, newest first as written."""
    return [
        KubernetesRelease(
            minor=str(row["minor"]),
            latest=str(row["latest"]),
            eol=datetime.date.fromisoformat(str(row["eol"])),
            source=str(row["source"]),
            cgroup_v1_refused=row.get("cgroup_v1") == "refused",
            containerd_min=_major_minor(row["containerd_min"]) if "containerd_min" in row else None,
        )
        for row in table["releases"]
    ]


_MINOR = re.compile(r"^v?(\d+)\.(\d+)$")


def _major_minor(text: object) -> Tuple[int, int]:
    major, minor = str(text).split(".")
    return int(major), int(minor)
_PATCH = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


def resolve_kubernetes(
    requested: str,
    releases: List[KubernetesRelease],
    *,
    day: datetime.date,
    allow_eol: bool,
) -> Tuple[str, KubernetesRelease]:
    """'v1.35' -> its latest patch; 'v1.35.4' -> itself if the table knows it as
    released; refuses an unknown minor, an unknown patch and (unless allow_eol)
    a minor whose end of life is `day` or earlier. Returns (patch, its row)."""
    minor_match, patch_match = _MINOR.match(requested), _PATCH.match(requested)
    known = ", ".join(r.minor for r in releases)
    if not minor_match and not patch_match:
        raise ConfigError(
            f"kubernetes_version {requested!r} is neither a minor nor a patch release",
            hint=f"Write a minor such as {releases[0].minor} (its latest patch) or a patch such "
            f"as {releases[0].latest}. Known minors: {known}.",
        )
    match = minor_match or patch_match
    assert match is not None
    minor = f"v{match.group(1)}.{match.group(2)}"
    row = next((r for r in releases if r.minor == minor), None)
    if row is None:
        raise ConfigError(
            f"Kubernetes {minor} is not in the kata profile's release table (known: {known})",
            hint="Pick a known minor; a new minor is a row in kata.yaml's kubernetes.releases.",
        )
    patch = row.latest
    if patch_match:
        patch = f"{minor}.{patch_match.group(3)}"
        if parse(patch) > parse(row.latest):
            raise ConfigError(
                f"Kubernetes {patch} is not a released patch the table knows: the latest "
                f"{minor} patch it knows is {row.latest}",
                hint=f"Use {minor} (installs {row.latest}) or a patch up to {row.latest}.",
            )
    if not row.supported_on(day) and not allow_eol:
        supported = [r.minor for r in releases if r.supported_on(day)]
        raise ConfigError(
            f"Kubernetes {minor} reached its end of life on {row.eol.isoformat()} "
            "(no more security fixes upstream)",
            hint=(
                f"Pick a supported minor ({', '.join(supported)}) with --kubernetes-version, "
                if supported
                else "No minor in this frakti-install's table is supported any more: update "
                "frakti-install, "
            )
            + "or pass --allow-eol (allow_eol: true) to install it anyway.",
        )
    return patch, row


def release_rows(table: Dict[str, Any], day: datetime.date) -> List[Dict[str, Any]]:
    """The kata profile's Kubernetes table as `info` shows it (data file kata.yaml)."""
    default = str(table["versions"]["kubernetes"])
    return [
        {
            "minor": row.minor,
            "latest_patch": row.latest,
            "eol": row.eol.isoformat(),
            "status": "supported" if row.supported_on(day) else "end of life",
            "default": row.minor == default,
            "source": row.source,
        }
        for row in kubernetes_releases(table["kubernetes"])
    ]
