"""Offline bundles for the kata profile: made on a simulated connected machine
(gpg, apt-get/dnf download against the sim's pkgs.k8s.io, the sim downloader
for the kata tarball and the key), installed on a simulated kata host that
downloads nothing."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

from frakti_install import bundle as bundle_module
from frakti_install import plans, runtimes, session
from frakti_install.bundle import Bundle, create_bundle
from frakti_install.engine import Status
from frakti_install.errors import ChecksumMismatch, ConfigError, ExitCode
from frakti_install.host import Host
from frakti_install.steps.kube_packages import KeyMismatch
from tests.unit.simkata import (
    ConnectedRunner,
    KataSimDownloader,
    KataSimMachine,
    kata_checksums,
    signing_key,
)

PINNED = ("kubelet", "kubeadm", "kubectl")


class Connected:
    """The machine that makes the bundle."""

    def __init__(self, root: Path) -> None:
        self.runner = ConnectedRunner(root)
        for tool in ("apt-get", "gpg", "dnf"):
            self.runner.write(f"/usr/bin/{tool}", "#!/bin/sh\n", 0o755)
        self.host = Host(root=root, runner=self.runner)
        self.downloader = KataSimDownloader(root / "cache")

    def make(self, out: Path, fmt: str = "deb", **settings: Any) -> Path:
        chosen = KataSimMachine.settings(None, **settings)  # type: ignore[arg-type]
        runtime = runtimes.runtime_for(chosen)
        family = bundle_module.FAMILIES[fmt]
        return create_bundle(
            out,
            runtime.artifacts("amd64", fmt, lambda: self.downloader),  # type: ignore[arg-type,return-value]
            family=fmt,
            arch="amd64",
            versions=runtime.versions,
            os_packages=runtime.bundle_os_packages(family) or {},
            runtime=runtime,
            host=self.host,
        )


@pytest.fixture
def connected(tmp_path: Path) -> Connected:
    return Connected(tmp_path / "connected")


@pytest.fixture
def machine(tmp_path: Path) -> Callable[..., KataSimMachine]:
    def make(os_id: str = "debian", version: str = "12") -> KataSimMachine:
        return KataSimMachine(tmp_path / f"{os_id}-{version}", os_id, version)

    return make


class Refusing(KataSimDownloader):
    """The air-gapped host's downloader: every request fails."""

    def fetch(self, url: str, sha256: str) -> Path:
        raise AssertionError(f"the install reached the network: {url}")

    def fetch_unverified(self, url: str) -> Path:
        raise AssertionError(f"the install reached the network: {url}")

    def fetch_text(self, url: str) -> str:
        raise AssertionError(f"the install reached the network: {url}")


def install(m: KataSimMachine, bundle_path: Path, work: Path) -> session.Report:
    """What `allinone --runtime kata --bundle FILE` does, on the simulated host."""
    m.downloader = Refusing(m.root / "var/cache/sim")
    user = m.settings(checksums={"kata": ""})  # no sum given: the bundle's
    used = session.use_bundle(user, bundle_path, work, host=m.context(user).host)
    ctx = m.context(used.settings)
    ctx.downloader_factory = used.downloader_factory
    ctx.package_files = used.package_files
    return session.execute(plans.allinone(ctx.runtime), ctx, dry_run=False)


def manifest_of(path: Path) -> Dict[str, Any]:
    with tarfile.open(path) as tar:
        handle = tar.extractfile("manifest.json")
        assert handle is not None
        return dict(json.load(handle))


# --- create ----------------------------------------------------------------------
def test_kata_bundle_holds_the_tarball_the_key_and_the_repository_packages(
    connected: Connected, tmp_path: Path
) -> None:
    out = connected.make(tmp_path / "kata.tar.gz")
    manifest = manifest_of(out)

    assert manifest["runtime"] == "kata"
    assert manifest["versions"]["kubernetes"] == "v1.35.9"
    assert set(manifest["artifacts"]) == {"kata", "kubernetes-apt-key"}
    assert manifest["artifacts"]["kata"]["sha256"] == kata_checksums()["kata"]
    assert manifest["artifacts"]["kubernetes-apt-key"]["sha256"] == hashlib.sha256(
        signing_key()
    ).hexdigest()
    # 1.35: kubeadm requires no cri-tools from the repository any more
    assert set(manifest["packages"]) == {"kubelet", "kubeadm", "kubectl", "kubernetes-cni"}
    assert manifest["packages"]["kubelet"]["file"] == "packages/kubelet_1.35.9-1.1_amd64.deb"
    with tarfile.open(out) as tar:
        for entry in manifest["packages"].values():
            handle = tar.extractfile(entry["file"])
            assert handle is not None
            assert hashlib.sha256(handle.read()).hexdigest() == entry["sha256"]
    assert "containerd" in manifest["os_packages"]["containerd"]  # listed, from the distro
    # apt was given only the pinned versions, the repository of the minor, and the key
    assert "signed-by=" in (connected.runner.updated or "")


