"""Where each artifact comes from (data/artifacts.yaml), its checksum, and
what is installed from it (a record in the state directory).

Checking "is the installed kubelet the one we want" must not touch the
network and must not hash 150 MB on every run: the record keeps, per
installed path, the artifact's identity, its sha256 and the file's stat.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from frakti_install import datafiles
from frakti_install.config import Settings, split_fingerprints
from frakti_install.errors import MissingChecksum
from frakti_install.host import Host
from frakti_install.versions import VersionSet

if TYPE_CHECKING:
    from frakti_install.download import Downloader

log = logging.getLogger("frakti_install.artifacts")

RPM_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class Artifact:
    name: str
    kind: str
    url: str
    identity: str  # the URL without its base: the same file from any mirror
    checksum: str  # "published" | "given" | "fingerprint" (a signing key)
    sha256_url: Optional[str]
    given_sha256: Optional[str]
    unverified_ok: bool

    @property
    def filename(self) -> str:
        return self.identity.rsplit("/", 1)[-1]


class Artifacts:
    """One runtime profile's artifact table (data/<table>.yaml): URLs with
    mirrors applied, the expected sums (given, or published beside the file),
    signing keys checked by fingerprint, and the verified download."""

    def __init__(
        self,
        settings: Settings,
        versions: Union[VersionSet, Mapping[str, str]],
        arch: str,
        package_format: str,
        downloader_factory: Callable[[], Downloader],
        table: str = "artifacts",
    ) -> None:
        values = versions.as_dict() if isinstance(versions, VersionSet) else dict(versions)
        self._settings = settings
        self._values = dict(values, arch=arch, rpm_arch=RPM_ARCH.get(arch, arch))
        self._format = package_format
        self._downloader_factory = downloader_factory
        self._downloader: Optional[Downloader] = None
        self._sums: Dict[str, str] = {}
        self._table_name = table

    def _table(self) -> Dict[str, Any]:
        return datafiles.load(self._table_name)

    def base_url(self, kind: str) -> str:
        """Where downloads of a kind come from: the mirror, else the table's base."""
        table = self._table()
        return str(self._settings.mirrors.get(kind, table["bases"][kind])).rstrip("/")

    def fingerprints(self, name: str) -> Tuple[str, ...]:
        """A signing key's fingerprints to trust: the user's (key_fingerprints)
        replace the table's."""
        given = self._settings.key_fingerprints.get(name)
        if given:
            return tuple(split_fingerprints(given))
        entry = self._table()["artifacts"][name]
        return tuple(str(f).upper() for f in entry.get("fingerprints", ()))

    def names(self) -> List[str]:
        return list(self._table()["artifacts"])

    def get(self, name: str) -> Artifact:
        table = self._table()
        entry = table["artifacts"][name]
        template = entry["url"][self._format] if isinstance(entry["url"], dict) else entry["url"]
        identity = template.format(base="", **self._values)
        url = self.base_url(entry["kind"]) + identity
        sha256_url = entry.get("sha256_url")
        if entry["sha256"] == "fingerprint":
            # Trusting other keys makes it another artifact: the keyring is installed again.
            identity += "#trust=" + ",".join(sorted(self.fingerprints(name)))
        return Artifact(
            name=name,
            kind=entry["kind"],
            url=url,
            identity=identity,
            checksum=entry["sha256"],
            sha256_url=sha256_url.format(url=url) if sha256_url else None,
            given_sha256=self._settings.checksums.get(name),
            unverified_ok=name in self._settings.allow_unverified,
        )

    def require_checksum_source(self, name: str) -> None:
        """Fail before any change when an artifact's checksum cannot be known."""
        artifact = self.get(name)
        if (
            artifact.checksum == "given"
            and not artifact.given_sha256
            and not artifact.unverified_ok
        ):
            raise MissingChecksum(
                f"upstream publishes no checksum for {name} ({artifact.url}), and none was given.",
                hint=f"Give it with --checksum {name}=SHA256 (or checksums: in the config file); "
                f"only if you accept an unverified download, --allow-unverified {name}.",
            )

    def sha256(self, name: str) -> Optional[str]:
        """The expected sum; None only for an explicitly allowed unverified download."""
        if name in self._sums:
            return self._sums[name]
        artifact = self.get(name)
        self.require_checksum_source(name)
        if artifact.checksum == "fingerprint" and not artifact.given_sha256:
            return None  # fetched as is; the key's fingerprint is checked before use
        if artifact.given_sha256:
            value: Optional[str] = artifact.given_sha256
        elif artifact.checksum == "published" and artifact.sha256_url:
            from frakti_install.download import parse_sha256_file

            text = self.downloader().fetch_text(artifact.sha256_url)
            value = parse_sha256_file(text, artifact.filename)
        else:
            log.warning(
                "UNVERIFIED download of %s from %s (allowed by --allow-unverified)",
                name,
                artifact.url,
            )
            value = None
        if value:
            self._sums[name] = value
        return value

    def fetch(self, name: str) -> Path:
        """Download (or take from the cache) and verify; returns the local file."""
        artifact = self.get(name)
        expected = self.sha256(name)
        if expected is None:
            return self.downloader().fetch_unverified(artifact.url)
        return self.downloader().fetch(artifact.url, expected)

    def downloader(self) -> Downloader:
        if self._downloader is None:
            self._downloader = self._downloader_factory()
        return self._downloader


@dataclass(frozen=True)
class InstalledFile:
    artifact: str
    identity: str
    sha256: str
    size: int
    mtime_ns: int
    inode: int


class InstalledRecord:
    """state_dir/installed.json: which artifact each installed path came from."""

    def __init__(self, host: Host, state_dir: str) -> None:
        self._host = host
        self._path = f"{state_dir}/installed.json"
        self._entries: Optional[Dict[str, Dict[str, Any]]] = None

    def _load(self) -> Dict[str, Dict[str, Any]]:
        if self._entries is None:
            text = self._host.read_text(self._path)
            try:
                self._entries = json.loads(text) if text else {}
            except ValueError:
                log.warning("ignoring unreadable %s", self._path)
                self._entries = {}
        return self._entries

    def matches(self, path: str, artifact: Artifact) -> bool:
        """True when `path` holds this artifact, judged without hashing or network."""
        entry = self._load().get(path)
        st = self._host.stat(path)
        if entry is None or st is None or entry.get("identity") != artifact.identity:
            return False
        if artifact.given_sha256 and artifact.given_sha256 != entry.get("sha256"):
            return False
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (
            entry.get("size"),
            entry.get("mtime_ns"),
            entry.get("inode"),
        )

    def remember(self, path: str, artifact: Artifact, sha256: str) -> None:
        st = self._host.stat(path)
        assert st is not None, path
        self._load()[path] = {
            "artifact": artifact.name,
            "identity": artifact.identity,
            "sha256": sha256,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino,
        }
        self._save()

    def forget(self, path: str) -> None:
        if self._load().pop(path, None) is not None:
            self._save()

    def paths(self) -> Dict[str, Dict[str, Any]]:
        return dict(self._load())

    def _save(self) -> None:
        content = json.dumps(self._load(), indent=1, sort_keys=True).encode()
        self._host.write_file(self._path, content, 0o600)
