"""Everything a step may look at: the host, its facts, the settings and the
data derived from them. Built once per run; nothing global."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from frakti_install.artifacts import Artifacts, InstalledRecord
from frakti_install.config import Settings
from frakti_install.facts import Facts
from frakti_install.host import Host
from frakti_install.packages import PackageManager, manager
from frakti_install.profiles import Profile, profile_for
from frakti_install.state import Journal
from frakti_install.versions import VersionSet

if TYPE_CHECKING:
    from frakti_install.download import Downloader

ADMIN_CONF = "/etc/kubernetes/admin.conf"


def _default_downloader_factory(settings: Settings) -> Callable[[], Downloader]:
    def make() -> Downloader:
        from frakti_install.download import Downloader

        return Downloader(Path(settings.cache_dir))

    return make


@dataclass
class Context:
    host: Host
    settings: Settings
    journal: Journal = field(default_factory=lambda: Journal(None))
    downloader_factory: Optional[Callable[[], Downloader]] = None
    facts: Facts = field(init=False)

    def __post_init__(self) -> None:
        self.facts = Facts(self.host)

    @functools.cached_property
    def profile(self) -> Profile:
        return profile_for(self.facts.os())

    @functools.cached_property
    def versions(self) -> VersionSet:
        return self.settings.versions

    @functools.cached_property
    def packages(self) -> PackageManager:
        return manager(self.profile.package_manager)

    @functools.cached_property
    def artifacts(self) -> Artifacts:
        factory = self.downloader_factory or _default_downloader_factory(self.settings)
        return Artifacts(
            self.settings, self.versions, self.facts.arch(), self.profile.package_format, factory
        )

    @functools.cached_property
    def installed(self) -> InstalledRecord:
        return InstalledRecord(self.host, self.settings.state_dir)

    def cgroup_driver(self) -> str:
        """The driver frakti and kubelet must both use: docker's, unless set."""
        if self.settings.cgroup_driver != "auto":
            return self.settings.cgroup_driver
        detected = self.facts.docker_cgroup_driver() or self.facts.docker_configured_cgroup_driver()
        if detected:
            return detected
        # docker's own default before it runs: systemd on cgroup v2, cgroupfs on v1
        return "systemd" if self.facts.cgroup_version() == 2 else "cgroupfs"
