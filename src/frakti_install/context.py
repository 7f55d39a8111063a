"""Everything a step may look at: the host, its facts, the settings, the
runtime profile and the data derived from them. Built once per run; nothing
global."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional

from frakti_install.artifacts import Artifacts, InstalledRecord
from frakti_install.config import Settings
from frakti_install.facts import Facts
from frakti_install.host import Host
from frakti_install.packages import PackageManager, manager
from frakti_install.profiles import Profile, profile_for
from frakti_install.runtimes import Runtime, runtime_for

if TYPE_CHECKING:
    from frakti_install.download import Downloader


def default_downloader_factory(settings: Settings) -> Callable[[], Downloader]:
    def make() -> Downloader:
        from frakti_install.download import Downloader  # requests loads only when downloading

        return Downloader(Path(settings.cache_dir))

    return make


@dataclass
class Context:
    host: Host
    settings: Settings
    downloader_factory: Optional[Callable[[], Downloader]] = None
    # package name -> its file, verified: the OS packages an offline bundle carries
    package_files: Dict[str, Path] = field(default_factory=dict)
    facts: Facts = field(init=False)

    def __post_init__(self) -> None:
        self.facts = Facts(self.host)

    @functools.cached_property
    def runtime(self) -> Runtime:
        """The runtime profile the settings name (frakti, kata, ...)."""
        return runtime_for(self.settings)

    @functools.cached_property
    def profile(self) -> Profile:
        """What differs between operating systems (data/profiles.yaml)."""
        return profile_for(self.facts.os())

    @functools.cached_property
    def packages(self) -> PackageManager:
        return manager(self.profile.package_manager)

    @functools.cached_property
    def artifacts(self) -> Artifacts:
        factory = self.downloader_factory or default_downloader_factory(self.settings)
        return self.runtime.artifacts(self.facts.arch(), self.profile.package_format, factory)

    @functools.cached_property
    def installed(self) -> InstalledRecord:
        return InstalledRecord(self.host, self.settings.state_dir)
