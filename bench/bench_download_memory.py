#!/usr/bin/env python3
"""Memory benchmark of the download layer: a big download must not grow the process.

    python bench/bench_download_memory.py [--size-mb 200] [--limit-mb 100]

Writes a file of --size-mb MiB of random bytes to a temporary directory (streamed,
never held in memory), serves it from a local HTTP server on 127.0.0.1, and has a
CHILD process fetch it with frakti_install.download.Downloader into a temporary
cache. Prints the child's peak RSS (getrusage(RUSAGE_CHILDREN).ru_maxrss) and the
throughput, e.g.::

    download 200 MB: peak RSS 38.2 MB, 412 MB/s (interpreter and imports alone: 30.1 MB)

Exits 1 if the peak RSS exceeds --limit-mb, 2 if the download itself fails.
Sizes are MiB (2**20 bytes). Everything temporary is removed at the end.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional

MiB = 1 << 20
SRC = Path(__file__).resolve().parent.parent / "src"


class _FileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, *args: object, path: Path, **kwargs: object) -> None:
        self.file_path = path
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def do_GET(self) -> None:
        if self.path != "/" + self.file_path.name:
            self.send_error(404)
            return
        size = self.file_path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.flush()
        with open(self.file_path, "rb") as fh:
            self.connection.sendfile(fh)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _generate(path: Path, size: int) -> str:
    """Write size random bytes to path one MiB at a time; return their sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(MiB, left))
            fh.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def _child_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    for var in ("NO_PROXY", "no_proxy"):  # never send 127.0.0.1 through a proxy
        env[var] = ",".join(p for p in (env.get(var), "127.0.0.1", "localhost") if p)
    return env


def _run_child(args: List[str]) -> Optional[dict]:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args],
        env=_child_env(), capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


def _peak_children_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return peak / MiB if sys.platform == "darwin" else peak / 1024


def child_main(mode: str, argv: List[str]) -> int:
    if mode == "baseline":
        import frakti_install.download  # noqa: F401 (the imports the download needs)

        print(json.dumps({}))
        return 0
    url, sha256, cache = argv
    from frakti_install.download import Downloader

    started = time.perf_counter()
    path = Downloader(Path(cache)).fetch(url, sha256)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "bytes": path.stat().st_size}))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200, help="file size in MiB (200)")
    parser.add_argument("--limit-mb", type=float, default=100.0,
                        help="fail if the child's peak RSS exceeds this many MiB (100)")
    parser.add_argument("--tmpdir", default=None, help="where to put the temporary files")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.child:
        return child_main(opts.child[0], opts.child[1:])
    if opts.size_mb <= opts.limit_mb:
        parser.error("--size-mb must exceed --limit-mb, or holding the file in memory would pass")

    work = Path(tempfile.mkdtemp(prefix="frakti-bench-", dir=opts.tmpdir))
    httpd: Optional[ThreadingHTTPServer] = None
    try:
        served = work / "serve" / "artifact.bin"
        served.parent.mkdir()
        size = opts.size_mb * MiB
        sha256 = _generate(served, size)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_FileHandler, path=served))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{served.name}"

        if _run_child(["--child", "baseline"]) is None:
            print("the baseline child failed", file=sys.stderr)
            return 2
        baseline = _peak_children_mib()

        result = _run_child(["--child", "fetch", url, sha256, str(work / "cache")])
        if result is None or result["bytes"] != size:
            print("the download failed", file=sys.stderr)
            return 2
        peak = _peak_children_mib()  # max over both children: the download's
        rate = size / MiB / result["seconds"]
        print(f"download {opts.size_mb} MB: peak RSS {peak:.1f} MB, {rate:.0f} MB/s "
              f"(interpreter and imports alone: {baseline:.1f} MB)")
        if peak > opts.limit_mb:
            print(f"FAIL: peak RSS {peak:.1f} MB exceeds {opts.limit_mb:g} MB", file=sys.stderr)
            return 1
        return 0
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
