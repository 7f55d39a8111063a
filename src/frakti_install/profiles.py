"""Which systems are supported, and what differs between them (data/profiles.yaml)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from frakti_install import datafiles
from frakti_install.errors import UnsupportedOS


@dataclass(frozen=True)
class OsInfo:
    """What /etc/os-release says, plus the family when the system is supported."""

    id: str
    version: str
    pretty_name: str
    family: Optional[str]

    @property
    def supported(self) -> bool:
        return self.family is not None


@dataclass(frozen=True)
class Repo:
    name: str
    path: str
    template: str
    baseurl: str
    gpgkey: str


@dataclass(frozen=True)
class Profile:
    """Everything the steps need to know about one supported system."""

    os: OsInfo
    family: str
    package_manager: str
    kubelet_env_file: str
    unit_dir: str
    selinux: bool
    package_format: str
    hyper_packages: Dict[str, str]  # artifact name -> package name
    packages: Dict[str, List[str]]
    repos: Tuple[Repo, ...]
    cni_source: str
    cni_bin_dir: str
    extra: Dict[str, Any] = field(default_factory=dict)


def system_matches(system: Dict[str, Any], os_id: str, version: str) -> bool:
    """A row of a systems table against the host's ID and version. match: major
    takes any 9.x for "9"; match: suffix takes Debian testing/sid, which have no
    VERSION_ID (distro reads /etc/debian_version then: "forky/sid")."""
    if system["id"] != os_id:
        return False
    wanted = str(system["version"])
    if system.get("match") == "major":
        return version.split(".")[0] == wanted
    if system.get("match") == "suffix":
        return version.endswith(wanted)
    return version == wanted


def find_system(os_id: str, version: str) -> Optional[Dict[str, Any]]:
    for system in datafiles.load("profiles")["systems"]:
        if system_matches(system, os_id, version):
            return dict(system)
    return None


def supported_systems() -> List[str]:
    return [f"{s['id']} {s['version']}" for s in datafiles.load("profiles")["systems"]]


def identify(os_id: str, version: str, pretty_name: str = "") -> OsInfo:
    system = find_system(os_id, version)
    return OsInfo(
        id=os_id,
        version=version,
        pretty_name=pretty_name or f"{os_id} {version}",
        family=system["family"] if system else None,
    )


def _apply_overrides(values: Dict[str, Any], overrides: Dict[str, Any]) -> None:
    """Set dotted keys ("packages.docker") in a nested dict."""
    for dotted, value in overrides.items():
        target = values
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target[part]
        target[leaf] = value


def profile_for(os: OsInfo) -> Profile:
    system = find_system(os.id, os.version)
    if system is None:
        raise UnsupportedOS(
            f"{os.pretty_name} (ID={os.id!r}, VERSION_ID={os.version!r}) is not supported.",
            hint="Supported systems: " + ", ".join(supported_systems()) + ".",
        )
    tables = datafiles.load("profiles")
    values = copy.deepcopy(tables["families"][system["family"]])
    _apply_overrides(values, system.get("set", {}))
    repos = tuple(Repo(name=name, **tables["repos"][name]) for name in values.pop("repos"))
    return Profile(os=os, family=system["family"], repos=repos, **values)