def test_what_the_repository_packages_are_per_minor(connected: Connected) -> None:
    """kubeadm requires cri-tools from the repository before 1.32 (kubernetes/release
    cmd/krel/templates/latest/metadata.yaml): a bundle of those minors carries it."""

    def specs(version: str, family: str, fmt: str) -> tuple:
        chosen = KataSimMachine.settings(  # type: ignore[arg-type]
            None, kubernetes_version=version, allow_eol=True
        )
        runtime = runtimes.runtime_for(chosen)
        artifacts = runtime.artifacts("amd64", fmt, lambda: connected.downloader)  # type: ignore[arg-type,return-value]
        repo = runtime.bundle_repo_packages(family, fmt, "amd64", artifacts)
        assert repo is not None
        return repo.specs

    assert specs("v1.31.14", "debian", "deb") == (
        "kubelet=1.31.14-1.1", "kubeadm=1.31.14-1.1", "kubectl=1.31.14-1.1",
        "kubernetes-cni", "cri-tools",
    )  # fmt: skip
    assert specs("v1.35.9", "rhel", "rpm") == (
        "kubelet-1.35.9", "kubeadm-1.35.9", "kubectl-1.35.9", "kubernetes-cni",
    )  # fmt: skip


def test_a_key_of_another_fingerprint_stops_create(connected: Connected, tmp_path: Path) -> None:
    url = "https://pkgs.k8s.io/core:/stable:/v1.35/deb/Release.key"
    connected.downloader.replace[url] = signing_key("0" * 40)
    with pytest.raises(KeyMismatch, match="holds key"):
        connected.make(tmp_path / "kata.tar.gz")
    assert not (tmp_path / "kata.tar.gz").exists()
    assert connected.runner.served == [], "nothing downloaded with an unchecked key"


def test_an_expired_key_stops_create(connected: Connected, tmp_path: Path) -> None:
    url = "https://pkgs.k8s.io/core:/stable:/v1.35/deb/Release.key"
    connected.downloader.replace[url] = signing_key(expires=1_000_000)
    with pytest.raises(KeyMismatch, match="expired"):
        connected.make(tmp_path / "kata.tar.gz")
    assert connected.runner.served == []


@pytest.mark.parametrize(
    ("fmt", "removed", "named"),
    [
        ("deb", ("gpg",), "has no gpg"),
        ("deb", ("apt-get",), "has no apt-get"),
        ("rpm", ("gpg", "dnf"), "has no gpg and no dnf"),
    ],
)
def test_a_missing_tool_stops_create_before_any_download(
    connected: Connected, tmp_path: Path, fmt: str, removed: tuple, named: str
) -> None:
    """Seen on a fresh Debian 12 host (the booted kata bundle test): no gpg, and
    create failed half-way with 'gpg: command not found' (exit 6)."""
    for tool in removed:
        (connected.runner.root / "usr/bin" / tool).unlink()
    with pytest.raises(ConfigError, match=named) as raised:
        connected.make(tmp_path / "kata.tar.gz", fmt)
    assert raised.value.exit_code == ExitCode.CONFIG
    assert connected.downloader.fetched == [], "downloads began before the tools were checked"
    assert not (tmp_path / "kata.tar.gz").exists()


def test_rpm_bundle_is_made_with_dnf_download(connected: Connected, tmp_path: Path) -> None:
    manifest = manifest_of(connected.make(tmp_path / "kata-rpm.tar.gz", "rpm"))
    assert manifest["family"] == "rpm"
    assert set(manifest["artifacts"]) == {"kata", "kubernetes-rpm-key"}
    assert manifest["packages"]["kubelet"]["file"] == (
        "packages/kubelet-1.35.9-150500.1.1.x86_64.rpm"
    )


