"""Offline bundles: every verified artifact of an install in one file.

On a connected machine, :func:`create_bundle` fetches every artifact the
allinone plan may download (verified, through :class:`Artifacts` and its
cache) and writes one ``.tar.gz``::

    manifest.json          what is inside, and for which host (format 1)
    artifacts/<sha256>     each artifact's bytes, named by their sum
    packages/<file>        package files from a package repository (the kata
                           profile's pkgs.k8s.io .deb/.rpm), under their own names
    wheels/*.whl           frakti-install's own wheel and its dependencies

On the air-gapped host, :meth:`Bundle.open` extracts it safely (or takes an
already-extracted directory), :meth:`Bundle.check_compatible` says whether it
fits the host, :func:`apply_to_settings` adds its sums to the settings and
:meth:`Bundle.downloader` serves the files in place of the network.

OS packages of the distribution (docker, qemu, containerd...) are not in a
bundle: they come from the host's own (mirrored) OS repositories; the
manifest lists them. What differs between runtime profiles (which artifacts,
which repository packages) is the profile's (Runtime.bundle_*).

Engine code: no UI here.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union
from urllib.parse import urlsplit

from frakti_install import __version__, datafiles
from frakti_install.artifacts import Artifacts
from frakti_install.config import Settings
from frakti_install.download import Digest, Downloader
from frakti_install.errors import ChecksumMismatch, ConfigError, DownloadError
from frakti_install.fsio import CHUNK_SIZE, sha256_of, staged
from frakti_install.host import Host
from frakti_install.kubesource import download_repo_packages, require_bundle_tools
from frakti_install.profiles import identify, profile_for
from frakti_install.runtimes import Runtime, runtime_class
from frakti_install.steps.kube_packages import check_signing_key
from frakti_install.tarsafe import READ_ERRORS, data_filter_refusal, open_stream
from frakti_install.versions import VersionSet, known_sets

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "Bundle",
    "BundleDownloader",
    "apply_to_settings",
    "artifact_names",
    "create_bundle",
    "os_packages_for",
]

log = logging.getLogger("frakti_install.bundle")

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
ARTIFACT_DIR = "artifacts"
PACKAGE_DIR = "packages"
WHEEL_DIR = "wheels"
FILE_MODE = 0o644
GZIP_LEVEL = 6  # 9 costs much more time on 100s of MB of binaries for ~nothing

# package format ("deb"/"rpm", what a bundle is made for) <-> profile family
FAMILIES = {"deb": "debian", "rpm": "rhel"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CREATE_HINT = "On a connected machine: frakti-install bundle create"
DEFAULT_RUNTIME = "frakti"  # a manifest without "runtime" (the first bundles) is frakti's


# --------------------------------------------------------------------------- what goes in


def package_format(family: str) -> str:
    """'deb'/'rpm' (or the profile family 'debian'/'rhel') -> 'deb'/'rpm'."""
    value = family.strip().lower()
    if value in FAMILIES:
        return value
    for fmt, name in FAMILIES.items():
        if value == name:
            return fmt
    raise ConfigError(
        f"unknown package family {family!r}",
        hint="Use deb (Debian, Ubuntu) or rpm (CentOS, Rocky, AlmaLinux, RHEL).",
    )


def _system_profile(family: str, os_id_version: Tuple[str, str]) -> Any:
    os_id, version = os_id_version
    profile = profile_for(identify(os_id, version))
    if profile.package_format != family:
        raise ConfigError(
            f"{os_id} {version} uses {profile.package_format} packages, not {family}",
            hint=f"Use --family {profile.package_format} for it.",
        )
    return profile


def artifact_names(family: str, os_id_version: Optional[Tuple[str, str]] = None) -> List[str]:
    """Every artifact the allinone plan may download on a host of this family.

    ``family`` is a package format ("deb", "rpm") or a family ("debian", "rhel").
    With ``os_id_version`` (e.g. ("debian", "12")) the list is exact for that
    system: the CNI plugins tarball is left out where they come from an OS package.
    """
    fmt = package_format(family)
    names = list(datafiles.load("artifacts")["artifacts"])
    if os_id_version is not None:
        profile = _system_profile(fmt, os_id_version)
        if profile.cni_source != "release":
            names.remove("cni-plugins")
    return names


def os_packages_for(
    family: str, os_id_version: Optional[Tuple[str, str]] = None
) -> Dict[str, List[str]]:
    """The OS packages the plan installs from the OS repositories (not bundled).

    Without ``os_id_version``: the family's defaults (one system may differ,
    e.g. EL8/9 use docker-ce from Docker's repository).
    """
    fmt = package_format(family)
    if os_id_version is not None:
        packages = _system_profile(fmt, os_id_version).packages
    else:
        packages = datafiles.load("profiles")["families"][FAMILIES[fmt]]["packages"]
    return {group: list(names) for group, names in packages.items()}


# --------------------------------------------------------------------------- create


def _reference(
    runtime: Optional[Runtime], versions: Mapping[str, str], arch: str, fmt: str
) -> Artifacts:
    """What this frakti-install resolves each artifact to, downloading nothing."""
    if runtime is None:
        return Artifacts(Settings(), dict(versions), arch, fmt, _no_downloader)
    return runtime.artifacts(arch, fmt, _no_downloader)


def _names(runtime: Optional[Runtime], fmt: str) -> List[str]:
    return runtime.bundle_artifacts(FAMILIES[fmt]) if runtime else artifact_names(fmt)


def _version_dict(versions: Union[VersionSet, Mapping[str, str]]) -> Dict[str, str]:
    return versions.as_dict() if isinstance(versions, VersionSet) else dict(versions)


def _check_resolver(
    artifacts: Artifacts,
    fmt: str,
    arch: str,
    versions: Mapping[str, str],
    runtime: Optional[Runtime] = None,
) -> None:
    """The resolver must resolve for the family, arch and versions the manifest claims."""
    reference = _reference(runtime, versions, arch, fmt)
    for name in _names(runtime, fmt):
        got, want = artifacts.get(name).identity, reference.get(name).identity
        if got != want:
            raise ConfigError(
                f"internal: artifacts resolve {name} to {got}, but a {fmt} bundle for "
                f"{arch} with these versions needs {want}",
                hint="Build the Artifacts with the same arch, package format and versions.",
            )


def _no_downloader() -> Downloader:
    raise AssertionError("the reference resolver never downloads")


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = FILE_MODE
    return info


def create_bundle(
    output: Path,
    artifacts: Artifacts,
    *,
    family: str,
    arch: str,
    versions: Union[VersionSet, Mapping[str, str]],
    os_packages: Dict[str, List[str]],
    wheels: Sequence[Path] = (),
    runtime: Optional[Runtime] = None,
    host: Optional[Host] = None,
) -> Path:
    """Fetch (verified) every artifact and write the bundle at ``output``; returns it.

    ``artifacts`` must resolve for ``family``/``arch``/``versions`` (its mirrors,
    checksums and cache are the caller's). It carries every artifact of the
    family (whatever system of it installs), and appears atomically: a partial
    bundle is never left at ``output``.

    ``runtime``: the profile whose artifacts and repository packages it
    carries (None: frakti's table); ``host`` runs the commands that check a
    signing key and download repository packages (this machine's gpg, apt, dnf).
    """
    fmt = package_format(family)
    versions = _version_dict(versions)
    _check_resolver(artifacts, fmt, arch, versions, runtime)
    output = Path(output)

    wheel_names: Dict[str, Path] = {}
    for wheel in wheels:
        wheel = Path(wheel)
        if wheel.suffix != ".whl" or not wheel.is_file():
            raise ConfigError(f"not a wheel file: {wheel}", hint="Give .whl files only.")
        if wheel.name in wheel_names:
            raise ConfigError(f"two wheels named {wheel.name}: {wheel_names[wheel.name]}, {wheel}")
        wheel_names[wheel.name] = wheel

    repo = runtime.bundle_repo_packages(FAMILIES[fmt], fmt, arch, artifacts) if runtime else None
    if repo is not None:
        require_bundle_tools(_host(host), fmt)

    entries: Dict[str, Dict[str, str]] = {}
    files: Dict[str, Path] = {}  # arcname -> local file
    for name in _names(runtime, fmt):
        artifact = artifacts.get(name)
        if artifact.checksum == "fingerprint" and not artifact.given_sha256:
            local = _signing_key(artifacts, name, _host(host))
            expected = sha256_of(local)
        else:
            if artifacts.expected(name) is None:  # MissingChecksum when nobody can know it
                raise ConfigError(
                    f"{name} has no checksum ({artifact.url}); a bundle carries verified files "
                    "only.",
                    hint=f"Give it with --checksum {name}=SHA256 instead of --allow-unverified.",
                )
            local = artifacts.fetch(name)  # verified by whatever upstream publishes (sha512...)
            # the manifest records the sha256 of the verified file (the cache's name for it)
            expected = artifacts.sha256(name) or sha256_of(local)
        arcname = f"{ARTIFACT_DIR}/{expected}"
        entries[name] = {
            "file": arcname,
            "sha256": expected,
            "identity": artifact.identity,
            "url": artifact.url,
        }
        files[arcname] = local
        log.info("bundling %s (%s)", name, artifact.identity)

    packages: Dict[str, Dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="frakti-install-bundle-") as scratch:
        if repo is not None:
            key = files[entries[repo.key_artifact]["file"]]
            found = download_repo_packages(_host(host), repo, key, Path(scratch))
            for name, path in sorted(found.items()):
                arcname = f"{PACKAGE_DIR}/{path.name}"
                packages[name] = {"file": arcname, "sha256": sha256_of(path), "url": repo.url}
                files[arcname] = path
                log.info("bundling the package %s (%s)", name, path.name)
        manifest = _manifest(fmt, arch, versions, entries, packages, os_packages, wheel_names,
                             runtime)  # fmt: skip
        for name in sorted(wheel_names):
            files[f"{WHEEL_DIR}/{name}"] = wheel_names[name]
        _write_tarball(output, manifest, files)
    return output


def _host(host: Optional[Host]) -> Host:
    return host if host is not None else Host()


def _signing_key(artifacts: Artifacts, name: str, host: Host) -> Path:
    """The key, downloaded and checked by fingerprint and expiry as the install checks it."""
    artifact = artifacts.get(name)
    local = artifacts.downloader().fetch_unverified(artifact.url)
    with tempfile.TemporaryDirectory(prefix="frakti-install-gpg-") as home:
        check_signing_key(host, local, artifacts.fingerprints(name), artifact.url, name, home)
    return local


def _manifest(
    fmt: str,
    arch: str,
    versions: Dict[str, str],
    entries: Dict[str, Dict[str, str]],
    packages: Dict[str, Dict[str, str]],
    os_packages: Dict[str, List[str]],
    wheel_names: Dict[str, Path],
    runtime: Optional[Runtime],
) -> Dict[str, Any]:
    manifest: Dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": f"frakti-install {__version__}",
        "family": fmt,
        "arch": arch,
        "runtime": runtime.name if runtime else DEFAULT_RUNTIME,
        "versions": versions,
        "artifacts": entries,
        "packages": packages,
        "os_packages": {group: list(names) for group, names in os_packages.items()},
        "wheels": [f"{WHEEL_DIR}/{name}" for name in sorted(wheel_names)],
    }
    return manifest


def _write_tarball(output: Path, manifest: Dict[str, Any], files: Dict[str, Path]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    # written whole or not at all: a failure leaves the old bundle and no temp file
    with staged(output, FILE_MODE) as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL
    ) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        info.mtime = int(datetime.datetime.now().timestamp())
        tar.addfile(_tar_filter(info), _BytesReader(data))
        for arcname, local in files.items():
            # streamed from the file: never the whole file in memory
            tar.add(str(local), arcname=arcname, recursive=False, filter=_tar_filter)


class _BytesReader:
    """A minimal file object over bytes (tarfile.addfile only calls read)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk


# --------------------------------------------------------------------------- open


def _unsafe(name: str, why: str) -> ConfigError:
    return ConfigError(
        f"unsafe path in the bundle: {name!r}{why}",
        hint="Nothing was extracted outside it. Use a bundle made by "
        "'frakti-install bundle create' (from a source you trust).",
    )


def _member_parts(name: str) -> List[str]:
    """The path parts of an archive member or manifest path; ConfigError if unsafe."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _unsafe(name, " is absolute")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _unsafe(name, " leaves the bundle ('..')")
    if any("\0" in part for part in parts):
        raise _unsafe(name, "")
    return parts


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"a hard link to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a FIFO"
    return f"not a regular file (type {member.type!r})"


def _extract(archive: Path, target: Path) -> None:
    """Extract regular files and directories only, each checked before it is written.

    One streaming pass (gzip, xz, bzip2 or zstd, told by the first bytes): a
    bundle of any size costs no memory. A refused member stops it; the caller
    removes the partly extracted directory.
    """
    try:
        with open_stream(archive) as tar:
            for member in tar:
                parts = _member_parts(member.name)
                if not member.isdir() and not member.isfile():
                    raise ConfigError(
                        f"refusing bundle member {member.name!r}: it is {_kind(member)}",
                        hint="A bundle holds regular files only; recreate it with "
                        "'frakti-install bundle create'.",
                    )
                refusal = data_filter_refusal(member, target)  # tarfile's own check, if any
                if refusal is not None:
                    raise ConfigError(f"refusing bundle member {member.name!r}: {refusal}")
                if member.isdir():
                    target.joinpath(*parts).mkdir(parents=True, exist_ok=True)
                    continue
                if not parts:
                    raise ConfigError(f"refusing bundle member {member.name!r}: no file name")
                dest = target.joinpath(*parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has content
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                try:
                    fd = os.open(str(dest), flags, FILE_MODE)
                except FileExistsError:
                    raise ConfigError(
                        f"refusing bundle member {member.name!r}: it appears twice"
                    ) from None
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK_SIZE)
    except ConfigError:
        raise
    except READ_ERRORS as exc:
        raise ConfigError(
            f"cannot read the bundle {archive}: {exc}",
            hint="The file is damaged or not a bundle; copy it again, or recreate it with "
            "'frakti-install bundle create'.",
        ) from None


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


class Bundle:
    """An opened (extracted) bundle: its manifest and where its files are."""

    def __init__(self, source: Path, root: Path, manifest: Dict[str, Any]) -> None:
        self.source = source
        self.root = root
        self.manifest = manifest
        self._downloader: Optional[BundleDownloader] = None

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: Path, workdir: Path) -> Bundle:
        """A bundle file (extracted into a new directory under ``workdir``) or directory.

        Checks the manifest and that every file it lists is there; the files'
        sums are checked by :meth:`verify`, or each on its first use.
        """
        path = Path(path)
        if path.is_dir():
            root = path
        elif path.is_file():
            workdir = Path(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="bundle-", dir=str(workdir)))
            try:
                _extract(path, root)
            except BaseException:
                shutil.rmtree(root, ignore_errors=True)
                raise
        else:
            raise ConfigError(
                f"bundle {path} does not exist", hint="Give the bundle file or its directory."
            )
        root = _manifest_root(root, path)
        manifest = _load_manifest(root, path)
        return cls(path, root, manifest)

    # ----------------------------------------------------------------- contents

    @property
    def family(self) -> str:
        return str(self.manifest["family"])

    @property
    def arch(self) -> str:
        return str(self.manifest["arch"])

    @property
    def versions(self) -> Dict[str, str]:
        return dict(self.manifest["versions"])

    @property
    def runtime(self) -> str:
        return str(self.manifest.get("runtime", DEFAULT_RUNTIME))

    def package_files(self) -> Dict[str, Path]:
        """Package name -> its file in the bundle (for Context.package_files)."""
        return {
            name: self.root.joinpath(*_member_parts(entry["file"]))
            for name, entry in self.manifest.get("packages", {}).items()
        }

    def _entries(self) -> List[Tuple[str, Dict[str, str]]]:
        """Every file the manifest gives a sha256: artifacts, then packages."""
        return sorted(self.manifest["artifacts"].items()) + sorted(
            self.manifest.get("packages", {}).items()
        )

    @property
    def os_packages(self) -> Dict[str, List[str]]:
        return {k: list(v) for k, v in self.manifest.get("os_packages", {}).items()}

    def wheels(self) -> List[Path]:
        return [self.root / rel for rel in self.manifest.get("wheels", [])]

    def checksums(self) -> Dict[str, str]:
        """Artifact name -> sha256, for Settings.checksums."""
        return {name: entry["sha256"] for name, entry in self.manifest["artifacts"].items()}

    def path_of(self, sha256: str) -> Optional[Path]:
        for _, entry in self._entries():
            if entry["sha256"] == sha256:
                return self.root / entry["file"]
        return None

    def describe(self) -> str:
        v = self.versions
        shown = ", ".join(f"{key} {value}" for key, value in v.items() if key != "kubernetes_minor")
        return f"{self.family} packages on {self.arch}, the {self.runtime} profile: {shown}"

    # ----------------------------------------------------------------- fit

    def check_compatible(
        self,
        versions: Union[VersionSet, Mapping[str, str]],
        family: str,
        arch: str,
        runtime: Optional[Runtime] = None,
    ) -> None:
        """ConfigError listing every way the bundle does not fit this host's install.

        ``runtime``: the profile that installs (None: frakti's table, ``versions``)."""
        fmt = package_format(family)
        wanted = runtime.versions if runtime else _version_dict(versions)
        problems: List[str] = []
        profile = runtime.name if runtime else DEFAULT_RUNTIME
        if self.runtime != profile:
            problems.append(f"it was made for the {self.runtime} profile, not {profile}")
        if self.family != fmt:
            problems.append(
                f"it was made for {self.family} packages ({FAMILIES.get(self.family, '?')} "
                f"family), this host uses {fmt} packages ({FAMILIES[fmt]} family)"
            )
        if self.arch != arch:
            problems.append(f"it was made for {self.arch}, this host is {arch}")
        differing = [
            f"{key} {self.versions.get(key, '(none)')} in the bundle, {value} wanted"
            for key, value in wanted.items()
            if self.versions.get(key) != value
        ]
        if differing:
            problems.append("versions differ: " + "; ".join(differing))
        if not problems:
            # Same family, arch and versions: each artifact must be the one this
            # version of frakti-install would download (e.g. a bundle from a tool
            # version whose URL layout differs).
            reference = _reference(runtime, wanted, arch, fmt)
            artifacts = self.manifest["artifacts"]
            for name in _names(runtime, fmt):
                entry = artifacts.get(name)
                if entry is None:
                    problems.append(f"it has no {name}")
                elif entry["identity"] != reference.get(name).identity:
                    problems.append(
                        f"its {name} is {entry['identity']}, this install needs "
                        f"{reference.get(name).identity}"
                    )
        if not problems and runtime is not None:
            carried = set(self.manifest.get("packages", {}))
            repo = runtime.bundle_repo_packages(FAMILIES[fmt], fmt, arch, reference)
            lacking = [name for name in (repo.names if repo else ()) if name not in carried]
            if lacking:
                problems.append(f"it has no package file of {', '.join(lacking)}")
        if not problems:
            return
        flags = (runtime.bundle_version_flags() if runtime else None) or _version_flags(wanted)
        hint = f"{_CREATE_HINT} --family {fmt} --arch {arch} {flags}, then use that bundle."
        only_versions = len(problems) == 1 and bool(differing)
        if only_versions:
            own = _version_flags(self.versions)
            if own:
                hint += f" Or install the bundle's versions: add {own} to this command."
        raise ConfigError(
            f"the bundle {self.source} does not fit this host: " + "; ".join(problems) + ".",
            hint=hint,
        )

    def verify(self) -> None:
        """Hash every artifact against the manifest (ChecksumMismatch on the first that
        differs): a tampered bundle is refused before the first change, not half-way
        through an install. The downloader then serves them without hashing again."""
        downloader = self.downloader()
        for name, entry in self._entries():
            if entry["sha256"] in downloader.verified:
                continue
            path = self.root.joinpath(*_member_parts(entry["file"]))
            actual = sha256_of(path)
            if actual != entry["sha256"]:
                error = ChecksumMismatch(
                    f"{name} in the bundle {self.source} ({entry['file']})",
                    entry["sha256"],
                    actual,
                )
                error.hint = (
                    "Nothing was installed. The bundle was damaged or changed: copy the bundle "
                    f"again, or recreate it ({_CREATE_HINT})."
                )
                raise error
            downloader.verified.add(actual)

    def downloader(self) -> BundleDownloader:
        """What to use as Context.downloader_factory: one downloader per bundle."""
        if self._downloader is None:
            self._downloader = BundleDownloader(self)
        return self._downloader


def _version_flags(values: Dict[str, str]) -> str:
    """The flags that select these versions: a version set plus any overrides."""
    overridable = ("frakti", "kubernetes", "hyperd")
    sets = known_sets()
    for name, row in sets.items():
        if dict(row) == values:
            return f"--version-set {name}"
    for name, row in sets.items():
        if all(row.get(k) == values.get(k) for k in row if k not in overridable):
            flags = [f"--version-set {name}"] + [
                f"--{k}-version {values[k]}"
                for k in overridable
                if k in values and row.get(k) != values[k]
            ]
            return " ".join(flags)
    return " ".join(f"--{k}-version {values[k]}" for k in overridable if k in values)


def _manifest_root(root: Path, source: Path) -> Path:
    """Where manifest.json is: the top, or the one directory a hand-made tar holds."""
    if (root / MANIFEST).exists():
        return root
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    others = [p for p in root.iterdir() if not p.is_dir()]
    if len(subdirs) == 1 and not others and (subdirs[0] / MANIFEST).exists():
        return subdirs[0]
    raise ConfigError(
        f"{source} is not a frakti-install bundle: it has no {MANIFEST}",
        hint=f"{_CREATE_HINT} makes one; give that file (or its extracted directory).",
    )


def _garbled(source: Path, what: str) -> ConfigError:
    return ConfigError(
        f"the bundle {source} has a damaged {MANIFEST}: {what}",
        hint=f"Copy the bundle again, or recreate it ({_CREATE_HINT}).",
    )


def _load_manifest(root: Path, source: Path) -> Dict[str, Any]:
    path = root / MANIFEST
    if not _regular_file(path):
        raise _garbled(source, "not a regular file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _garbled(source, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _garbled(source, "not a JSON object")
    fmt = data.get("format")
    if fmt != BUNDLE_FORMAT:
        raise ConfigError(
            f"the bundle {source} has format {fmt!r}; this frakti-install reads format "
            f"{BUNDLE_FORMAT}",
            hint="Create the bundle with the same frakti-install version that installs it.",
        )
    if data.get("family") not in FAMILIES:
        raise _garbled(source, f"family {data.get('family')!r} is not deb or rpm")
    if not isinstance(data.get("arch"), str) or not data["arch"]:
        raise _garbled(source, "no arch")
    runtime = data.setdefault("runtime", DEFAULT_RUNTIME)
    try:
        runtime_class(str(runtime))
    except ConfigError:
        raise _garbled(source, f"runtime {runtime!r} is not a runtime profile") from None
    versions = data.get("versions")
    if not isinstance(versions, dict) or not versions:
        raise _garbled(source, "versions missing")
    if not all(isinstance(v, str) for v in versions.values()):
        raise _garbled(source, "versions must be strings")
    artifacts = data.get("artifacts")
    if not isinstance(artifacts, dict) or not artifacts:
        raise _garbled(source, "no artifacts")
    for name, entry in artifacts.items():
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(key), str) for key in ("file", "sha256", "identity", "url")
        ):
            raise _garbled(source, f"artifact {name!r} needs file, sha256, identity and url")
        if not _HEX64.match(entry["sha256"]):
            raise _garbled(source, f"artifact {name!r}: sha256 {entry['sha256']!r} is invalid")
        _require_file(root, source, entry["file"], f"artifact {name}")
    carried = data.setdefault("packages", {})
    if not isinstance(carried, dict):
        raise _garbled(source, "packages must map package names to files")
    for name, entry in carried.items():
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(key), str) for key in ("file", "sha256")
        ):
            raise _garbled(source, f"package {name!r} needs file and sha256")
        if not _HEX64.match(entry["sha256"]):
            raise _garbled(source, f"package {name!r}: sha256 {entry['sha256']!r} is invalid")
        _require_file(root, source, entry["file"], f"package {name}")
    packages = data.setdefault("os_packages", {})
    if not isinstance(packages, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in packages.values()
    ):
        raise _garbled(source, "os_packages must map groups to lists of package names")
    wheels = data.setdefault("wheels", [])
    if not isinstance(wheels, list) or not all(isinstance(w, str) for w in wheels):
        raise _garbled(source, "wheels must be a list of paths")
    for wheel in wheels:
        _require_file(root, source, wheel, "wheel")
    return data


def _require_file(root: Path, source: Path, relative: str, what: str) -> None:
    parts = _member_parts(relative)
    if not parts or not _regular_file(root.joinpath(*parts)):
        raise ConfigError(
            f"the bundle {source} is incomplete: {what} ({relative}) is missing",
            hint=f"Copy the whole bundle again, or recreate it ({_CREATE_HINT}).",
        )


# --------------------------------------------------------------------------- settings


def apply_to_settings(settings: Settings, bundle: Bundle) -> Settings:
    """Settings whose checksums include the bundle's; a sum the user gave must agree."""
    known = set(datafiles.load(runtime_class(bundle.runtime).table)["artifacts"])
    merged = {name: value for name, value in bundle.checksums().items() if name in known}
    for name, given in settings.checksums.items():
        carried = merged.get(name)
        if carried is not None and carried != given.lower():
            raise ConfigError(
                f"sha256 mismatch for {name}: you gave {given}, "
                f"the bundle {bundle.source} carries {carried}",
                hint=f"Check the sum you gave (--checksum {name}=...), or the bundle's origin.",
            )
        merged[name] = given
    return dataclasses.replace(settings, checksums=merged)


# --------------------------------------------------------------------------- downloader


class BundleDownloader(Downloader):
    """Serves the bundle's files where the Artifacts layer asks a Downloader.

    Never touches the network: every request is answered from the bundle or
    refused. Each file's sum is checked on its first fetch.
    """

    def __init__(self, bundle: Bundle) -> None:
        super().__init__(bundle.root, retries=0)
        self.bundle = bundle
        self.verified: Set[str] = set()  # sums of the files hashed already

    def _not_in_bundle(self, what: str) -> DownloadError:
        return DownloadError(
            f"{what} is not in the bundle; the bundle was made for {self.bundle.describe()}",
            hint=f"{_CREATE_HINT} with this host's family, arch and versions "
            "(and the checksums you give here).",
        )

    def cached(self, sha256: str) -> Optional[Path]:
        return self.bundle.path_of(sha256.strip().lower())

    def fetch(self, url: str, sha256: Union[str, Digest]) -> Path:
        want = Digest.of(sha256)
        if want.algorithm != "sha256":  # the manifest gives every artifact a sha256
            raise self._not_in_bundle(f"{url} ({want.algorithm} {want.hexdigest[:16]}...)")
        expected = want.hexdigest
        path = self.bundle.path_of(expected)
        if path is None:
            raise self._not_in_bundle(f"{url} (sha256 {expected})")
        if expected not in self.verified:
            actual = sha256_of(path)
            if actual != expected:
                raise ChecksumMismatch(
                    f"{url} (bundle file {path.relative_to(self.bundle.root)})", expected, actual
                )
            self.verified.add(expected)
        return path

    def fetch_text(self, url: str, max_bytes: int = 1 << 20) -> str:
        if url.endswith(".sha256"):
            target = urlsplit(url[: -len(".sha256")]).path
            matches = [
                entry
                for entry in self.bundle.manifest["artifacts"].values()
                if entry["identity"] and target.endswith(entry["identity"])
            ]
            if matches:
                entry = max(matches, key=lambda e: len(e["identity"]))
                filename = entry["identity"].rsplit("/", 1)[-1]
                return f"{entry['sha256']}  {filename}\n"
        raise self._not_in_bundle(url)

    def fetch_unverified(self, url: str) -> Path:
        raise DownloadError(
            f"{url}: a bundle carries verified files only",
            hint="Give the artifact's checksum (--checksum NAME=SHA256) when creating the "
            "bundle, instead of --allow-unverified.",
        )

    def _request(self, url: str, headers: Dict[str, str]) -> Any:  # never any network
        raise self._not_in_bundle(url)

