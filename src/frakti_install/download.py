"""Download layer: verified, resumable, content-addressed fetches over HTTP(S).

Engine code: no UI here. Progress is reported through a callback receiving
:class:`Progress` events; the CLI decides how to draw them.

Cache layout (content-addressed by sha256, so mirrors share it)::

    cache_dir/
      sha256/<hexsum>          verified files, mode 0644
      sha512/<hexsum>          for a file verified by its sha512: the sha256 it has
      partial/<hexsum>.part    interrupted transfers, resumed with a Range request
                               (sha512-<hexsum>.part for a sha512-verified one)

The expected sum is a :class:`Digest` (its algorithm and hex value; a plain
string is a sha256). A sha512-verified download is hashed with sha256 in the
same pass and stored under that sha256, so every file of the cache is found
by its sha256 whatever upstream published for it.

Retry policy (``fetch`` and ``fetch_text``): connection errors, timeouts,
truncated bodies and HTTP 5xx/429 are retried ``retries`` times, sleeping
``backoff * 2**attempt`` seconds in between (at least the server's numeric
Retry-After on 429/5xx, capped at 60 s). Any other 4xx, TLS errors and bad
URLs fail at once. A checksum mismatch is never retried. ``retries`` counts
retries, so a fetch makes at most ``retries + 1`` attempts.

Proxies come from requests' own environment handling (HTTP_PROXY,
HTTPS_PROXY, NO_PROXY), so ``session.trust_env`` must stay True.

The body of a file download is written exactly as it travels (no
Content-Encoding decoding): the published sum is over the stored bytes, and a
Range offset counts those bytes too. ``Accept-Encoding: identity`` is sent so
that well-behaved servers do not encode in the first place.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import urlsplit, urlunsplit

import requests
from urllib3.exceptions import HTTPError as _Urllib3Error
from urllib3.exceptions import ProtocolError as _Urllib3ProtocolError
from urllib3.exceptions import TimeoutError as _Urllib3TimeoutError

from frakti_install import fsio
from frakti_install.errors import ChecksumMismatch, DownloadError

__all__ = [
    "ALGORITHMS",
    "CHUNK_SIZE",
    "Digest",
    "Downloader",
    "Progress",
    "parse_sha256_file",
    "parse_sum_file",
]

CHUNK_SIZE = 1 << 20  # 1 MiB: bytes read, hashed and written per step
FILE_MODE = 0o644
DIR_MODE = 0o755
MAX_RETRY_AFTER = 60.0  # never let a server make us sleep longer than this per retry
USER_AGENT = "frakti-install"

# The digests a published or given sum may be in, with their hex length.
ALGORITHMS = {"sha256": 64, "sha512": 128}
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_HEX = {name: re.compile(rf"^[0-9a-fA-F]{{{n}}}$") for name, n in ALGORITHMS.items()}
# "<sum>  <name>" (GNU text), "<sum> *<name>" (GNU binary), "<sum> <name>"
_GNU_LINE = {
    name: re.compile(rf"^([0-9a-fA-F]{{{n}}})(?:\s+\*?(.*))?$") for name, n in ALGORITHMS.items()
}
# "SHA256 (<name>) = <sum>" (BSD / openssl style)
_BSD_LINE = {
    name: re.compile(
        rf"^{name.upper()}\s*\((.*)\)\s*=\s*([0-9a-fA-F]{{{n}}})$", re.IGNORECASE
    )
    for name, n in ALGORITHMS.items()
}
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)

# Request errors that another attempt cannot fix.
_PERMANENT_REQUEST_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
    requests.exceptions.TooManyRedirects,
)

# Sleep between retries. Module-level so tests can replace it
# (monkeypatch.setattr(download, "_sleep", fake)); looked up at call time.
_sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Progress:
    """One step of a file transfer, emitted after every chunk written."""

    url: str  # userinfo stripped
    name: str  # file basename
    done: int  # bytes so far (including a resumed part)
    total: Optional[int]  # None when the server sends no length


class _Transient(Exception):
    """An attempt failed in a way worth retrying; the message is the cause."""

    def __init__(self, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Digest:
    """An expected sum: its algorithm (a key of ALGORITHMS) and lowercase hex value."""

    algorithm: str
    hexdigest: str

    @classmethod
    def of(cls, value: Union[str, Digest]) -> Digest:
        """A Digest as given; a string is a sha256 (optionally "sha256:"-prefixed)."""
        if isinstance(value, Digest):
            return cls(value.algorithm, _normalize_sum(value.hexdigest, value.algorithm))
        return cls("sha256", _normalize_sum(value))

    def new(self) -> Any:
        return hashlib.new(self.algorithm)


# --------------------------------------------------------------------------- helpers


def _hash_stream(fh: IO[bytes], *digests: Any) -> int:
    size = 0
    while True:
        block = fh.read(CHUNK_SIZE)
        if not block:
            return size
        for digest in digests:
            digest.update(block)
        size += len(block)


def _hash_file(path: Path, algorithms: Tuple[str, ...]) -> Dict[str, str]:
    """Several digests of a file in one read."""
    digests = [hashlib.new(algorithm) for algorithm in algorithms]
    with open(path, "rb") as fh:
        _hash_stream(fh, *digests)
    return {algorithm: d.hexdigest() for algorithm, d in zip(algorithms, digests)}


def _mismatch(safe: str, want: Digest, actual: str) -> ChecksumMismatch:
    error = ChecksumMismatch(safe, want.hexdigest, actual)
    if want.algorithm != "sha256":  # the message names the algorithm that was checked
        error.message = error.message.replace("sha256 mismatch", f"{want.algorithm} mismatch", 1)
    return error


def _normalize_sum(sha256: str, algorithm: str = "sha256") -> str:
    value = sha256.strip()
    if algorithm not in _HEX:
        raise DownloadError(f"unknown digest algorithm {algorithm!r}")
    if value.lower().startswith(algorithm + ":"):
        value = value[len(algorithm) + 1:]
    if not _HEX[algorithm].match(value):
        raise DownloadError(
            f"invalid {algorithm} {sha256!r}: expected {ALGORITHMS[algorithm]} "
            "hexadecimal characters",
            hint=f"Give the checksum as printed by '{algorithm}sum'.",
        )
    return value.lower()


def parse_sha256_file(text: str, filename: str = "") -> str:
    """The sum in the text of a ``.sha256`` / ``SHA256SUMS`` file (see parse_sum_file)."""
    return parse_sum_file(text, filename, "sha256")


def parse_sum_file(text: str, filename: str = "", algorithm: str = "sha256") -> str:
    """The sum in the text of a ``.sha256``/``.sha512`` (or ``SHA256SUMS``) file, lowercased.

    Accepts a bare hex sum, ``sha256sum`` lines (``<sum>  <name>``, ``<sum> *<name>``)
    and BSD lines (``SHA256 (<name>) = <sum>``); blank lines and ``#`` comments
    are skipped. With several entries, the one whose name (basename) equals
    ``filename`` is chosen; a single entry is taken whatever name it gives.
    Raises DownloadError when no valid sum can be chosen.
    """
    entries: List[Tuple[str, str]] = []  # (sum, name)
    for raw in text.splitlines():
        line = raw.strip().lstrip("\ufeff")
        if not line or line.startswith("#"):
            continue
        gnu = _GNU_LINE[algorithm].match(line)
        if gnu:
            entries.append((gnu.group(1).lower(), (gnu.group(2) or "").strip()))
            continue
        bsd = _BSD_LINE[algorithm].match(line)
        if bsd:
            entries.append((bsd.group(2).lower(), bsd.group(1).strip()))
            continue
        raise DownloadError(
            f"not a {algorithm} checksum file: unexpected line {_shorten(line)!r}",
            hint=f"Expected a {ALGORITHMS[algorithm]}-character hex sum, optionally followed "
            "by a file name.",
        )
    if not entries:
        raise DownloadError(f"empty {algorithm} checksum file")

    want = _basename(filename)
    if len(entries) == 1:
        return entries[0][0]
    if want:
        sums = {s for s, name in entries if _basename(name) == want}
        if len(sums) == 1:
            return sums.pop()
        if len(sums) > 1:
            raise DownloadError(f"{algorithm} checksum file lists {want!r} with different sums")
        raise DownloadError(f"{algorithm} checksum file has no entry for {want!r}")
    sums = {s for s, _ in entries}
    if len(sums) == 1:
        return sums.pop()
    raise DownloadError(
        f"{algorithm} checksum file lists several files and no file name was given to choose one"
    )


def _basename(name: str) -> str:
    name = name.split("?", 1)[0].split("#", 1)[0]
    name = name.rstrip("/")
    return name.rsplit("/", 1)[-1]


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _safe_url(url: str) -> str:
    """The URL without any ``user:pass@`` part, for messages and events."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _scrub(text: str, url: str) -> str:
    """Remove the URL's userinfo from text that may quote it (e.g. an exception)."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return text
    if "@" not in netloc:
        return text
    userinfo = netloc.rsplit("@", 1)[0]
    text = text.replace(userinfo + "@", "")
    for secret in userinfo.split(":", 1):
        if secret:
            text = text.replace(secret, "***")
    return text


def _url_name(url: str) -> str:
    try:
        path = urlsplit(url).path
    except ValueError:
        return ""
    return _basename(path)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (requests.Timeout, _Urllib3TimeoutError)):
        kind = "timed out"
    elif isinstance(exc, _Urllib3ProtocolError):
        kind = "connection broken"
    elif isinstance(exc, requests.ConnectionError):
        kind = "connection error"
    else:
        kind = type(exc).__name__
    detail = str(exc)
    return f"{kind}: {detail}" if detail else kind


def _parse_retry_after(resp: requests.Response) -> Optional[float]:
    value = resp.headers.get("Retry-After", "").strip()
    if not value.isdigit():
        return None  # HTTP-date form is not worth parsing here
    return min(float(value), MAX_RETRY_AFTER)


def _ensure_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, DIR_MODE)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --------------------------------------------------------------------------- downloader


class Downloader:
    """Fetches files into a content-addressed cache, verifying their sha256."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        on_progress: Optional[Callable[[Progress], None]] = None,
        session: Optional[requests.Session] = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.cache_dir = Path(cache_dir)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.on_progress = on_progress
        self.session = session if session is not None else requests.Session()

    # ----------------------------------------------------------------- public

    def cached(self, sha256: str) -> Optional[Path]:
        """The cache path for this sum if a file is there (not re-hashed here)."""
        path = self._final_path(_normalize_sum(sha256))
        return path if path.is_file() else None

    def fetch(self, url: str, expected: Union[str, Digest]) -> Path:
        """Download ``url`` into the cache, verify it and return the cache path.

        ``expected`` is a sha256 (a string) or a :class:`Digest`. The file is
        stored under its sha256 in any case. A cached file that still hashes
        to the expected sum is returned without any network access. Raises
        ChecksumMismatch (not retried) or DownloadError.
        """
        want = Digest.of(expected)
        safe = _safe_url(url)
        try:
            final = self._cached_verified(want)
            if final is None:
                final = self._download(url, want)
        except requests.RequestException:  # an OSError too; never escapes _with_retries
            raise
        except OSError as exc:  # disk full, permissions...
            raise DownloadError(
                f"cannot store {safe} in the cache {self.cache_dir}: {_scrub(str(exc), url)}",
                hint="Check the free space and permissions of the cache directory.",
            ) from None
        return final

    def fetch_unverified(self, url: str) -> Path:
        """Download a file whose sum nobody gave (an explicit, logged opt-in only).

        It is stored under the sum it turned out to have; a leftover partial
        file is never resumed, since nothing could tell its bytes are right.
        """
        safe = _safe_url(url)
        _ensure_dir(self.cache_dir)
        _ensure_dir(self._partial_dir())
        part = self._partial_dir() / (
            "unverified-" + hashlib.sha256(url.encode()).hexdigest()[:16] + ".part"
        )
        _unlink(part)
        sums: List[Dict[str, str]] = []
        self._with_retries(
            url, lambda: sums.append(self._transfer(url, safe, _url_name(url) or "file", part))
        )
        final = self._final_path(sums[-1]["sha256"])
        _ensure_dir(final.parent)
        self._install(part, final)
        return final

    def fetch_text(self, url: str, max_bytes: int = 1 << 20) -> str:
        """GET a small text document (e.g. a ``.sha256`` file) with the retry policy.

        Refuses (DownloadError, not retried) a body larger than ``max_bytes``.
        """
        safe = _safe_url(url)
        result: List[str] = []

        def attempt() -> None:
            result.append(self._get_text(url, safe, max_bytes))

        self._with_retries(url, attempt)
        return result[-1]

    # ----------------------------------------------------------------- internals

    def _final_path(self, hexsum: str) -> Path:
        return self.cache_dir / "sha256" / hexsum

    def _partial_dir(self) -> Path:
        return self.cache_dir / "partial"

    def _index_path(self, want: Digest) -> Path:
        """Where the sha256 of a file known by another digest is recorded."""
        return self.cache_dir / want.algorithm / want.hexdigest

    def _cached_verified(self, want: Digest) -> Optional[Path]:
        """The cached file that still hashes to ``want``, else None (one read)."""
        if want.algorithm == "sha256":
            final = self._final_path(want.hexdigest)
            if final.is_file():
                if fsio.sha256_of(final) == want.hexdigest:
                    return final
                _unlink(final)  # corrupted cache entry: fetch it again
            return None
        index = self._index_path(want)
        if not index.is_file():
            return None
        recorded = index.read_text().strip()
        cached = self._final_path(recorded) if _HEX64.match(recorded) else None
        if cached is not None and cached.is_file():
            final = cached
            sums = _hash_file(final, (want.algorithm, "sha256"))
            if sums[want.algorithm] == want.hexdigest and sums["sha256"] == recorded:
                return final
            _unlink(final)  # corrupted cache entry: fetch it again
        _unlink(index)
        return None

    def _download(self, url: str, want: Digest) -> Path:
        _ensure_dir(self.cache_dir)
        _ensure_dir(self._final_path(want.hexdigest).parent)
        _ensure_dir(self._partial_dir())
        stem = want.hexdigest
        if want.algorithm != "sha256":
            stem = f"{want.algorithm}-{stem}"
        part = self._partial_dir() / f"{stem}.part"
        algorithms = tuple(dict.fromkeys((want.algorithm, "sha256")))

        # A previous run may have finished the transfer but not the rename.
        if part.is_file():
            sums = _hash_file(part, algorithms)
            if sums[want.algorithm] == want.hexdigest:
                return self._install_verified(part, want, sums["sha256"])

        safe = _safe_url(url)
        name = _url_name(url) or want.hexdigest
        got: List[Dict[str, str]] = []

        def attempt() -> None:
            sums = self._transfer(url, safe, name, part, algorithms)
            actual = sums[want.algorithm]
            if actual != want.hexdigest:
                _unlink(part)
                raise _mismatch(safe, want, actual)
            got.append(sums)

        self._with_retries(url, attempt)
        return self._install_verified(part, want, got[-1]["sha256"])

    def _install_verified(self, part: Path, want: Digest, sha256: str) -> Path:
        final = self._final_path(sha256)
        _ensure_dir(final.parent)
        self._install(part, final)
        if want.algorithm != "sha256":
            index = self._index_path(want)
            _ensure_dir(index.parent)
            fsio.atomic_write(index, (sha256 + "\n").encode(), mode=FILE_MODE)
        return final

    def _with_retries(self, url: str, attempt: Callable[[], None]) -> None:
        safe = _safe_url(url)
        attempts = self.retries + 1
        last = ""
        for n in range(attempts):
            try:
                attempt()
                return
            except _Transient as exc:
                last = _scrub(str(exc), url)
                retry_after = exc.retry_after
            except requests.exceptions.SSLError as exc:  # a bad certificate is not transient
                raise DownloadError(
                    f"cannot download {safe}: TLS error: {_scrub(str(exc), url)}",
                    hint="Check the system CA certificates, a TLS-intercepting proxy, "
                    "and --mirror.",
                ) from None
            except _PERMANENT_REQUEST_ERRORS as exc:
                raise DownloadError(
                    f"cannot download {safe}: {_scrub(_describe(exc), url)}",
                    hint="Check the URL (and --mirror).",
                ) from None
            except requests.RequestException as exc:
                last = _scrub(_describe(exc), url)
                retry_after = None
            except _Urllib3Error as exc:  # raised while streaming a raw body
                last = _scrub(_describe(exc), url)
                retry_after = None
            if n + 1 < attempts:
                delay = self.backoff * (2 ** n)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                _sleep(delay)
        plural = "attempt" if attempts == 1 else "attempts"
        raise DownloadError(
            f"download of {safe} failed after {attempts} {plural}: {last}",
            hint="Check the network, the proxy settings (HTTPS_PROXY/NO_PROXY) and --mirror.",
        )

    def _request(self, url: str, headers: Dict[str, str]) -> requests.Response:
        all_headers = {"User-Agent": USER_AGENT}
        all_headers.update(headers)
        return self.session.get(
            url,
            headers=all_headers,
            stream=True,
            timeout=(self.timeout, self.timeout),
            allow_redirects=True,
        )

    def _check_status(self, resp: requests.Response, safe: str) -> None:
        """Raise for a status that is not a success: _Transient or DownloadError."""
        status = resp.status_code
        if 200 <= status < 300:
            return
        if status < 400:  # a redirect without a Location, 304...: nothing to save
            raise DownloadError(
                f"cannot download {safe}: unexpected HTTP {status} {resp.reason or ''}".rstrip(),
                hint="Check --mirror.",
            )
        reason = f"HTTP {status} {resp.reason or ''}".strip()
        if status == 429 or status >= 500:
            raise _Transient(reason, _parse_retry_after(resp))
        hint = "Check --mirror or the version."
        if status in (401, 403):
            hint = "Access denied: check --mirror or the version (and any credentials)."
        raise DownloadError(f"cannot download {safe}: {reason}", hint=hint)

    def _transfer(
        self, url: str, safe: str, name: str, part: Path, algorithms: Tuple[str, ...] = ("sha256",)
    ) -> Dict[str, str]:
        """One attempt: append to (or restart) ``part``; return the whole's digests
        (algorithm -> hex), computed while the bytes stream by.

        Raises _Transient when the transfer should be retried (and resumed).
        """
        restarted = False
        while True:
            offset = part.stat().st_size if part.is_file() else 0
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            resp = self._request(url, headers)
            try:
                if resp.status_code == 416 and offset and not restarted:
                    # Our part is past the end (or stale): start over, once.
                    _unlink(part)
                    restarted = True
                    continue
                self._check_status(resp, safe)
                total: Optional[int]
                if resp.status_code == 206:
                    start, total = self._content_range(resp)
                    if start not in (0, offset):
                        _unlink(part)
                        raise _Transient(
                            f"server answered Range bytes={offset}- with bytes {start}-"
                        )
                    offset = start
                else:
                    # 200: the whole body (Range ignored or not sent).
                    total = self._content_length(resp)
                    offset = 0
                mode = "ab" if offset else "wb"
                return self._stream_to(resp, part, mode, offset, total, safe, name, algorithms)
            finally:
                resp.close()

    @staticmethod
    def _content_length(resp: requests.Response) -> Optional[int]:
        value = resp.headers.get("Content-Length")
        if value is None or not value.strip().isdigit():
            return None
        return int(value)

    @staticmethod
    def _content_range(resp: requests.Response) -> Tuple[int, Optional[int]]:
        match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if not match:
            raise _Transient("partial content without a valid Content-Range")
        start = int(match.group(1))
        total = None if match.group(3) == "*" else int(match.group(3))
        return start, total

    def _stream_to(
        self,
        resp: requests.Response,
        part: Path,
        mode: str,
        offset: int,
        total: Optional[int],
        safe: str,
        name: str,
        algorithms: Tuple[str, ...] = ("sha256",),
    ) -> Dict[str, str]:
        digests = [hashlib.new(algorithm) for algorithm in algorithms]
        with open(part, mode + "+" if mode == "ab" else mode) as fh:
            if mode == "ab":
                fh.seek(0)
                if _hash_stream(fh, *digests) != offset:
                    raise _Transient("partial file changed during the download")
                fh.seek(0, os.SEEK_END)
            done = offset
            self._emit(safe, name, done, total)
            for chunk in self._body(resp):
                fh.write(chunk)
                for digest in digests:
                    digest.update(chunk)
                done += len(chunk)
                self._emit(safe, name, done, total)
            fh.flush()
            os.fsync(fh.fileno())
        if total is not None and done != total:
            raise _Transient(f"transfer ended early: got {done} of {total} bytes")
        return {algorithm: d.hexdigest() for algorithm, d in zip(algorithms, digests)}

    @staticmethod
    def _body(resp: requests.Response) -> Iterator[bytes]:
        # Raw bytes as sent, read CHUNK_SIZE at a time; the read timeout applies
        # to every socket read. urllib3 errors are handled by _with_retries.
        for chunk in resp.raw.stream(CHUNK_SIZE, decode_content=False):
            if chunk:
                yield chunk

    def _emit(self, safe: str, name: str, done: int, total: Optional[int]) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(url=safe, name=name, done=done, total=total))

    def _install(self, part: Path, final: Path) -> None:
        # a failed rename keeps the finished part, which the next run reuses
        fsio.move_into_place(part, final, mode=FILE_MODE)

    def _get_text(self, url: str, safe: str, max_bytes: int) -> str:
        resp = self._request(url, {})
        try:
            self._check_status(resp, safe)
            length = self._content_length(resp)
            if length is not None and length > max_bytes:
                raise self._too_large(safe, max_bytes)
            body = bytearray()
            for chunk in resp.iter_content(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise self._too_large(safe, max_bytes)
            encoded = bool(resp.headers.get("Content-Encoding"))
            if length is not None and not encoded and len(body) != length:
                raise _Transient(f"transfer ended early: got {len(body)} of {length} bytes")
        finally:
            resp.close()
        return bytes(body).decode("utf-8", errors="replace")

    @staticmethod
    def _too_large(safe: str, max_bytes: int) -> DownloadError:
        return DownloadError(
            f"refusing {safe}: larger than {max_bytes} bytes",
            hint="This URL should be a small text file (a checksum); check --mirror.",
        )
