"""Package managers: one small class per manager, chosen by the profile's data."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from frakti_install import datafiles, probes
from frakti_install.host import Host, PackageGuard


class PackageManager:
    """How to ask what is installed and how to install, for one manager."""

    name = ""
    env: Dict[str, str] = {}

    def guard(self, wait: float) -> PackageGuard:
        """Its commands wait for its locks (data/package_locks.yaml) and run to the end."""
        data = datafiles.load("package_locks")["managers"][self.name]
        option = data.get("wait_option")
        return PackageGuard(
            commands=frozenset(data["commands"]),
            lock_files=tuple(data["lock_files"]),
            wait=wait,
            wait_option=(option["command"], tuple(option["argv"])) if option else None,
        )

    def installed(self, host: Host, names: Sequence[str]) -> Dict[str, Optional[str]]:
        """name -> installed version, or None when absent. One command for all names."""
        raise NotImplementedError

    def install_argv(self, names: Sequence[str]) -> List[str]:
        raise NotImplementedError

    def install_files_argv(self, paths: Sequence[str]) -> List[str]:
        raise NotImplementedError

    def remove_argv(self, names: Sequence[str]) -> List[str]:
        raise NotImplementedError

    def missing_candidates(self, host: Host, names: Sequence[str]) -> List[str]:
        """Names the configured repositories do not offer (so an index refresh is needed)."""
        return []

    def candidates(self, host: Host, names: Sequence[str]) -> Dict[str, Optional[str]]:
        """name -> the version an install would pick from the configured repositories
        now; None where unknown (not offered, or a manager that cannot tell cheaply)."""
        return {name: None for name in names}

    def refresh_argv(self) -> Optional[List[str]]:
        return None

    def repair_argv(self, host: Host) -> Optional[List[str]]:
        """A command that finishes an interrupted earlier install, when one is needed."""
        return None


class Apt(PackageManager):
    name = "apt"
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    # Keep our /etc/hyper/config when the hypercontainer package is upgraded.
    _dpkg_opts = ["-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Options::=--force-confdef"]

    def installed(self, host: Host, names: Sequence[str]) -> Dict[str, Optional[str]]:
        found: Dict[str, Optional[str]] = {name: None for name in names}
        if not names:
            return found
        result = host.run(
            ["dpkg-query", "-W", "-f=${Package}\t${db:Status-Abbrev}\t${Version}\n", *names],
            check=False,
        )
        installed = probes.parse_dpkg_query(result.stdout)
        return {name: installed.get(name) for name in names}

    def install_argv(self, names: Sequence[str]) -> List[str]:
        return ["apt-get", "install", "-y", "--no-install-recommends", *self._dpkg_opts, *names]

    def install_files_argv(self, paths: Sequence[str]) -> List[str]:
        return ["apt-get", "install", "-y", "--no-install-recommends", *self._dpkg_opts, *paths]

    def remove_argv(self, names: Sequence[str]) -> List[str]:
        return ["apt-get", "purge", "-y", "--autoremove", *names]

    def missing_candidates(self, host: Host, names: Sequence[str]) -> List[str]:
        candidates = self.candidates(host, names)
        return [name for name in names if candidates[name] is None]

    def candidates(self, host: Host, names: Sequence[str]) -> Dict[str, Optional[str]]:
        if not names:
            return {}
        result = host.run(["apt-cache", "policy", *names], check=False)
        found = probes.parse_apt_candidates(result.stdout)
        return {name: found.get(name) for name in names}

    def refresh_argv(self) -> Optional[List[str]]:
        return ["apt-get", "update"]

    def repair_argv(self, host: Host) -> Optional[List[str]]:
        # dpkg leaves files here when it was killed half-way through.
        if host.listdir("/var/lib/dpkg/updates"):
            return ["dpkg", "--configure", "-a"]
        return None


class Yum(PackageManager):
    name = command = "yum"

    def installed(self, host: Host, names: Sequence[str]) -> Dict[str, Optional[str]]:
        found: Dict[str, Optional[str]] = {name: None for name in names}
        if not names:
            return found
        result = host.run(
            ["rpm", "-q", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n", *names], check=False
        )
        installed = probes.parse_rpm_query(result.stdout)
        return {name: installed.get(name) for name in names}

    def install_argv(self, names: Sequence[str]) -> List[str]:
        return [self.command, "install", "-y", *names]

    def install_files_argv(self, paths: Sequence[str]) -> List[str]:
        return [self.command, "install", "-y", *paths]

    def remove_argv(self, names: Sequence[str]) -> List[str]:
        return [self.command, "remove", "-y", *names]

    def repair_argv(self, host: Host) -> Optional[List[str]]:
        if self.command == "yum" and host.which("yum-complete-transaction"):
            return ["yum-complete-transaction", "-y", "--cleanup-only"]
        return None


class Dnf(Yum):
    name = command = "dnf"


MANAGERS = {"apt": Apt, "yum": Yum, "dnf": Dnf}


def manager(name: str) -> PackageManager:
    return MANAGERS[name]()