# --- install -----------------------------------------------------------------------
def test_install_from_a_kata_bundle_needs_no_network_and_reruns_clean(
    connected: Connected, tmp_path: Path, machine: Callable[..., KataSimMachine]
) -> None:
    out = connected.make(tmp_path / "kata.tar.gz")
    m = machine("debian", "12")

    report = install(m, out, tmp_path / "work")

    session.raise_for(report)
    for name in (*PINNED, "kubernetes-cni"):
        assert m.state.packages[name].startswith(("1.35.9-", "1.7.1-")), name
    assert sorted(m.kata.holds) == sorted(PINNED)
    assert m.p("/opt/kata/bin/containerd-shim-kata-v2").exists()
    assert m.p("/etc/apt/keyrings/kubernetes-apt-keyring.gpg").exists()
    assert not m.p("/etc/apt/sources.list.d/kubernetes.list").exists(), "no repository offline"
    installs = [c for c in m.runner.calls if c[:2] == ["apt-get", "install"]]
    files = [a for c in installs for a in c if a.endswith(".deb")]
    assert sorted(Path(f).name for f in files) == sorted(
        f"{n}_{'1.7.1' if n == 'kubernetes-cni' else '1.35.9'}-1.1_amd64.deb"
        for n in (*PINNED, "kubernetes-cni")
    )
    journal = (m.p("/var/lib/frakti-install/journal.jsonl")).read_text()
    recorded = [json.loads(line) for line in journal.splitlines()]
    packages = {p for e in recorded if e.get("event") == "packages" for p in e["installed"]}
    assert {*PINNED, "kubernetes-cni"} <= packages, "reset must know to remove them"

    again = install(m, out, tmp_path / "work2")
    session.raise_for(again)
    assert [r.name for r in again.steps if r.status is Status.CHANGE] == []


def test_a_tampered_kata_tarball_is_refused_before_any_change(
    connected: Connected, tmp_path: Path, machine: Callable[..., KataSimMachine]
) -> None:
    opened = Bundle.open(connected.make(tmp_path / "kata.tar.gz"), tmp_path / "open")
    tarball = opened.root / opened.manifest["artifacts"]["kata"]["file"]
    with open(tarball, "ab") as fh:
        fh.write(b"\0")
    m = machine("debian", "12")
    before = m.snapshot()

    with pytest.raises(ChecksumMismatch) as info:
        install(m, opened.root, tmp_path / "work")

    assert info.value.exit_code == ExitCode.CHECKSUM == 8
    assert "kata in the bundle" in str(info.value)
    assert m.snapshot() == before and m.runner.mutations == 0


def test_a_tampered_package_file_is_refused_before_any_change(
    connected: Connected, tmp_path: Path, machine: Callable[..., KataSimMachine]
) -> None:
    opened = Bundle.open(connected.make(tmp_path / "kata.tar.gz"), tmp_path / "open")
    deb = opened.root / opened.manifest["packages"]["kubeadm"]["file"]
    deb.write_bytes(deb.read_bytes() + b"x")
    m = machine("debian", "12")

    with pytest.raises(ChecksumMismatch, match="kubeadm in the bundle"):
        install(m, opened.root, tmp_path / "work")
    assert m.runner.mutations == 0


def test_a_bundle_for_another_family_is_refused(
    connected: Connected, tmp_path: Path, machine: Callable[..., KataSimMachine]
) -> None:
    out = connected.make(tmp_path / "kata.tar.gz")  # deb
    m = machine("rocky", "9.3")

    with pytest.raises(ConfigError, match="made for deb packages") as info:
        install(m, out, tmp_path / "work")
    assert "--family rpm" in (info.value.hint or "")
    assert "--runtime kata" in (info.value.hint or "")
    assert m.runner.mutations == 0


def test_a_frakti_bundle_is_refused_by_the_kata_profile(
    connected: Connected, tmp_path: Path, machine: Callable[..., KataSimMachine]
) -> None:
    out = tmp_path / "kata.tar.gz"
    opened = Bundle.open(connected.make(out), tmp_path / "open")
    manifest = dict(opened.manifest, runtime="frakti")
    (opened.root / "manifest.json").write_text(json.dumps(manifest))
    m = machine("debian", "12")
    with pytest.raises(ConfigError, match="made for the frakti profile, not kata"):
        install(m, opened.root, tmp_path / "work")

