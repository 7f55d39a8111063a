"""Timings on a real booted Debian 12 host (systemd-nspawn, as the e2e suite).

    sudo .venv/bin/python bench/bench_e2e.py [-n 7]

Boots a fresh host from the e2e image, installs frakti-install into it the way
a user would, runs `allinone` once to converge, then prints medians of:
- the no-op re-run of allinone on the converged host (goal < 1 s),
- `allinone --dry-run` on the converged host (goal < 1 s),
- `frakti-install --help` start-up (goal < 0.3 s).
Each figure is measured inside the host, from process start to exit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))  # as pytest puts it for the e2e suite

import testbed  # noqa: E402
from test_allinone import make_config, write_config  # noqa: E402

CONFIG = "/root/frakti.yaml"
TIMER = (
    "import subprocess, sys, time; s = time.perf_counter(); "
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(time.perf_counter() - s, r.returncode)"
)


def timed(machine: testbed.Machine, argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        out = machine.run(["python3", "-c", TIMER, *argv], timeout=600).stdout.split()
        if out[1] != "0":
            raise SystemExit(f"{' '.join(argv)} exited {out[1]}")
        samples.append(float(out[0]))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=7)
    args = parser.parse_args()
    problem = testbed.host_problem()
    if problem:
        raise SystemExit(f"cannot boot a test host here: {problem}")
    image = testbed.ensure_image()
    run_dir = testbed.new_run_dir()
    mirror = {**testbed.build_mirror(run_dir / "mirror"), "dir": run_dir / "mirror"}
    wheels = testbed.build_wheelhouse(ROOT, run_dir / "wheelhouse", run_dir / "wheelhouse.log")
    machine = testbed.boot_machine(image, run_dir, "bench")
    try:
        mirror["url"] = testbed.serve_mirror(machine, run_dir / "mirror")
        testbed.install_project(machine, wheels)
        write_config(machine, make_config(mirror))
        install = ["frakti-install", "allinone", "--yes", "--json", "-c", CONFIG]
        first = machine.run(install, check=False, timeout=900)
        if first.returncode != 0:
            raise SystemExit(f"install failed ({first.returncode}):\n{first.stderr[-2000:]}")
        report = json.loads(machine.run(install, timeout=600).stdout)
        assert not report["changed"], "the host did not converge"
        rerun = timed(machine, ["frakti-install", "allinone", "--yes", "-c", CONFIG], args.n)
        dry = timed(machine, ["frakti-install", "allinone", "--dry-run", "-c", CONFIG], args.n)
        helps = timed(machine, ["frakti-install", "--help"], args.n)
    finally:
        machine.stop()
        testbed.remove_tree(run_dir)
    print(f"booted Debian 12, medians of {args.n} runs:")
    print(f"  no-op re-run of allinone (converged host): {rerun:.3f} s   (goal < 1 s)")
    print(f"  allinone --dry-run:                        {dry:.3f} s   (goal < 1 s)")
    print(f"  frakti-install --help start-up:            {helps:.3f} s   (goal < 0.3 s)")


if __name__ == "__main__":
    main()
