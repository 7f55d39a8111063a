"""The compatibility table (data/versions.yaml): version sets and the rules they obey."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

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
