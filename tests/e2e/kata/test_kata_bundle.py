"""An air-gapped kata install on booted Debian 12 hosts, with real apt, gpg and dpkg.

A connected host (the kata test's: the signed stand-in pkgs.k8s.io repository
and the Kata tarball served on 127.0.0.1:8080) makes the bundle with
`bundle create --runtime kata`: apt-get downloads the Kubernetes packages
from that repository in a private configuration and checks its signature,
gpg checks the key's fingerprint and expiry. A second host that has no mirror
and no network (nspawn's private network; its config names no mirror, so every
URL is upstream's, and unreachable) installs from the bundle alone:

(0) `bundle create` on a host without gpg (a fresh Debian) is refused (exit 3)
    before the first download, naming the package to install;
(a) a bundle with one package file changed is refused (exit 8) before any
    change: no Kubernetes package installed, nothing under /opt/kata;
(b) the bundle as made installs: the packages from the bundle at the version
    the repository carries, held; the Kata tree unpacked; the cluster up;
(c) a second run changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Callable, Dict

import pytest
import testbed
from test_kata_allinone import (
    CONFIG_PATH,
    HELD,
    INSTALL_TIMEOUT,
    SHIM,
    boot_kata_host,
    built_kata_mirror,
    describe,
    dpkg_status,
    make_config,
    ready_kata_image,
    steps_of,
    write_config,
)

pytestmark = pytest.mark.e2e

SUITE = "bookworm"
BUNDLE = "/root/kata-bundle.tar.gz"
UNPACKED = "/root/kata-bundle-changed"
CONFIG_ERROR = 3
WRONG_CHECKSUM = 8


@pytest.fixture(scope="module")
def bundle_image(testbed_ready: None, record_timing: Callable[[str, float], None]) -> Path:
    return ready_kata_image(SUITE, record_timing)


@pytest.fixture(scope="module")
def bundle_mirror(run_dir: Path, record_timing: Callable[[str, float], None]) -> Dict[str, object]:
    return built_kata_mirror(run_dir / "mirror-kata-bundle", "kata bundle mirror", record_timing)


@pytest.fixture(scope="module")
def air_gapped(
    request: pytest.FixtureRequest,
    bundle_image: Path,
    bundle_mirror: Dict[str, object],
    run_dir: Path,
    wheelhouses: Callable[[str], Path],
    record_timing: Callable[[str, float], None],
) -> Dict[str, object]:
    """The bundle made on a connected host, copied to a host with no mirror."""
    wheelhouse = wheelhouses(testbed.image_python(bundle_image))
    connected = boot_kata_host(
        request, "bundle-maker", bundle_image, bundle_mirror, run_dir, wheelhouse, record_timing
    )
    write_config(connected, make_config(bundle_mirror))
    create = ["frakti-install", "bundle", "create", "--family", "deb", "--runtime", "kata",
              "-c", CONFIG_PATH, "-o", BUNDLE]  # fmt: skip
    # a fresh Debian host has no gpg: refused before the first download
    assert not connected.exists("/usr/bin/gpg")
    refused = connected.run(create, check=False, timeout=INSTALL_TIMEOUT)
    assert refused.returncode == CONFIG_ERROR, describe(connected, refused)
    said = " ".join(refused.stderr.split())  # the console wraps lines
    assert "has no gpg" in said and "apt-get install gpg" in said, refused.stderr
    assert not connected.exists("/var/cache/frakti-install/sha256"), "it downloaded first"
    connected.run(["apt-get", "install", "-y", "-q", "--no-download", "gpg"],
                  env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)  # fmt: skip

    started = time.monotonic()
    made = connected.run(create, check=False, timeout=INSTALL_TIMEOUT)
    record_timing("kata bundle create on a connected host", time.monotonic() - started)
    assert made.returncode == 0, describe(connected, made)
    digest = hashlib.sha256(connected.path(BUNDLE).read_bytes()).hexdigest()
    assert f"sha256 {digest}" in made.stdout, made.stdout

    host = boot_kata_host(
        request, "air-gapped", bundle_image, bundle_mirror, run_dir, wheelhouse, record_timing,
        serve=False,
    )  # fmt: skip
    shutil.copy(connected.path(BUNDLE), host.path(BUNDLE))
    config = make_config(bundle_mirror, mirrors=None, checksums=None)
    write_config(host, config)
    return {"host": host, "mirror": bundle_mirror}


def install(host: testbed.Machine, bundle: str) -> subprocess.CompletedProcess[str]:
    argv = ["frakti-install", "allinone", "--runtime", "kata", "--yes", "-c", CONFIG_PATH,
            "--bundle", bundle, "--json"]  # fmt: skip
    return host.run(argv, check=False, timeout=INSTALL_TIMEOUT)


def test_the_bundle_carries_the_repository_packages(air_gapped: Dict[str, object]) -> None:
    host = air_gapped["host"]
    assert isinstance(host, testbed.Machine)
    with tarfile.open(host.path(BUNDLE)) as tar:
        names = tar.getnames()
        extracted = tar.extractfile("manifest.json")
        assert extracted is not None
        manifest = json.load(extracted)
    assert manifest["runtime"] == "kata"
    assert set(manifest["packages"]) >= {*HELD, "kubernetes-cni"}
    for name, entry in manifest["packages"].items():
        assert entry["file"] in names, f"{name}: {entry['file']} is not in the bundle"
        assert entry["file"].endswith("_amd64.deb"), entry


def test_a_changed_package_file_is_refused_before_any_change(
    air_gapped: Dict[str, object],
) -> None:
    host = air_gapped["host"]
    assert isinstance(host, testbed.Machine)
    host.run(["mkdir", "-p", UNPACKED])
    host.run(["tar", "-xzf", BUNDLE, "-C", UNPACKED])
    kubelet = host.run(
        ["sh", "-c", f"ls {UNPACKED}/*/packages/kubelet_*.deb {UNPACKED}/packages/kubelet_*.deb"
                     " 2>/dev/null | head -n1"],
    ).stdout.strip()  # fmt: skip
    assert kubelet, "no kubelet package in the unpacked bundle"
    host.run(["sh", "-c", f"printf x >> {kubelet}"])
    root = kubelet.rsplit("/packages/", 1)[0]

    refused = install(host, root)
    assert refused.returncode == WRONG_CHECKSUM, describe(host, refused)
    assert "kubelet" in refused.stderr, refused.stderr
    for name in HELD:
        assert dpkg_status(host, name)["abbrev"] in ("", "un"), f"{name} was installed"
    assert not host.exists("/opt/kata/bin"), "Kata was unpacked from a refused bundle"
    host.run(["rm", "-rf", UNPACKED])


def test_the_bundle_installs_on_a_host_without_network_then_a_rerun_changes_nothing(
    air_gapped: Dict[str, object],
) -> None:
    host, mirror = air_gapped["host"], air_gapped["mirror"]
    assert isinstance(host, testbed.Machine) and isinstance(mirror, dict)
    reach = f"import urllib.request; urllib.request.urlopen({testbed.MIRROR_URL!r}, timeout=5)"
    assert host.run(["python3", "-c", reach], check=False).returncode != 0, "a mirror answers"

    first = install(host, BUNDLE)
    assert first.returncode == 0, describe(host, first)
    for name in HELD:
        status = dpkg_status(host, name)
        assert status["abbrev"] == "hi", f"{name}: {status} (installed and held expected)"
        assert status["version"] == mirror["package_version"], (name, status)
    assert host.exists(SHIM), f"{SHIM} missing after the bundle install"
    assert host.is_active("containerd") and host.is_active("kubelet")

    again = install(host, BUNDLE)
    assert again.returncode == 0, describe(host, again)
    changed = [s["name"] for s in steps_of(again) if s["status"] == "change"]
    assert not changed, f"a second run from the bundle changed: {changed}"
