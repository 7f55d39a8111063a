"""Refusals before the first change, on a booted Debian 12 host (issue 16):
a tampered offline bundle (exit 8) and a malformed join (exit 3) leave
nothing changed under /etc, /usr, /opt or /var/lib.

"Nothing changed" is read from the host's side, in the overlay's upper
directory (testbed.Machine: every write the container makes lands there)
and in /var/lib/docker (bound from the host, so not in the upper dir): every
entry's type, mode, owner, size, times and inode (a directory's times
aside: its entries are listed themselves), taken just before and just after
the refused run. Two tests show the listing can tell: an idle host
shows no change in it, and a file written where an install starts writing
(/etc/modules-load.d, /etc/sysctl.d, /usr/bin, /opt, /var/lib/frakti-install)
does show.

One host serves every case: frakti-install installed as a user without
network would (not the cluster), and a bundle made on it by `bundle create`
from the stand-in mirror, then tampered with on the test's side.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Callable

import pytest
import testbed
from test_allinone import CONFIG_PATH, EXIT, describe, installed_host, make_config, to_yaml

pytestmark = pytest.mark.e2e

WATCHED = ("etc", "usr", "opt", "var/lib")
# What the booted system itself may change there while nothing runs, left out
# of the listing: systemd keeps a stamp file there for each Persistent= timer
# and rewrites it whenever the timer fires (docs/upstream-facts.md, the row on
# Persistent= timer stamps), which a daily timer does at midnight. Only this;
# test_an_idle_host_changes_nothing_watched fails, naming the path, if the
# host changes anything else on its own.
NOISE = ("var/lib/systemd/timers",)
# Refused runs must not write Python's bytecode caches either (pip compiled
# the project's at install, Debian the standard library's; a module imported
# for the first time would still get one): that is Python's cache, not the
# installer changing the host. A wide terminal keeps messages on one line.
RUN_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "400"}
REFUSAL_TIMEOUT = 120  # a refusal takes seconds; a run that is not refused is cut off here

BUNDLES = "/root/bundles"
GOOD_BUNDLE = f"{BUNDLES}/good.tar.gz"
BUNDLE_CONFIG = "/root/bundle-install.yaml"  # an air-gapped install's: no mirrors, no sums
NODE_CONFIG = "/root/node.yaml"
TAMPERED = "crictl"  # a name no other message would hold
GOOD_TOKEN = "abcdef.0123456789abcdef"
GOOD_CA_HASH = "sha256:" + hashlib.sha256(b"frakti-install e2e CA").hexdigest()
SECRET_BAD_TOKEN = "e2e-malformed-token-7f3a91"


# --------------------------------------------------------------------------
# what changed on the host


def _entry(st: os.stat_result, path: Path) -> tuple:
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFDIR:
        # A directory's own times change with any entry added or removed in it,
        # and every entry is listed itself: its inode says it is the same one.
        return ("dir", st.st_mode, st.st_uid, st.st_gid, st.st_ino)
    target = os.readlink(path) if kind == stat.S_IFLNK else ""
    rdev = st.st_rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0  # overlay whiteouts: 0/0
    return (
        st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
        st.st_ino, target, rdev,
    )  # fmt: skip


def _noise(key: str, is_dir: bool) -> bool:
    """Under NOISE, or a directory above it (its entries are listed themselves)."""
    return any(
        key == n or key.startswith(n + "/") or (is_dir and n.startswith(key + "/")) for n in NOISE
    )


def watched_files(machine: testbed.Machine) -> dict[str, tuple]:
    """Every entry the host changed under WATCHED (bar NOISE), by path inside."""
    roots = [(machine.dir / "upper" / top, top) for top in WATCHED]
    # keyed apart from the upper dir's own var/lib/docker, the mount point
    roots.append((machine.dir / "var-lib-docker", "var/lib/docker (bind mount)"))
    listing: dict[str, tuple] = {}
    for root, inside in roots:
        if not root.is_dir():
            continue
        paths = [root]
        for dirpath, dirnames, filenames in os.walk(root):
            paths += [Path(dirpath) / name for name in (*dirnames, *filenames)]
        for path in paths:
            rel = path.relative_to(root).as_posix()
            key = inside if rel == "." else f"{inside}/{rel}"
            st = path.lstat()
            if not _noise(key, stat.S_ISDIR(st.st_mode)):
                listing[key] = _entry(st, path)
    return listing


def changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    def what(key: str) -> str:
        return "added" if key not in before else "removed" if key not in after else "changed"

    keys = sorted(set(before) | set(after))
    return [f"{key}: {what(key)}" for key in keys if before.get(key) != after.get(key)]


def run_watched(
    machine: testbed.Machine, argv: list[str]
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run argv inside; its result and what it changed under WATCHED."""
    before = watched_files(machine)
    result = machine.run(argv, check=False, timeout=REFUSAL_TIMEOUT, env=RUN_ENV)
    return result, changes(before, watched_files(machine))


