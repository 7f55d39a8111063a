"""Offline bundles: made from a local HTTP server on 127.0.0.1 (the "connected
machine"), installed on a simulated host with every socket connect refused."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import stat
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest
import requests

from frakti_install import bundle as bundle_module
from frakti_install import config, plans, session, versions
from frakti_install.artifacts import Artifacts
from frakti_install.bundle import (
    BUNDLE_FORMAT,
    Bundle,
    apply_to_settings,
    artifact_names,
    create_bundle,
    os_packages_for,
)
from frakti_install.config import Settings
from frakti_install.download import Downloader, parse_sha256_file
from frakti_install.engine import Status
from frakti_install.errors import ChecksumMismatch, ConfigError, DownloadError, MissingChecksum
from tests.unit.simhost import SimDownloader, SimMachine, frakti, upstream_hash_files

PROXY_VARS = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
    "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy",
)
ALL_ARTIFACTS = {
    "kubeadm", "kubelet", "kubectl", "crictl", "cni-plugins",
    "frakti", "hypercontainer", "hyperstart",
}
PUBLISHED = ("kubeadm", "kubelet", "kubectl", "cni-plugins")  # a hash file next to the file
HASH_SUFFIXES = (".md5", ".sha1", ".sha256", ".sha512")
GIVEN = ("frakti", "crictl", "hypercontainer", "hyperstart")  # sums the user gives


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ the "connected machine"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    files: Dict[str, bytes]
    seen: List[str]
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.seen.append(self.path)
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Site:
    """Upstream laid out like the real URLs under one local server, per kind."""

    httpd: _Server
    cache: Path
    base: str = ""
    content: Dict[str, Dict[str, bytes]] = field(default_factory=dict)  # fmt -> name -> bytes

    @property
    def mirrors(self) -> Dict[str, str]:
        return {"kubernetes": f"{self.base}/k8s", "github": f"{self.base}/gh",
                "hyper": f"{self.base}/hyper"}

    @property
    def seen(self) -> List[str]:
        with self.httpd.lock:
            return list(self.httpd.seen)

    def artifact_requests(self, since: int = 0) -> List[str]:
        return [p for p in self.seen[since:] if not p.endswith(HASH_SUFFIXES)]

    def settings(self, fmt: str, **overrides: object) -> Settings:
        values: Dict[str, object] = {
            "mirrors": self.mirrors,
            "checksums": {n: sha(self.content[fmt][n]) for n in GIVEN},
            "cache_dir": str(self.cache),
        }
        values.update(overrides)
        return config.validate(Settings(**values))  # type: ignore[arg-type]

    def artifacts(self, settings: Settings, fmt: str) -> Artifacts:
        return Artifacts(settings, settings.versions, "amd64", fmt,
                         lambda: Downloader(Path(settings.cache_dir), retries=0))

    def publish(self, fmt: str) -> None:
        resolver = Artifacts(Settings(mirrors=self.mirrors), versions.resolve(), "amd64", fmt,
                             lambda: None)  # type: ignore[arg-type,return-value]
        self.content[fmt] = {}
        for name in resolver.names():
            artifact = resolver.get(name)
            path = artifact.url[len(self.base):]
            data = SimDownloader.content(artifact.url)  # a real tarball for .tgz/.tar.gz
            self.httpd.files[path] = data
            # only the hash files upstream serves for this release (no .sha256 before
            # Kubernetes 1.16: dl.k8s.io has bare-hex files, GitHub "<sum>  <name>")
            for algorithm in upstream_hash_files(artifact.url):
                digest = hashlib.new(algorithm, data).hexdigest()
                line = digest if "/release/" in path else f"{digest}  {artifact.filename}"
                self.httpd.files[f"{path}.{algorithm}"] = (line + "\n").encode()
            self.content[fmt][name] = data

    def corrupt(self, fmt: str, name: str) -> None:
        resolver = self.artifacts(self.settings(fmt), fmt)
        self.httpd.files[resolver.get(name).url[len(self.base):]] += b"tampered"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    for var in PROXY_VARS:  # 127.0.0.1 must not go through a proxy from the environment
        monkeypatch.delenv(var, raising=False)
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.seen, httpd.lock = {}, [], threading.Lock()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    s = Site(httpd, tmp_path / "connected-cache", base=f"http://127.0.0.1:{httpd.server_address[1]}")
    s.publish("deb")
    s.publish("rpm")
    try:
        yield s
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def make_bundle(site: Site, out: Path, fmt: str = "deb", wheels: Sequence[Path] = (),
                **settings: object) -> Path:
    chosen = site.settings(fmt, **settings)
    return create_bundle(
        out,
        site.artifacts(chosen, fmt),
        family=fmt,
        arch="amd64",
        versions=chosen.versions,
        os_packages=os_packages_for(fmt),
        wheels=wheels,
    )


def members(path: Path) -> Dict[str, bytes]:
    with tarfile.open(path) as tar:
        out = {}
        for m in tar.getmembers():
            assert m.isfile(), m.name
            handle = tar.extractfile(m)
            assert handle is not None
            out[m.name] = handle.read()
        return out


def refuse_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def run_allinone(
    m: SimMachine, settings: Settings, factory: Callable[[], Downloader]
) -> session.Report:
    ctx = m.context(settings)
    ctx.downloader_factory = factory
    return session.execute(plans.allinone(frakti()), ctx, dry_run=False)


def bundle_settings(m: SimMachine, b: Bundle, **overrides: object) -> Settings:
    """What `allinone --bundle` does: the user's settings (no sums given) plus the bundle's."""
    user = m.settings(checksums={}, **overrides)
    assert user.checksums == {}
    b.check_compatible(user.versions, "deb" if m.os_id in ("debian", "ubuntu") else "rpm", "amd64")
    return apply_to_settings(user, b)


# --------------------------------------------------------------------------- what goes in


def test_artifact_names_per_family_and_system() -> None:
    assert set(artifact_names("deb")) == ALL_ARTIFACTS
    assert set(artifact_names("rpm")) == ALL_ARTIFACTS
    assert set(artifact_names("debian")) == ALL_ARTIFACTS
    # Debian 12 takes the CNI plugins from an OS package; Ubuntu 20.04 from the release
    assert set(artifact_names("deb", ("debian", "12"))) == ALL_ARTIFACTS - {"cni-plugins"}
    assert set(artifact_names("deb", ("ubuntu", "20.04"))) == ALL_ARTIFACTS
    assert set(artifact_names("rpm", ("rocky", "9.3"))) == ALL_ARTIFACTS
    with pytest.raises(ConfigError, match="uses rpm packages, not deb"):
        artifact_names("deb", ("centos", "7"))
    with pytest.raises(ConfigError, match="unknown package family 'apk'"):
        artifact_names("apk")
    assert os_packages_for("rpm", ("rocky", "9.3"))["docker"] == ["docker-ce", "docker-ce-cli"]
    assert os_packages_for("deb")["docker"] == ["docker.io"]


# --------------------------------------------------------------------------- create


def test_create_bundle_from_local_server(site: Site, tmp_path: Path) -> None:
    wheel = tmp_path / "frakti_install-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK fake wheel")
    out = tmp_path / "out" / "frakti-bundle.tar.gz"

    assert make_bundle(site, out, "deb", wheels=[wheel]) == out

    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in out.parent.iterdir()) == ["frakti-bundle.tar.gz"], "temp left"
    files = members(out)
    manifest = json.loads(files["manifest.json"])
    assert manifest["format"] == BUNDLE_FORMAT == 1
    assert manifest["created"].endswith("+00:00")
    assert (manifest["family"], manifest["arch"]) == ("deb", "amd64")
    assert manifest["versions"] == versions.resolve().as_dict()
    assert manifest["os_packages"] == os_packages_for("deb")
    assert manifest["os_packages"]["docker"] == ["docker.io"]
    assert manifest["wheels"] == [f"wheels/{wheel.name}"]
    assert set(manifest["artifacts"]) == ALL_ARTIFACTS
    for name, entry in manifest["artifacts"].items():
        data = site.content["deb"][name]
        assert entry["sha256"] == sha(data), name
        assert entry["file"] == f"artifacts/{sha(data)}"
        assert files[entry["file"]] == data, name
        assert entry["url"] == site.base + ("/k8s" if name in ("kubeadm", "kubelet", "kubectl")
                                            else "/hyper" if name.startswith("hyper")
                                            else "/gh") + entry["identity"]
    assert manifest["artifacts"]["hypercontainer"]["identity"] == (
        "/hypercontainer_1.1.0-1_amd64.deb"
    )
    assert manifest["artifacts"]["kubeadm"]["identity"] == (
        "/release/v1.12.10/bin/linux/amd64/kubeadm"
    )
    assert files[f"wheels/{wheel.name}"] == b"PK fake wheel"
    assert set(files) == {"manifest.json", f"wheels/{wheel.name}"} | {
        e["file"] for e in manifest["artifacts"].values()
    }


def test_second_create_downloads_nothing_thanks_to_the_cache(site: Site, tmp_path: Path) -> None:
    first = make_bundle(site, tmp_path / "one.tar.gz")
    assert sorted(site.artifact_requests()) == sorted(
        site.artifacts(site.settings("deb"), "deb").get(n).url[len(site.base):]
        for n in ALL_ARTIFACTS
    )
    before = len(site.seen)

    second = make_bundle(site, tmp_path / "two.tar.gz")

    assert site.artifact_requests(since=before) == []
    assert all(p.endswith(HASH_SUFFIXES) for p in site.seen[before:])  # published sums re-read
    one, two = (json.loads(members(p)["manifest.json"])["artifacts"] for p in (first, second))
    assert one == two

    # the same through Artifacts.fetch directly, with a fresh resolver and downloader
    before = len(site.seen)
    resolver = site.artifacts(site.settings("deb"), "deb")
    for name in sorted(ALL_ARTIFACTS):
        assert resolver.fetch(name).read_bytes() == site.content["deb"][name]
    assert site.artifact_requests(since=before) == []


def test_create_refuses_a_bad_download_and_leaves_no_file(site: Site, tmp_path: Path) -> None:
    site.corrupt("deb", "frakti")
    out = tmp_path / "out" / "b.tar.gz"
    with pytest.raises(ChecksumMismatch):
        make_bundle(site, out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_create_failing_while_writing_keeps_the_old_bundle(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = make_bundle(site, tmp_path / "out" / "b.tar.gz")
    old = out.read_bytes()
    real_add = tarfile.TarFile.add
    added: List[str] = []

    def add_then_fail(self: tarfile.TarFile, name: str, *args: object, **kwargs: object) -> None:
        if added:
            raise OSError(28, "No space left on device")
        added.append(name)
        real_add(self, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tarfile.TarFile, "add", add_then_fail)
    with pytest.raises(OSError, match="No space left"):
        make_bundle(site, out)
    assert added, "the failure must come in the middle of writing"
    assert out.read_bytes() == old
    assert [p.name for p in out.parent.iterdir()] == ["b.tar.gz"], "temp file left behind"


def test_create_refuses_unverified_artifacts(site: Site, tmp_path: Path) -> None:
    sums = {n: sha(site.content["deb"][n]) for n in GIVEN if n != "frakti"}
    out = tmp_path / "b.tar.gz"
    with pytest.raises(MissingChecksum, match="frakti"):
        make_bundle(site, out, checksums=sums)
    with pytest.raises(ConfigError, match="verified files only"):
        make_bundle(site, out, checksums=sums, allow_unverified=("frakti",))
    assert list(tmp_path.glob("*b.tar.gz*")) == []


def test_create_refuses_a_resolver_for_another_family(site: Site, tmp_path: Path) -> None:
    chosen = site.settings("rpm")
    with pytest.raises(ConfigError, match="hypercontainer"):
        create_bundle(tmp_path / "b.tar.gz", site.artifacts(chosen, "rpm"), family="deb",
                      arch="amd64", versions=chosen.versions, os_packages={})
    assert site.seen == []


# --------------------------------------------------------------------------- install offline


@pytest.mark.parametrize("os_id,version,fmt", [("ubuntu", "20.04", "deb"), ("centos", "7", "rpm")])
def test_install_from_bundle_with_network_refused(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, machine: Callable[..., SimMachine],
    os_id: str, version: str, fmt: str,
) -> None:
    bundle_file = make_bundle(site, tmp_path / f"bundle-{fmt}.tar.gz", fmt)
    requests_before = len(site.seen)

    refuse_network(monkeypatch)
    with pytest.raises(requests.ConnectionError, match="network disabled in test"):
        requests.get(site.base + "/k8s/anything", timeout=2)  # the refusal really applies

    b = Bundle.open(bundle_file, tmp_path / "work")
    m = machine(os_id, version)
    report = run_allinone(m, bundle_settings(m, b), b.downloader)

    session.raise_for(report)
    assert report.ok and report.changed
    data = site.content[fmt]
    assert m.p("/usr/bin/frakti").read_bytes() == data["frakti"]
    assert m.p("/usr/bin/kubelet").read_bytes() == data["kubelet"]
    with tarfile.open(fileobj=io.BytesIO(data["crictl"])) as tar:
        crictl = tar.extractfile("./crictl")
        assert crictl is not None and m.p("/usr/bin/crictl").read_bytes() == crictl.read()
    assert m.p("/opt/cni/bin/bridge").exists()  # from the bundle's cni-plugins tarball
    hyper = "hypercontainer" if fmt == "deb" else "hyper-container"
    assert m.state.packages[hyper].startswith("1.1.0")
    assert len(site.seen) == requests_before, "the install reached the server"

    # a re-run changes nothing and fetches nothing more
    again = run_allinone(m, bundle_settings(m, b), b.downloader)
    assert [r.name for r in again.steps if r.status is Status.CHANGE] == []


def test_corrupted_bundle_file_stops_before_installing(
    site: Site, tmp_path: Path, machine: Callable[..., SimMachine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = Bundle.open(make_bundle(site, tmp_path / "b.tar.gz"), tmp_path / "work")
    frakti = b.root / b.manifest["artifacts"]["frakti"]["file"]
    with open(frakti, "ab") as fh:  # damaged after opening: checked on use, not on open
        fh.write(b"\0")
    refuse_network(monkeypatch)
    m = machine("debian", "12")

    report = run_allinone(m, bundle_settings(m, b), b.downloader)

    failed = [r for r in report.steps if r.status is Status.FAIL]
    assert [r.name for r in failed] == ["frakti"]
    with pytest.raises(ChecksumMismatch, match="bundle file artifacts/"):
        session.raise_for(report)
    assert not m.p("/usr/bin/frakti").exists()
    assert not m.p("/usr/bin/kubeadm").exists(), "the run must stop at the failed step"


def test_files_are_hashed_on_first_use_only(site: Site, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = make_bundle(site, tmp_path / "b.tar.gz")
    hashed: List[Path] = []
    real = bundle_module.sha256_of

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(bundle_module, "sha256_of", counting)

    b = Bundle.open(out, tmp_path / "work")
    assert hashed == [], "opening must not hash the artifacts"
    sums = b.checksums()
    d = b.downloader()
    assert b.downloader() is d
    url = "https://example.invalid/frakti"
    assert d.fetch(url, sums["frakti"]).read_bytes() == site.content["deb"]["frakti"]
    assert d.fetch(url, sums["frakti"].upper()) == d.fetch(url, "sha256:" + sums["frakti"])
    assert len(hashed) == 1


def test_bundle_downloader_answers_only_from_the_bundle(site: Site, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    b = Bundle.open(make_bundle(site, tmp_path / "b.tar.gz"), tmp_path / "work")
    refuse_network(monkeypatch)
    d = b.downloader()
    sums = b.checksums()
    # published sums, as the Artifacts layer asks for them, from any mirror
    text = d.fetch_text("https://dl.k8s.io/release/v1.12.10/bin/linux/amd64/kubeadm.sha256")
    assert parse_sha256_file(text, "kubeadm") == sums["kubeadm"]
    # a bundle gives every artifact's sha256 (apply_to_settings), published or not
    resolver = Artifacts(Settings(checksums=sums), versions.resolve(), "amd64", "deb",
                         b.downloader)
    assert resolver.fetch("kubelet").read_bytes() == site.content["deb"]["kubelet"]
    with pytest.raises(DownloadError, match="not in the bundle"):
        d.fetch_text("https://dl.k8s.io/release/v1.12.3/bin/linux/amd64/kubeadm.sha256")
    with pytest.raises(DownloadError, match="not in the bundle"):
        d.fetch_text("https://dl.k8s.io/release/v1.12.10/bin/linux/amd64/kubeadm")
    with pytest.raises(DownloadError, match=r"not in the bundle; the bundle was made for deb"):
        d.fetch("https://github.com/x/frakti", "0" * 64)
    with pytest.raises(DownloadError, match="verified files only"):
        d.fetch_unverified("https://github.com/x/frakti")


# --------------------------------------------------------------------------- fit and settings


def test_bundle_for_the_other_family_is_refused(site: Site, tmp_path: Path) -> None:
    b = Bundle.open(make_bundle(site, tmp_path / "rpm.tar.gz", "rpm"), tmp_path / "work")
    wanted = versions.resolve()
    b.check_compatible(wanted, "rpm", "amd64")  # fits: no error

    with pytest.raises(ConfigError) as info:
        b.check_compatible(wanted, "deb", "amd64")
    assert "made for rpm packages (rhel family), this host uses deb packages" in info.value.message
    assert "bundle create --family deb --arch amd64 --version-set 1.12" in info.value.hint

    with pytest.raises(ConfigError) as info:
        b.check_compatible(wanted, "rpm", "arm64")
    assert "made for amd64, this host is arm64" in info.value.message
    assert "--arch arm64 --version-set 1.12" in info.value.hint

    with pytest.raises(ConfigError) as info:
        b.check_compatible(versions.resolve("1.12", kubernetes="v1.12.3"), "rpm", "amd64")
    assert "kubernetes v1.12.10 in the bundle, v1.12.3 wanted" in info.value.message
    assert "--version-set 1.12 --kubernetes-version v1.12.3" in info.value.hint
    assert "Or install the bundle's versions: add --version-set 1.12" in info.value.hint


def test_apply_to_settings_merges_and_refuses_conflicts(site: Site, tmp_path: Path) -> None:
    b = Bundle.open(make_bundle(site, tmp_path / "b.tar.gz"), tmp_path / "work")
    sums = b.checksums()
    assert set(sums) == ALL_ARTIFACTS

    merged = apply_to_settings(Settings(streaming_port=22600), b)
    assert merged.checksums == sums and merged.streaming_port == 22600
    assert config.validate(merged) is merged

    same = apply_to_settings(Settings(checksums={"frakti": sums["frakti"]}), b)
    assert same.checksums == sums

    other = "f" * 64
    with pytest.raises(ConfigError) as info:
        apply_to_settings(Settings(checksums={"frakti": other}), b)
    assert other in info.value.message and sums["frakti"] in info.value.message


# ------------------------------------------------------------------ unsafe or broken bundles


def _tar(path: Path, entries: List[tarfile.TarInfo], data: Optional[Dict[str, bytes]] = None,
         ) -> Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as tar:
        for info in entries:
            body = data.get(info.name)
            if body is not None:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("member", [
    _member("../evil"),
    _member("/tmp/evil"),
    _member("artifacts/../../evil"),
    _member("link", tarfile.SYMTYPE, "/etc/passwd"),
    _member("hard", tarfile.LNKTYPE, "manifest.json"),
    _member("dev", tarfile.CHRTYPE),
    _member("fifo", tarfile.FIFOTYPE),
], ids=["dotdot", "absolute", "inner-dotdot", "symlink", "hardlink", "device", "fifo"])
def test_tar_slip_members_are_refused(tmp_path: Path, member: tarfile.TarInfo) -> None:
    manifest = json.dumps({"format": 1}).encode()
    evil = _tar(tmp_path / "evil.tar.gz", [_member("manifest.json"), member],
                {"manifest.json": manifest, member.name: b"pwned"})
    work = tmp_path / "deep" / "work"
    with pytest.raises(ConfigError) as info:
        Bundle.open(evil, work)
    assert repr(member.name) in info.value.message
    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()
    assert list(work.iterdir()) == [], "a refused bundle leaves nothing extracted"


def test_broken_bundles_are_config_errors(site: Site, tmp_path: Path) -> None:
    work = tmp_path / "work"
    no_manifest = _tar(tmp_path / "a.tar.gz", [_member("artifacts/x")], {"artifacts/x": b"x"})
    with pytest.raises(ConfigError, match="not a frakti-install bundle: it has no manifest.json"):
        Bundle.open(no_manifest, work)

    garbled = _tar(tmp_path / "b.tar.gz", [_member("manifest.json")], {"manifest.json": b"{nope"})
    with pytest.raises(ConfigError, match="damaged manifest.json: not valid JSON"):
        Bundle.open(garbled, work)

    future = _tar(tmp_path / "c.tar.gz", [_member("manifest.json")],
                  {"manifest.json": json.dumps({"format": 2}).encode()})
    with pytest.raises(ConfigError, match="has format 2; this frakti-install reads format 1"):
        Bundle.open(future, work)

    not_a_tar = tmp_path / "d.tar.gz"
    not_a_tar.write_bytes(b"this is not a tarball at all")
    with pytest.raises(ConfigError, match="cannot read the bundle"):
        Bundle.open(not_a_tar, work)

    with pytest.raises(ConfigError, match="does not exist"):
        Bundle.open(tmp_path / "missing.tar.gz", work)

    # an extracted directory with a file gone
    good = Bundle.open(make_bundle(site, tmp_path / "good.tar.gz"), work)
    assert Bundle.open(good.root, tmp_path / "unused").checksums() == good.checksums()
    os.unlink(good.root / good.manifest["artifacts"]["kubelet"]["file"])
    with pytest.raises(ConfigError, match=r"incomplete: artifact kubelet \(artifacts/"):
        Bundle.open(good.root, work)
    assert not (tmp_path / "unused").exists(), "a directory bundle is used in place"


def test_hand_made_tar_of_an_extracted_bundle_opens(site: Site, tmp_path: Path) -> None:
    """`tar czf b.tgz -C dir .` (./ names) and `tar czf b.tgz dir` (one top directory)."""
    good = Bundle.open(make_bundle(site, tmp_path / "good.tar.gz"), tmp_path / "work")
    for arcname in (".", "frakti-bundle"):
        repacked = tmp_path / f"repacked-{arcname.strip('.') or 'dot'}.tgz"
        with tarfile.open(repacked, "w:gz") as tar:
            tar.add(str(good.root), arcname=arcname)
        again = Bundle.open(repacked, tmp_path / "work2")
        assert again.checksums() == good.checksums()
        frakti = again.downloader().fetch("u", again.checksums()["frakti"])
        assert frakti.read_bytes() == site.content["deb"]["frakti"]
