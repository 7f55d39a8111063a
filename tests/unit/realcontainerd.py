"""Real containerd binaries of several Debian suites, for tests that feed them the
files the installer writes (`containerd --config F config dump` needs no daemon).

They come the way tests/unit/fixtures/probes/capture.sh gets them: `apt-get
download` through a private apt directory (nothing is installed), built from the
machine's own Debian mirror (the Repo-URI `apt-get indextargets` reports for the
host's suite), then `dpkg-deb -x`. Only the containerd .debs are fetched; they are
kept under CACHE, so a second run downloads nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

CACHE = Path(os.environ.get("FRAKTI_TEST_CACHE", "/var/cache/frakti-install-tests"))
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# suite -> the containerd minor it is known to carry (its real version is read back)
SUITES = {"bookworm": "1.6", "trixie": "1.7", "sid": "2."}


class Unavailable(Exception):
    """This machine cannot run the real-containerd tests (why: the message)."""


@dataclass(frozen=True)
class Binary:
    suite: str
    package_version: str  # the .deb's version
    path: Path  # usr/bin/containerd inside the unpacked .deb
    version_output: str  # `containerd --version`, as printed


def _run(argv: Sequence[str], cwd: Optional[Path] = None) -> str:
    result = subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()[-2000:]}"
        )
    return result.stdout


def machine_can_fetch() -> None:
    """Unavailable unless this is a root Debian machine with apt and dpkg-deb."""
    if os.geteuid() != 0:
        raise Unavailable("needs root (apt-get download into a private apt directory)")
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise Unavailable(f"needs {tool} (a Debian machine)")
    if not Path(KEYRING).exists():
        raise Unavailable(f"needs the Debian archive keyring ({KEYRING})")


def debian_mirror() -> Tuple[str, str]:
    """The machine's Debian mirror (Repo-URI) and its own suite (codename)."""
    records = _run(["apt-get", "indextargets", "Identifier: Packages"]).split("\n\n")
    for record in records:
        fields = dict(
            line.split(": ", 1) for line in record.splitlines() if ": " in line
        )
        if (
            fields.get("Origin") == "Debian"
            and fields.get("Component") == "main"
            and fields.get("Label") == "Debian"
            and fields.get("Release") == fields.get("Codename")
        ):
            return fields["Repo-URI"], fields["Release"]
    raise RuntimeError(
        "no Debian 'main' suite in this machine's apt sources (apt-get indextargets): "
        "the real-containerd tests need the Debian archive mirror the machine uses"
    )


def _apt_options(apt: Path) -> List[str]:
    return [
        "-o", f"Dir::Etc::SourceList={apt}/sources.list",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={apt}/lists",
        "-o", f"Dir::Cache={apt}/cache",
        "-o", "Acquire::Languages=none",
        "-o", "APT::Architectures::=" + _run(["dpkg", "--print-architecture"]).strip(),
    ]  # fmt: skip


def fetch(suites: Sequence[str] = tuple(SUITES), cache: Path = CACHE) -> Dict[str, Binary]:
    """containerd of each suite, unpacked under `cache` (downloaded once)."""
    mirror, own = debian_mirror()
    apt = cache / "apt"
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    lines = [f"deb [signed-by={KEYRING}] {mirror} {suite} main" for suite in suites]
    if own in suites:  # the host's suite gets its point-release updates as well
        lines.append(f"deb [signed-by={KEYRING}] {mirror} {own}-updates main")
    sources = "\n".join(lines) + "\n"
    options = _apt_options(apt)
    listed = apt / "sources.list"
    if not listed.exists() or listed.read_text() != sources or not any((apt / "lists").iterdir()):
        listed.write_text(sources)
        _run(["apt-get", *options, "update", "-qq"])
    madison = _run(["apt-cache", *options, "madison", "containerd"])
    found: Dict[str, Binary] = {}
    for suite in suites:
        wanted = {suite, f"{suite}-updates"}
        versions = [
            fields[1].strip()
            for fields in (line.split("|") for line in madison.splitlines())
            if len(fields) >= 3
            and fields[2].split()[1].split("/")[0] in wanted
            and fields[2].strip().endswith("Packages")
        ]
        if not versions:
            raise RuntimeError(f"no containerd in {suite} on {mirror}")
        version = versions[0]  # madison lists the newest first
        unpacked = cache / "unpacked" / f"containerd-{version}"
        binary = unpacked / "usr" / "bin" / "containerd"
        if not binary.exists():
            _run(["apt-get", *options, "download", "-qq", f"containerd={version}"], cwd=debs)
            deb = next(debs.glob(f"containerd_{re.sub(':', '%3a', version)}_*.deb"))
            shutil.rmtree(unpacked, ignore_errors=True)
            unpacked.mkdir(parents=True)
            _run(["dpkg-deb", "-x", str(deb), str(unpacked)])
        printed = _run([str(binary), "--version"]).strip()
        found[suite] = Binary(suite, version, binary, printed)
    return found