def squeezed(result: subprocess.CompletedProcess[str]) -> str:
    """The run's output without whitespace, so a wrapped line still matches."""
    return "".join((result.stdout + result.stderr).split())


def assert_refused(
    result: subprocess.CompletedProcess[str], changed: list[str], code: str, *named: str
) -> None:
    assert not changed, (
        "the refused run changed the host:\n- " + "\n- ".join(changed) + "\n" + describe(result)
    )
    assert result.returncode == EXIT[code], describe(result)
    text = squeezed(result)
    assert "Traceback" not in text and "internalerror" not in text, describe(result)
    missing = [word for word in named if "".join(word.split()) not in text]
    assert not missing, f"the message does not name {missing}\n{describe(result)}"


# --------------------------------------------------------------------------
# the host


@pytest.fixture(scope="module")
def machine(
    request: pytest.FixtureRequest,
    boot_host: Callable[..., testbed.Machine],
    wheelhouse: Path,
    mirror: dict,
) -> testbed.Machine:
    config = make_config(mirror)  # mirrors and sums, for `bundle create`
    host = installed_host(request, boot_host, wheelhouse, config, "refusals")
    host.write(BUNDLE_CONFIG, to_yaml({k: config[k] for k in ("pod_cidr", "node_subnet")}), 0o600)
    # A worker's config, with the mirrors: a join that is not refused goes on to
    # install (and change the host) instead of stopping at a missing mirror.
    host.write(NODE_CONFIG, to_yaml({k: v for k, v in config.items() if k != "node_subnet"}), 0o600)
    return host


def test_an_idle_host_changes_nothing_watched(machine: testbed.Machine) -> None:
    before = watched_files(machine)
    time.sleep(5)
    changed = changes(before, watched_files(machine))
    assert not changed, (
        "with nothing run, the host changed (add what the system itself writes to NOISE, "
        "with its reason):\n- " + "\n- ".join(changed)
    )


@pytest.mark.parametrize(
    "probe",
    [
        "/etc/modules-load.d/frakti-e2e-probe.conf",
        "/etc/sysctl.d/frakti-e2e-probe.conf",
        "/usr/bin/frakti-e2e-probe",
        "/opt/frakti-e2e-probe",
        "/var/lib/frakti-install/frakti-e2e-probe",
    ],
)
def test_the_listing_sees_where_an_install_writes_first(
    machine: testbed.Machine, probe: str
) -> None:
    made_dir = not machine.exists(os.path.dirname(probe))
    before = watched_files(machine)
    machine.write(probe, "written through the container\n")
    try:
        changed = changes(before, watched_files(machine))
    finally:
        machine.run(["rm", "-rf", os.path.dirname(probe) if made_dir else probe])
    assert any(line.startswith(probe.lstrip("/") + ":") for line in changed), changed


# --------------------------------------------------------------------------
# a tampered bundle: exit 8


def publish_cni_plugins_release(machine: testbed.Machine) -> None:
    """The CNI plugins release tarball and its .sha256, in the stand-in mirror.

    A bundle carries every artifact of its package family (bundle.artifact_names),
    the CNI plugins release among them, though Debian 12 takes the plugins from
    its containernetworking-plugins package; the stand-in mirror has no release
    for that reason. The installed tool's own resolver names the URL. The
    release has a .sha256 beside the tarball, a sha256sum line
    (docs/upstream-facts.md, row 8). The plugins here are never run.
    """
    url = machine.run(
        [
            "/opt/frakti-install/bin/python3",
            "-c",
            "import sys\n"
            "from frakti_install import versions\n"
            "from frakti_install.artifacts import Artifacts\n"
            "from frakti_install.config import Settings\n"
            "resolver = Artifacts(Settings(mirrors={'github': sys.argv[1]}), versions.resolve(),"
            " 'amd64', 'deb', lambda: None)\n"
            "print(resolver.get('cni-plugins').url)\n",
            f"{testbed.MIRROR_URL}/github",
        ]
    ).stdout.strip()
    assert url.startswith(testbed.MIRROR_URL + "/github/"), url
    script = (
        b"#!/bin/sh\necho 'TEST STAND-IN CNI plugin (frakti-install e2e): never run' >&2\nexit 1\n"
    )
    tarball = testbed._load_builder().build_tarball(
        {f"./{plugin}": (script, 0o755) for plugin in ("bridge", "host-local", "loopback")}
    )
    path = "/srv/mirror" + url[len(testbed.MIRROR_URL) :]
    machine.write(path, tarball)
    line = f"{hashlib.sha256(tarball).hexdigest()}  {os.path.basename(path)}\n"
    machine.write(path + ".sha256", line)


