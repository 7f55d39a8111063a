"""What upstream really publishes, and that the installer asks for that only.

The simulated downloader serves the hash files of docs/upstream-facts.md
(tests/unit/simhost.py upstream_hash_files), not what data/artifacts.yaml says.
"""

from __future__ import annotations

import hashlib
from typing import Dict

import pytest

from frakti_install import versions
from frakti_install.artifacts import Artifacts
from frakti_install.config import Settings
from frakti_install.errors import DownloadError, MissingChecksum, PreflightFailed
from frakti_install.steps.preflight import Preflight
from tests.unit.simhost import SimDownloader, hyper_package_urls

BINARIES = ("kubeadm", "kubelet", "kubectl")


def resolver(downloader: SimDownloader, **versions_over: str) -> Artifacts:
    values: Dict[str, str] = dict(versions.resolve().as_dict(), **versions_over)
    return Artifacts(Settings(), values, "amd64", "deb", lambda: downloader)  # type: ignore[arg-type,return-value]


def test_kubernetes_1_12_binaries_are_verified_with_the_published_sha512(tmp_path) -> None:
    # dl.k8s.io: .sha512 from v1.12.0 (kubernetes/release#630), .sha256 only from
    # v1.16.0 (kubernetes/kubernetes#68555): a .sha256 of v1.12.10 is a 404.
    dl = SimDownloader(tmp_path)
    artifacts = resolver(dl)
    for name in BINARIES:
        local = artifacts.fetch(name)
        assert hashlib.sha256(local.read_bytes()).hexdigest() == local.name  # cached by sha256
    base = "https://dl.k8s.io/release/v1.12.10/bin/linux/amd64"
    assert dl.texts == [f"{base}/{name}.sha512" for name in BINARIES]
    assert "sha512 from https://dl.k8s.io/release/v1.12.10/bin/linux/amd64/kubeadm.sha512" in (
        artifacts.get("kubeadm").verified_with()
    )


def test_the_double_serves_no_sha256_before_kubernetes_1_16(tmp_path) -> None:
    dl = SimDownloader(tmp_path)
    with pytest.raises(DownloadError, match="404"):
        dl.fetch_text("https://dl.k8s.io/release/v1.12.10/bin/linux/amd64/kubeadm.sha256")
    assert dl.fetch_text("https://dl.k8s.io/release/v1.16.0/bin/linux/amd64/kubeadm.sha256")


def test_kubernetes_1_16_and_later_use_the_sha256(tmp_path) -> None:
    dl = SimDownloader(tmp_path)
    artifacts = resolver(dl, kubernetes="v1.16.0")
    artifacts.fetch("kubelet")
    assert dl.texts == ["https://dl.k8s.io/release/v1.16.0/bin/linux/amd64/kubelet.sha256"]


def test_kubernetes_before_1_12_needs_a_given_sum(tmp_path) -> None:
    # only .sha1/.md5 beside v1.11.x binaries: nothing to verify a sha256 against
    dl = SimDownloader(tmp_path)
    with pytest.raises(MissingChecksum, match=r"only \.sha1/\.md5 before v1\.12\.0"):
        resolver(dl, kubernetes="v1.11.10").fetch("kubeadm")
    assert dl.texts == []


def test_cni_plugins_use_their_published_sha256(tmp_path) -> None:
    dl = SimDownloader(tmp_path)
    resolver(dl).fetch("cni-plugins")
    assert dl.texts == [
        "https://github.com/containernetworking/plugins/releases/download/v0.7.5/"
        "cni-plugins-amd64-v0.7.5.tgz.sha256"
    ]


# hyperd 1.x: no public .deb/.rpm is known (the hypercontainer-install bucket only
# had 0.8.1; hypercontainer-download is NoSuchBucket, screwdriver-cd/screwdriver#1809)


def test_hyper_packages_from_the_default_base_stop_preflight(machine) -> None:
    m = machine(hyper_packages_cached=False)
    with pytest.raises(PreflightFailed) as info:
        Preflight().check(m.context())
    message = str(info.value)
    assert "[HyperPackages] no public download of hyperd 1.1.0 is known" in message
    assert "hypercontainer_1.1.0-1_amd64.deb" in message
    assert "--mirror hyper=URL" in message and "--bundle" in message
    assert m.downloader.fetched == [] and m.downloader.texts == []  # nothing fetched


def test_hyper_mirror_or_cached_packages_pass_preflight(machine) -> None:
    m = machine(hyper_packages_cached=False)
    ctx = m.context(m.settings(mirrors={"hyper": "https://mirror.example/hyper"}))
    assert not Preflight().check(ctx).needed
    cached = machine("centos", "7")  # the packages are in the cache (copied or a bundle's)
    assert not Preflight().check(cached.context()).needed


def test_the_default_hyper_base_serves_no_hyperd_1x(tmp_path) -> None:
    dl = SimDownloader(tmp_path)
    url = hyper_package_urls("debian")[0]
    with pytest.raises(DownloadError, match="404"):
        dl.fetch(url, SimDownloader.sha256_for(url))
