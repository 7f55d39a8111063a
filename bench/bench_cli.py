"""CLI and engine timings, printed as medians. Run: python bench/bench_cli.py [-n 15]

- start-up: `frakti-install --help` as a fresh process (goal < 0.3 s)
- info:     `frakti-install info --json` on this machine (read-only)
- dry-run:  `frakti-install allinone --dry-run --json` on this machine
- no-op re-run of the whole allinone plan on a converged *simulated* host,
  in-process: the engine's own cost, without real systemctl/dpkg latency
  (bench/bench_e2e.py measures the real thing on a booted host).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed_process(argv, runs):
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def converged_rerun(runs):
    from tests.unit.simhost import SimMachine, frakti

    from frakti_install import plans, session

    tmp = Path(tempfile.mkdtemp(prefix="frakti-bench-"))
    try:
        m = SimMachine(tmp / "root", "debian", "12")
        session.raise_for(session.execute(plans.allinone(frakti()), m.context(), dry_run=False))
        samples = []
        for _ in range(runs):
            ctx = m.context()
            start = time.perf_counter()
            report = session.execute(plans.allinone(frakti()), ctx, dry_run=False)
            samples.append(time.perf_counter() - start)
            assert not report.changed
        return statistics.median(samples)
    finally:
        shutil.rmtree(tmp)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=15)
    args = parser.parse_args()
    exe = shutil.which("frakti-install") or str(Path(sys.executable).parent / "frakti-install")
    figures = [
        ("frakti-install --help start-up", [exe, "--help"]),
        ("frakti-install info --json", [exe, "info", "--json"]),
        ("frakti-install allinone --dry-run", [exe, "allinone", "--dry-run", "--json"]),
    ]
    for label, argv in figures:
        print(f"{label + ':':40s}{timed_process(argv, args.n):.3f} s")
    print(f"{'no-op re-run, simulated host (engine):':40s}{converged_rerun(args.n) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
