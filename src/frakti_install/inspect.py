"""`info`: what the tool sees, read-only, on any Linux (supported or not)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from frakti_install import datafiles, versions
from frakti_install.context import Context
from frakti_install.errors import FraktiInstallError
from frakti_install.runtimes import profile_fit
from frakti_install.session import os_summary

MANAGER_BINARIES = (
    ("apt-get", "apt"),
    ("dnf", "dnf"),
    ("yum", "yum"),
    ("zypper", "zypper"),
    ("pacman", "pacman"),
    ("apk", "apk"),
)


def _package_manager(ctx: Context) -> Optional[str]:
    if ctx.facts.os().supported:
        return ctx.profile.package_manager
    for binary, name in MANAGER_BINARIES:
        if ctx.facts.binary(binary):
            return name
    return None


def _versions(ctx: Context) -> Dict[str, Any]:
    try:
        return ctx.runtime.versions
    except FraktiInstallError as error:
        return {"error": error.message}


def _verification(ctx: Context) -> Dict[str, str]:
    """Artifact -> which hash, from where, it is verified with (nothing is fetched)."""
    try:
        artifacts = ctx.artifacts
        return {name: artifacts.get(name).verified_with() for name in artifacts.names()}
    except FraktiInstallError as error:
        return {"error": error.message}


def host_info(ctx: Context) -> Dict[str, Any]:
    facts = ctx.facts
    return {
        "os": os_summary(ctx),
        "arch": facts.arch(),
        "package_manager": _package_manager(ctx),
        "init_system": facts.init_system(),
        "cgroup_version": facts.cgroup_version(),
        "virtualization": {
            "cpu_flag": facts.hardware_virtualization(),
            "dev_kvm": ctx.host.exists("/dev/kvm"),
            "kvm_usable": facts.kvm_usable(),
        },
        "docker_cgroup_driver": facts.docker_cgroup_driver(),
        "swap": bool(facts.swap_devices()),
        "cpus": facts.cpu_count(),
        "memory_mb": facts.memory_mb(),
        "versions": _versions(ctx),
        "verified_with": _verification(ctx),
        "profile_fit": profile_fit(facts),
        "kata_kubernetes_releases": versions.release_rows(datafiles.load("kata"), versions.today()),
    }
