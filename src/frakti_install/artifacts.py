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
from frakti_install.versions import parse as parse_version

if TYPE_CHECKING:
    from frakti_install.download import Digest, Downloader

log = logging.getLogger("frakti_install.artifacts")

RPM_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class Artifact:
    name: str
    kind: str
    url: str
    identity: str  # the URL without its base: the same file from any mirror
    # "published" | "given" | "fingerprint" (a signing key) | "pinned" (a
    # sha256 in the data file); "given" too for a release whose upstream
    # publishes no sha256/sha512 (hash_files: none) or whose file has no pin
    checksum: str
    hash_url: Optional[str]  # the published hash file of this release
    hash_algorithm: Optional[str]  # its digest: "sha256" | "sha512"
    hash_source: str  # which upstream fact says so (hash_files ... source)
    given_sha256: Optional[str]
    unverified_ok: bool
    pinned_sha256: Optional[str] = None  # checksum "pinned": the data file's sum of this file

    @property
    def filename(self) -> str:
        return self.identity.rsplit("/", 1)[-1]

    @property
    def sha256_url(self) -> Optional[str]:
        return self.hash_url if self.hash_algorithm == "sha256" else None

    def verified_with(self) -> str:
        """Which hash, from where, this artifact is checked with (plan, info)."""
        if self.given_sha256:
            return "sha256 given in checksums"
        if self.checksum == "pinned":
            return f"sha256 pinned in the data file ({self.hash_source})"
        if self.checksum == "published" and self.hash_url:
            return f"{self.hash_algorithm} from {self.hash_url}; {self.hash_source}"
        if self.checksum == "fingerprint":
            return "signing key fingerprint"
        if self.unverified_ok:
            return "UNVERIFIED (--allow-unverified)"
        why = f"; {self.hash_source}" if self.hash_source else ""
        return f"sha256 to be given (upstream publishes none{why})"


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
        self._sums: Dict[str, Digest] = {}
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
        checksum, hash_url, algorithm, source = self._published(entry, url)
        pinned = None
        if checksum == "pinned":
            pinned = entry.get("pinned", {}).get(identity.rsplit("/", 1)[-1])
            checksum, source = (
                ("pinned", str(entry.get("pinned_source", "")))
                if pinned
                else ("given", "no sha256 pinned for this release and arch")
            )
        if entry["sha256"] == "fingerprint":
            # Trusting other keys makes it another artifact: the keyring is installed again.
            identity += "#trust=" + ",".join(sorted(self.fingerprints(name)))
        return Artifact(
            name=name,
            kind=entry["kind"],
            url=url,
            identity=identity,
            checksum=checksum,
            hash_url=hash_url,
            hash_algorithm=algorithm,
            hash_source=source,
            given_sha256=self._settings.checksums.get(name),
            unverified_ok=name in self._settings.allow_unverified,
            pinned_sha256=pinned,
        )

    def _published(
        self, entry: Dict[str, Any], url: str
    ) -> Tuple[str, Optional[str], Optional[str], str]:
        """(checksum, hash file URL, its algorithm, source) for this release."""
        checksum = str(entry["sha256"])
        if checksum != "published":
            return checksum, None, None, ""
        if "sha256_url" in entry:  # a .sha256 beside the file for every release
            return checksum, entry["sha256_url"].format(url=url), "sha256", "published beside it"
        table = self._table()["hash_files"][entry["hash_files"]]
        release = parse_version(self._values[table["version"]])
        for row in table["ranges"]:
            if release >= parse_version(row["from"]):
                if row["algorithm"] == "none":
                    return "given", None, None, row["source"]
                return checksum, row["url"].format(url=url), row["algorithm"], row["source"]
        first = table["ranges"][-1]["from"]
        return "given", None, None, f"no hash file is known before {first}"

    def require_checksum_source(self, name: str) -> None:
        """Fail before any change when an artifact's checksum cannot be known."""
        artifact = self.get(name)
        if (
            artifact.checksum == "given"
            and not artifact.given_sha256
            and not artifact.unverified_ok
        ):
            why = f" ({artifact.hash_source})" if artifact.hash_source else ""
            raise MissingChecksum(
                f"upstream publishes no sha256 or sha512 for {name} ({artifact.url}){why}, "
                "and none was given.",
                hint=f"Give it with --checksum {name}=SHA256 (or checksums: in the config file); "
                f"only if you accept an unverified download, --allow-unverified {name}.",
            )

    def expected(self, name: str) -> Optional[Digest]:
        """The expected sum and its algorithm: the given sha256, else the published
        hash of this release; None only for an explicitly allowed unverified download."""
        from frakti_install.download import Digest, parse_sum_file

        if name in self._sums:
            return self._sums[name]
        artifact = self.get(name)
        self.require_checksum_source(name)
        if artifact.checksum == "fingerprint" and not artifact.given_sha256:
            return None  # fetched as is; the key's fingerprint is checked before use
        value: Optional[Digest]
        if artifact.given_sha256:
            value = Digest.of(artifact.given_sha256)
        elif artifact.pinned_sha256:
            value = Digest.of(artifact.pinned_sha256)
        elif artifact.checksum == "published" and artifact.hash_url and artifact.hash_algorithm:
            text = self.downloader().fetch_text(artifact.hash_url)
            algorithm = artifact.hash_algorithm
            value = Digest(algorithm, parse_sum_file(text, artifact.filename, algorithm))
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

    def sha256(self, name: str) -> Optional[str]:
        """The expected sha256 when it is known before the download (given or a
        published .sha256); None otherwise (a sha512, or unverified)."""
        value = self.expected(name)
        return value.hexdigest if value is not None and value.algorithm == "sha256" else None

    def fetch(self, name: str) -> Path:
        """Download (or take from the cache) and verify; returns the local file,
        which the cache names by its sha256 whatever digest verified it."""
        artifact = self.get(name)
        expected = self.expected(name)
        if expected is None:
            return self.downloader().fetch_unverified(artifact.url)
        if expected.algorithm == "sha256":  # a plain sum: what every downloader takes
            return self.downloader().fetch(artifact.url, expected.hexdigest)
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