def rewrite_bundle(src: Path, dest: Path, change: Callable[[dict, dict[str, bytes]], None]) -> None:
    """A copy of the bundle src at dest, its manifest and files changed by change()."""
    with tarfile.open(src) as tar:
        members = tar.getmembers()
        files = {}
        for member in members:
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                files[member.name] = handle.read()
    manifest = json.loads(files["manifest.json"])
    change(manifest, files)
    files["manifest.json"] = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
    with tarfile.open(dest, "w:gz", format=tarfile.PAX_FORMAT) as out:
        for member in members:
            if member.name in files:
                member.size = len(files[member.name])
                out.addfile(member, io.BytesIO(files[member.name]))
            else:
                out.addfile(member)


def flip_a_byte(manifest: dict, files: dict[str, bytes]) -> None:
    """The artifact's bytes changed, its size kept; the manifest left as it was."""
    name = manifest["artifacts"][TAMPERED]["file"]
    data = bytearray(files[name])
    data[len(data) // 2] ^= 0xFF
    files[name] = bytes(data)


def change_the_sum(manifest: dict, files: dict[str, bytes]) -> None:
    """The manifest's sha256 of the artifact changed (to another valid sum); its file kept."""
    entry = manifest["artifacts"][TAMPERED]
    entry["sha256"] = hashlib.sha256(entry["sha256"].encode()).hexdigest()


@pytest.fixture(scope="module")
def bundle(machine: testbed.Machine) -> str:
    """A bundle made on the host, as on a connected machine: `bundle create` runs
    offline here, fetching every artifact from the stand-in mirror on
    127.0.0.1 (a bundle lists the OS packages, it does not carry them, so
    apt is not involved)."""
    publish_cni_plugins_release(machine)
    result = machine.run(
        [
            "frakti-install", "bundle", "create", "--family", "deb",
            "--config", CONFIG_PATH, "--output", GOOD_BUNDLE,
        ],
        check=False,
        timeout=300,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"bundle create failed\n{describe(result)}", pytrace=False)
    return GOOD_BUNDLE


def allinone_with(bundle: str, *extra: str) -> list[str]:
    return ["frakti-install", "allinone", *extra, "--config", BUNDLE_CONFIG, "--bundle", bundle]


def test_the_untampered_bundle_is_accepted(machine: testbed.Machine, bundle: str) -> None:
    """What the copies below differ from: the bundle fits the host and verifies."""
    result, changed = run_watched(machine, allinone_with(bundle, "--dry-run", "--json"))
    assert result.returncode == EXIT["ok"], describe(result)
    assert not changed, "a dry run changed the host:\n- " + "\n- ".join(changed)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(flip_a_byte, id="artifact-bytes"),
        pytest.param(change_the_sum, id="manifest-sha256"),
    ],
)
def test_a_tampered_bundle_is_refused_before_any_change(
    machine: testbed.Machine, bundle: str, tamper: Callable[[dict, dict[str, bytes]], None]
) -> None:
    copy = f"{BUNDLES}/tampered-{tamper.__name__.replace('_', '-')}.tar.gz"
    rewrite_bundle(machine.path(bundle), machine.path(copy), tamper)
    assert os.path.getsize(machine.path(copy)) > 0

    result, changed = run_watched(machine, allinone_with(copy, "--yes"))

    assert_refused(result, changed, "checksum", TAMPERED, copy)


# --------------------------------------------------------------------------
# a malformed join: exit 3


def join_argv(endpoint: str, token: str, ca_hash: str) -> list[str]:
    return [
        "frakti-install", "node", "--yes", "--config", NODE_CONFIG, "--join", endpoint,
        "--token", token, "--discovery-token-ca-cert-hash", ca_hash,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "endpoint, token, ca_hash, named",
    [
        # every part malformed: whichever is checked first must be named
        pytest.param("10.0.0.9", "bad", "sha256:xyz", (), id="all-malformed"),
        pytest.param("10.0.0.9", GOOD_TOKEN, GOOD_CA_HASH, ("10.0.0.9", "HOST:PORT"), id="no-port"),
        pytest.param("10.0.0.9:6443", SECRET_BAD_TOKEN, GOOD_CA_HASH, ("token",), id="bad-token"),
        pytest.param(
            "10.0.0.9:6443",
            GOOD_TOKEN,
            "sha256:xyz",
            ("--discovery-token-ca-cert-hash", "sha256:"),
            id="bad-ca-hash",
        ),  # fmt: skip
    ],
)
def test_a_malformed_join_is_refused_before_any_change(
    machine: testbed.Machine, endpoint: str, token: str, ca_hash: str, named: tuple[str, ...]
) -> None:
    result, changed = run_watched(machine, join_argv(endpoint, token, ca_hash))

    assert_refused(result, changed, "config", *named)
    if not named:
        text = squeezed(result)
        assert any(w in text for w in ("10.0.0.9", "token", "sha256:xyz")), describe(result)
    assert SECRET_BAD_TOKEN not in result.stdout + result.stderr, "the token was echoed"
