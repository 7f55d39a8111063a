"""Tests of the download layer against real HTTP servers on 127.0.0.1 (no other network)."""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

import pytest

from frakti_install import download
from frakti_install.download import Downloader, Progress, parse_sha256_file
from frakti_install.errors import ChecksumMismatch, DownloadError
from frakti_install.fsio import sha256_of

PROXY_VARS = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
    "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy",
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- test server


@dataclass
class Seen:
    method: str
    path: str
    headers: Dict[str, str]


App = Callable[["_Handler", int], object]  # (handler, index of this request for its path)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: Dict[str, App]
    seen: List[Seen]
    stop: threading.Event
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            n = sum(1 for s in srv.seen if s.path == self.path)
            srv.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
        app = srv.routes.get(self.path)
        if app is None:
            self.send_error(404)
            return
        app(self, n)

    def log_message(self, format: str, *args: object) -> None:
        pass

    # helpers for apps -------------------------------------------------------

    def send_body(self, data: bytes, status: int = 200,
                  headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def send_ranged(self, data: bytes) -> None:
        """Serve data honouring ``Range: bytes=N-`` like a real file server."""
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        if not match:
            self.send_body(data)
            return
        start = int(match.group(1))
        if start >= len(data):
            self.send_body(b"", 416, {"Content-Range": f"bytes */{len(data)}"})
            return
        rng = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self.send_body(data[start:], 206, {"Content-Range": rng})


@dataclass
class Server:
    httpd: _Server
    base: str = ""
    routes: Dict[str, App] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def seen(self) -> List[Seen]:
        return self.httpd.seen

    def count(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    def serve(self, path: str, data: bytes) -> str:
        self.routes[path] = lambda h, n: h.send_ranged(data)
        return self.url(path)


def _start(handler: type) -> Tuple[_Server, threading.Thread]:
    httpd = _Server(("127.0.0.1", 0), handler)
    httpd.seen = []
    httpd.routes = {}
    httpd.stop = threading.Event()
    httpd.lock = threading.Lock()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return httpd, thread


def _stop(httpd: _Server, thread: threading.Thread) -> None:
    httpd.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> List[float]:
    """No proxy from the environment; retries sleep nowhere (the delays are recorded)."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    sleeps: List[float] = []
    monkeypatch.setattr(download, "_sleep", sleeps.append)
    return sleeps


@pytest.fixture
def sleeps(_hermetic: List[float]) -> List[float]:
    return _hermetic


@pytest.fixture
def server() -> Iterator[Server]:
    httpd, thread = _start(_Handler)
    srv = Server(httpd, base=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.routes = srv.routes
    try:
        yield srv
    finally:
        _stop(httpd, thread)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _partials(cache: Path) -> List[Path]:
    partial = cache / "partial"
    return sorted(partial.iterdir()) if partial.is_dir() else []


# --------------------------------------------------------------------------- fetch


def test_good_file_lands_in_content_addressed_cache(server: Server, cache: Path) -> None:
    data = os.urandom(200_000)
    url = server.serve("/kubeadm", data)

    old_umask = os.umask(0o077)  # modes must not depend on the caller's umask
    try:
        path = Downloader(cache).fetch(url, sha(data).upper())
    finally:
        os.umask(old_umask)

    assert path == cache / "sha256" / sha(data)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    for d in (cache, cache / "sha256", cache / "partial"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert _partials(cache) == []
    assert server.count("/kubeadm") == 1
    assert server.seen[0].headers.get("Accept-Encoding") == "identity"
    assert "Range" not in server.seen[0].headers


def test_corrupted_file_raises_mismatch_and_leaves_nothing(
        server: Server, cache: Path, sleeps: List[float]) -> None:
    good = os.urandom(50_000)
    bad = bytearray(good)
    bad[100] ^= 0xFF
    url = server.serve("/kubelet", bytes(bad))

    with pytest.raises(ChecksumMismatch) as info:
        Downloader(cache).fetch(url, sha(good))

    assert info.value.expected == sha(good)
    assert info.value.actual == sha(bytes(bad))
    assert info.value.url == url
    assert not (cache / "sha256" / sha(good)).exists()
    assert list((cache / "sha256").iterdir()) == []
    assert _partials(cache) == []
    assert server.count("/kubelet") == 1  # a wrong sum is not retried
    assert sleeps == []


def test_truncated_transfer_is_resumed_with_range(
        server: Server, cache: Path, sleeps: List[float]) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)  # several chunks
    half = len(data) // 2

    def app(h: _Handler, n: int) -> None:
        if n == 0:  # announce everything, send half, hang up
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[:half])
            h.wfile.flush()
            h.close_connection = True
        else:
            h.send_ranged(data)

    server.routes["/big"] = app
    events: List[Progress] = []
    path = Downloader(cache, backoff=0.25, on_progress=events.append).fetch(
        server.url("/big"), sha(data))

    assert path.read_bytes() == data
    assert server.count("/big") == 2
    assert "Range" not in server.seen[0].headers
    assert server.seen[1].headers.get("Range") == f"bytes={half}-"
    assert sleeps == [0.25]
    # the second attempt starts by reporting the resumed part as already done
    assert [e.done for e in events].count(half) == 2
    assert events[-1].done == len(data) and events[-1].total == len(data)
    assert _partials(cache) == []


def test_interrupted_part_from_earlier_run_is_resumed(server: Server, cache: Path) -> None:
    data = os.urandom(100_000)
    url = server.serve("/crictl.tar.gz", data)
    (cache / "partial").mkdir(parents=True)
    (cache / "partial" / f"{sha(data)}.part").write_bytes(data[:40_000])

    path = Downloader(cache).fetch(url, sha(data))

    assert path.read_bytes() == data
    assert server.count("/crictl.tar.gz") == 1
    assert server.seen[0].headers.get("Range") == "bytes=40000-"


def test_server_ignoring_range_restarts_from_zero(server: Server, cache: Path) -> None:
    data = os.urandom(100_000)
    server.routes["/f"] = lambda h, n: h.send_body(data)  # always 200, whole body
    (cache / "partial").mkdir(parents=True)
    (cache / "partial" / f"{sha(data)}.part").write_bytes(b"stale garbage" * 100)

    path = Downloader(cache).fetch(server.url("/f"), sha(data))

    assert path.read_bytes() == data
    assert server.count("/f") == 1
    assert server.seen[0].headers.get("Range") == "bytes=1300-"


def test_416_restarts_from_zero(server: Server, cache: Path) -> None:
    data = os.urandom(10_000)
    url = server.serve("/f", data)
    (cache / "partial").mkdir(parents=True)
    (cache / "partial" / f"{sha(data)}.part").write_bytes(os.urandom(20_000))  # past the end

    path = Downloader(cache).fetch(url, sha(data))

    assert path.read_bytes() == data
    assert [s.headers.get("Range") for s in server.seen] == ["bytes=20000-", None]


def test_complete_part_is_installed_without_network(server: Server, cache: Path) -> None:
    data = os.urandom(10_000)
    (cache / "partial").mkdir(parents=True)
    (cache / "partial" / f"{sha(data)}.part").write_bytes(data)

    path = Downloader(cache).fetch(server.url("/never"), sha(data))

    assert path.read_bytes() == data
    assert server.seen == []


@pytest.mark.parametrize("status", [404, 403, 401, 410])
def test_client_errors_fail_at_once(
        server: Server, cache: Path, sleeps: List[float], status: int) -> None:
    server.routes["/v9.9.9/kubeadm"] = lambda h, n: h.send_body(b"no", status)
    url = server.url("/v9.9.9/kubeadm")

    with pytest.raises(DownloadError) as info:
        Downloader(cache, retries=4).fetch(url, "a" * 64)

    assert server.count("/v9.9.9/kubeadm") == 1
    assert sleeps == []
    message = str(info.value)
    assert url in message and str(status) in message
    assert "--mirror" in info.value.hint
    assert _partials(cache) == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_retried(
        server: Server, cache: Path, sleeps: List[float], status: int) -> None:
    data = os.urandom(5_000)

    def app(h: _Handler, n: int) -> None:
        if n == 0:
            h.send_body(b"oops", status)
        else:
            h.send_body(data)

    server.routes["/f"] = app
    path = Downloader(cache, backoff=0.5).fetch(server.url("/f"), sha(data))

    assert path.read_bytes() == data
    assert server.count("/f") == 2
    assert sleeps == [0.5]


def test_retry_after_is_honoured(server: Server, cache: Path, sleeps: List[float]) -> None:
    data = b"x" * 100

    def app(h: _Handler, n: int) -> None:
        if n == 0:
            h.send_body(b"slow down", 429, {"Retry-After": "3"})
        else:
            h.send_body(data)

    server.routes["/f"] = app
    Downloader(cache, backoff=0.5).fetch(server.url("/f"), sha(data))
    assert sleeps == [3.0]


def test_persistent_5xx_gives_up_after_retries(
        server: Server, cache: Path, sleeps: List[float]) -> None:
    server.routes["/f"] = lambda h, n: h.send_body(b"down", 502)

    with pytest.raises(DownloadError) as info:
        Downloader(cache, retries=3, backoff=0.5).fetch(server.url("/f"), "b" * 64)

    assert server.count("/f") == 4
    assert sleeps == [0.5, 1.0, 2.0]  # backoff * 2**attempt
    message = str(info.value)
    assert server.url("/f") in message
    assert "4 attempts" in message
    assert "502" in message


def test_connection_refused_is_retried_then_reported(cache: Path, sleeps: List[float]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/f"

    with pytest.raises(DownloadError) as info:
        Downloader(cache, retries=2, backoff=0.1).fetch(url, "c" * 64)

    assert sleeps == pytest.approx([0.1, 0.2])
    assert "3 attempts" in str(info.value)
    assert "connection" in str(info.value).lower()


def test_tls_errors_are_not_retried(server: Server, cache: Path, sleeps: List[float]) -> None:
    url = server.url("/f").replace("http://", "https://")  # TLS to a plain HTTP server

    with pytest.raises(DownloadError, match="TLS error") as info:
        Downloader(cache, retries=3).fetch(url, "f" * 64)

    assert sleeps == []
    assert url in str(info.value)


def test_stall_mid_body_hits_read_timeout(server: Server, cache: Path) -> None:
    data = os.urandom(2 * (1 << 20))
    sent = (1 << 20) + 1000  # one whole chunk and a bit

    def app(h: _Handler, n: int) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[:sent])
        h.wfile.flush()
        h.server.stop.wait(10)  # stall far past the client's timeout

    server.routes["/slow"] = app
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        Downloader(cache, timeout=0.5, retries=1).fetch(server.url("/slow"), sha(data))
    elapsed = time.monotonic() - started

    assert elapsed < 3.0
    assert server.count("/slow") == 2
    assert server.seen[1].headers.get("Range") == f"bytes={1 << 20}-"  # resumed
    assert "timed out" in str(info.value)
    assert "2 attempts" in str(info.value)
    # the complete chunks that arrived are kept for the next run (the tail of a
    # chunk cut by a timeout is not)
    assert [p.stat().st_size for p in _partials(cache)] == [1 << 20]


def test_stall_before_headers_hits_read_timeout(server: Server, cache: Path) -> None:
    server.routes["/slow"] = lambda h, n: h.server.stop.wait(10)
    started = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        Downloader(cache, timeout=0.5, retries=0).fetch(server.url("/slow"), "d" * 64)
    assert time.monotonic() - started < 2.0
    assert server.count("/slow") == 1


def test_second_fetch_is_served_from_cache(server: Server, cache: Path) -> None:
    data = os.urandom(10_000)
    url = server.serve("/f", data)
    dl = Downloader(cache)
    assert dl.cached(sha(data)) is None

    first = dl.fetch(url, sha(data))
    second = Downloader(cache).fetch(url.replace("/f", "/elsewhere"), sha(data))  # mirror

    assert first == second == dl.cached(sha(data))
    assert second.read_bytes() == data
    assert server.count("/f") == 1
    assert len(server.seen) == 1


def test_corrupted_cache_entry_is_fetched_again(server: Server, cache: Path) -> None:
    data = os.urandom(10_000)
    url = server.serve("/f", data)
    dl = Downloader(cache)
    path = dl.fetch(url, sha(data))
    path.write_bytes(b"bit rot")
    assert dl.cached(sha(data)) == path  # cached() does not re-hash

    again = dl.fetch(url, sha(data))

    assert again.read_bytes() == data
    assert server.count("/f") == 2


def test_progress_events(server: Server, cache: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 500_000)
    url = server.serve("/dir/frakti", data)
    events: List[Progress] = []

    Downloader(cache, on_progress=events.append).fetch(url, sha(data))

    assert len(events) >= 4
    dones = [e.done for e in events]
    assert dones[0] == 0  # an event before the first byte, so a bar can appear at once
    assert dones == sorted(set(dones))  # strictly increasing
    assert dones[-1] == len(data)
    assert all(e.total == len(data) for e in events)
    assert all(e.name == "frakti" and e.url == url for e in events)


def test_progress_without_length_has_no_total(server: Server, cache: Path) -> None:
    data = os.urandom(300_000)

    def app(h: _Handler, n: int) -> None:  # body delimited by closing the connection
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(data)
        h.close_connection = True

    server.routes["/f"] = app
    events: List[Progress] = []
    path = Downloader(cache, on_progress=events.append).fetch(server.url("/f"), sha(data))

    assert path.read_bytes() == data
    assert events and all(e.total is None for e in events)
    assert events[-1].done == len(data)


def test_content_encoding_is_not_decoded(server: Server, cache: Path) -> None:
    """A .tar.gz served with Content-Encoding: gzip is stored as published."""
    raw = gzip.compress(b"payload " * 1000)
    server.routes["/a.tar.gz"] = lambda h, n: h.send_body(raw, 200, {"Content-Encoding": "gzip"})

    path = Downloader(cache).fetch(server.url("/a.tar.gz"), sha(raw))

    assert path.read_bytes() == raw


def test_userinfo_never_appears_in_errors(server: Server, cache: Path) -> None:
    server.routes["/secret"] = lambda h, n: h.send_body(b"", 404)
    url = server.url("/secret").replace("http://", "http://alice:s3cr3t@")

    with pytest.raises(DownloadError) as info:
        Downloader(cache).fetch(url, "e" * 64)

    assert server.count("/secret") == 1
    message = str(info.value)
    assert "s3cr3t" not in message and "alice" not in message
    assert server.url("/secret") in message

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as info:
        Downloader(cache, retries=0).fetch(f"http://alice:s3cr3t@127.0.0.1:{port}/x", "e" * 64)
    assert "s3cr3t" not in str(info.value) and "alice" not in str(info.value)


def test_mismatch_url_has_no_userinfo(server: Server, cache: Path) -> None:
    url = server.serve("/f", b"real")
    with pytest.raises(ChecksumMismatch) as info:
        Downloader(cache).fetch(url.replace("http://", "http://bob:pw123@"), sha(b"other"))
    assert info.value.url == url
    assert "pw123" not in str(info.value)


def test_invalid_sum_is_rejected_before_any_request(server: Server, cache: Path) -> None:
    url = server.serve("/f", b"x")
    for bad in ("", "abc", "g" * 64, "a" * 63):
        with pytest.raises(DownloadError, match="invalid sha256"):
            Downloader(cache).fetch(url, bad)
    assert server.seen == []


# --------------------------------------------------------------------------- proxy


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forward proxy: records the absolute-form request, forwards to a mapped origin."""

    protocol_version = "HTTP/1.1"
    server: _Server
    upstream: Dict[str, Tuple[str, int]] = {}

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
        target = urlsplit(self.path)
        origin = self.upstream.get(target.hostname or "")
        if not self.path.startswith("http://") or origin is None:
            self.send_error(502)
            return
        conn = http.client.HTTPConnection(*origin, timeout=5)
        skip = {"host", "proxy-connection", "connection"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        conn.request("GET", target.path or "/", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in ("content-length", "connection", "transfer-encoding",
                                   "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy(server: Server) -> Iterator[Tuple[str, List[Seen]]]:
    origin = ("127.0.0.1", server.httpd.server_address[1])

    class Handler(_ProxyHandler):
        upstream = {"artifacts.invalid": origin, "127.0.0.1": origin}

    httpd, thread = _start(Handler)
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.seen
    finally:
        _stop(httpd, thread)


def test_http_proxy_from_environment_is_used(
        server: Server, cache: Path, proxy: Tuple[str, List[Seen]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_url, proxied = proxy
    data = os.urandom(20_000)
    server.serve("/file", data)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)

    path = Downloader(cache, timeout=5).fetch("http://artifacts.invalid/file", sha(data))

    assert path.read_bytes() == data
    assert [s.path for s in proxied] == ["http://artifacts.invalid/file"]
    assert proxied[0].headers.get("Host") == "artifacts.invalid"
    assert server.count("/file") == 1  # reached the origin through the proxy


def test_no_proxy_bypasses_the_proxy(
        server: Server, cache: Path, proxy: Tuple[str, List[Seen]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_url, proxied = proxy
    data = b"direct"
    url = server.serve("/file", data)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    assert Downloader(cache).fetch(url, sha(data)).read_bytes() == data
    assert proxied == []
    assert server.count("/file") == 1


# --------------------------------------------------------------------------- fetch_text


def test_fetch_text(server: Server, cache: Path, sleeps: List[float]) -> None:
    text = f"{'ab' * 32}  kubeadm\n"

    def app(h: _Handler, n: int) -> None:
        if n == 0:
            h.send_body(b"busy", 503)
        else:
            h.send_body(text.encode(), 200, {"Content-Type": "text/plain"})

    server.routes["/kubeadm.sha256"] = app
    got = Downloader(cache).fetch_text(server.url("/kubeadm.sha256"))

    assert got == text
    assert server.count("/kubeadm.sha256") == 2
    assert sleeps == [0.5]
    assert parse_sha256_file(got, "kubeadm") == "ab" * 32


def test_fetch_text_refuses_large_bodies(server: Server, cache: Path) -> None:
    server.routes["/big"] = lambda h, n: h.send_body(b"x" * 5000)

    def unsized(h: _Handler, n: int) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(b"y" * 200_000)
        h.close_connection = True

    server.routes["/unsized"] = unsized
    dl = Downloader(cache)
    with pytest.raises(DownloadError, match="larger than 1000 bytes"):
        dl.fetch_text(server.url("/big"), max_bytes=1000)
    with pytest.raises(DownloadError, match="larger than 1000 bytes"):
        dl.fetch_text(server.url("/unsized"), max_bytes=1000)
    assert server.count("/big") == 1 and server.count("/unsized") == 1
    assert dl.fetch_text(server.url("/big"), max_bytes=5000) == "x" * 5000


def test_fetch_text_404(server: Server, cache: Path) -> None:
    with pytest.raises(DownloadError, match="404"):
        Downloader(cache).fetch_text(server.url("/missing.sha256"))
    assert server.count("/missing.sha256") == 1


# --------------------------------------------------------------------------- helpers


SUM_A = "0123456789abcdef" * 4
SUM_B = "fedcba9876543210" * 4


@pytest.mark.parametrize("text, filename, expected", [
    (SUM_A, "", SUM_A),
    (SUM_A.upper() + "\n", "whatever", SUM_A),
    (f"{SUM_A}  kubeadm\n", "kubeadm", SUM_A),
    (f"{SUM_A} *kubeadm\n", "", SUM_A),
    (f"{SUM_A}  other-name\n", "kubeadm", SUM_A),  # a single entry is taken
    (f"{SUM_A}  kubeadm\n{SUM_B}  kubelet\n", "kubelet", SUM_B),
    (f"{SUM_A}  ./bin/kubeadm\n{SUM_B}  ./bin/kubelet\n", "kubeadm", SUM_A),
    (f"# sums\n\n{SUM_A}  a.tgz\n{SUM_B}  b.tgz\n", "https://m/x/b.tgz", SUM_B),
    (f"SHA256 (a.tgz) = {SUM_A}\nSHA256 (b.tgz) = {SUM_B}\n", "a.tgz", SUM_A),
    (f"{SUM_A}  a\n{SUM_A}  b\n", "", SUM_A),  # same sum twice: unambiguous
])
def test_parse_sha256_file(text: str, filename: str, expected: str) -> None:
    assert parse_sha256_file(text, filename) == expected


@pytest.mark.parametrize("text, filename", [
    ("", ""),
    ("\n  \n# only a comment\n", ""),
    ("<html>404 Not Found</html>", ""),
    ("abc123  kubeadm", "kubeadm"),  # too short
    (SUM_A + "00", ""),  # too long
    ("z" * 64, ""),  # not hex
    (f"{SUM_A}  a\n{SUM_B}  b\n", ""),  # ambiguous
    (f"{SUM_A}  a\n{SUM_B}  b\n", "c"),  # no entry for c
])
def test_parse_sha256_file_rejects_garbage(text: str, filename: str) -> None:
    with pytest.raises(DownloadError):
        parse_sha256_file(text, filename)


def test_sha256_of_streams_large_files(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 7)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_of(path) == sha(data)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_of(empty) == sha(b"")


def test_unverified_fetch_stores_under_actual_sum_and_never_resumes(
        server: Server, cache: Path) -> None:
    data = os.urandom(30_000)
    url = server.serve("/frakti", data)
    partial = cache / "partial"
    partial.mkdir(parents=True)
    # a leftover partial of unknown bytes must not be resumed
    url_key = hashlib.sha256(url.encode()).hexdigest()[:16]
    (partial / f"unverified-{url_key}.part").write_bytes(b"x" * 10)

    path = Downloader(cache).fetch_unverified(url)

    assert path == cache / "sha256" / sha(data)
    assert path.read_bytes() == data
    assert "Range" not in server.seen[0].headers
    assert _partials(cache) == []


# --------------------------------------------------------------------------- sha512
# dl.k8s.io publishes .sha512 (no .sha256) beside the v1.12.x binaries
# (kubernetes/release#630, kubernetes/kubernetes#68555): a file can be verified by
# its sha512 and still be cached by its sha256.


def test_fetch_verifies_sha512_and_caches_by_sha256(server: Server, cache: Path) -> None:
    data = os.urandom(3 * download.CHUNK_SIZE + 17)
    url = server.serve("/v1.12.10/kubeadm", data)
    want = download.Digest("sha512", hashlib.sha512(data).hexdigest())
    dl = Downloader(cache)

    path = dl.fetch(url, want)

    assert path == cache / "sha256" / sha(data) and path.read_bytes() == data
    assert (cache / "sha512" / want.hexdigest).read_text().strip() == sha(data)
    assert dl.cached(sha(data)) == path
    before = len(server.seen)
    assert dl.fetch(url, want) == path  # from the cache: no request
    assert len(server.seen) == before


def test_sha512_mismatch_names_the_algorithm(server: Server, cache: Path) -> None:
    url = server.serve("/v1.12.10/kubelet", b"tampered")
    with pytest.raises(ChecksumMismatch, match="sha512 mismatch") as info:
        Downloader(cache, retries=0).fetch(url, download.Digest("sha512", "0" * 128))
    assert info.value.actual == hashlib.sha512(b"tampered").hexdigest()
    assert not list((cache / "sha256").glob("*"))


def test_parse_sha512_file() -> None:
    digest = hashlib.sha512(b"x").hexdigest()
    assert download.parse_sum_file(digest + "\n", "kubeadm", "sha512") == digest
    assert download.parse_sum_file(f"{digest}  kubeadm\n", "kubeadm", "sha512") == digest
    with pytest.raises(DownloadError, match="not a sha512 checksum file"):
        download.parse_sum_file("ab" * 32 + "\n", "kubeadm", "sha512")
