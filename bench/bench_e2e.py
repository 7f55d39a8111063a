"""Timings on real booted Debian hosts (systemd-nspawn, as the e2e suite).

    sudo .venv/bin/python bench/bench_e2e.py [-n 7]
    sudo .venv/bin/python bench/bench_e2e.py --runtime kata [--suite trixie ...] [-n 7]

Boots a fresh host from the e2e image, installs frakti-install into it the way
a user would, runs `allinone` once to converge, then prints medians of:
- the no-op re-run of allinone on the converged host (goal < 1 s),
- `allinone --dry-run` on the converged host (goal < 1 s),
- `frakti-install --help` start-up (goal < 0.3 s).
Each figure is measured inside the host, from process start to exit.

The frakti profile (the default) runs on Debian 12, the only suite its e2e
tests boot. With --runtime kata each --suite (default: all of
testbed.SUITES, bookworm, trixie and sid) gets its own booted host, set up
as tests/e2e/kata/test_kata_allinone.py sets it up (the kata image of that
suite, the signed stand-in repository, a cgroup v2 hierarchy), one after the
other; the figures are printed per system.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
# as pytest puts them on sys.path for the e2e suite
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "tests" / "e2e" / "kata"))

import testbed  # noqa: E402

CONFIG = "/root/frakti.yaml"
TIMER = (
    "import subprocess, sys, time; s = time.perf_counter(); "
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(time.perf_counter() - s, r.returncode)"
)


def timed(machine: testbed.Machine, argv: List[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        out = machine.run(["python3", "-c", TIMER, *argv], timeout=600).stdout.split()
        if out[1] != "0":
            raise SystemExit(f"{' '.join(argv)} exited {out[1]}")
        samples.append(float(out[0]))
    return statistics.median(samples)


def measure(machine: testbed.Machine, install: List[str], runs: int) -> Dict[str, float]:
    """Converge with `install` (allinone ... --yes -c CONFIG), then time the figures."""
    first = machine.run([*install, "--json"], check=False, timeout=900)
    if first.returncode != 0:
        raise SystemExit(f"install failed ({first.returncode}):\n{first.stderr[-2000:]}")
    report = json.loads(machine.run([*install, "--json"], timeout=600).stdout)
    assert not report["changed"], "the host did not converge"
    dry = [a for a in install if a != "--yes"] + ["--dry-run"]
    return {
        "rerun": timed(machine, install, runs),
        "dry": timed(machine, dry, runs),
        "help": timed(machine, ["frakti-install", "--help"], runs),
    }


def bench_frakti(run_dir: Path, runs: int) -> Dict[str, Dict[str, float]]:
    from test_allinone import make_config, write_config

    image = testbed.ensure_image()
    mirror = {**testbed.build_mirror(run_dir / "mirror"), "dir": run_dir / "mirror"}
    wheels = testbed.build_wheelhouse(
        ROOT, run_dir / "wheelhouse", run_dir / "wheelhouse.log", testbed.image_python(image)
    )
    machine = testbed.boot_machine(image, run_dir, "bench")
    try:
        mirror["url"] = testbed.serve_mirror(machine, run_dir / "mirror")
        testbed.install_project(machine, wheels)
        write_config(machine, make_config(mirror))
        install = ["frakti-install", "allinone", "--yes", "-c", CONFIG]
        return {f"Debian {testbed.SUITE} (frakti)": measure(machine, install, runs)}
    finally:
        machine.stop()


def bench_kata(run_dir: Path, suites: List[str], runs: int) -> Dict[str, Dict[str, float]]:
    import katalab
    from test_kata_allinone import make_config, write_config

    key = katalab.RepoKey()
    try:
        mirror = katalab.build_kata_mirror(run_dir / "mirror-kata", key)
    finally:
        key.close()
    results = {}
    for suite in suites:
        image = katalab.ensure_kata_image(testbed.ensure_image(suite))
        python = testbed.image_python(image)
        wheels = testbed.build_wheelhouse(
            ROOT, run_dir / f"wheelhouse-{python}", run_dir / f"wheelhouse-{python}.log", python
        )
        # cgroup v2, as the kata e2e tests boot: Kubernetes 1.35+ kubelets refuse v1
        machine = testbed.boot_machine(image, run_dir, f"bench-kata-{suite}", cgroup_v2=True)
        try:
            testbed.serve_mirror(machine, run_dir / "mirror-kata")
            testbed.install_project(machine, wheels)
            for device, minor in (("vhost-vsock", 241), ("vhost-net", 238)):
                if not machine.exists(f"/dev/{device}"):  # as boot_kata_host does
                    machine.run(["mknod", "-m", "600", f"/dev/{device}", "c", "10", str(minor)])
            write_config(machine, make_config(mirror))
            install = ["frakti-install", "allinone", "--runtime", "kata", "--yes", "-c", CONFIG]
            results[f"Debian {suite} (kata)"] = measure(machine, install, runs)
        finally:
            machine.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=7)
    parser.add_argument("--runtime", choices=("frakti", "kata"), default="frakti")
    parser.add_argument(
        "--suite",
        action="append",
        choices=testbed.SUITES,
        help="Debian suite to boot for --runtime kata (repeatable; default: all)",
    )
    args = parser.parse_args()
    if args.suite and args.runtime != "kata":
        parser.error(f"--suite is for --runtime kata; frakti runs on {testbed.SUITE} only")
    problem = testbed.host_problem()
    if problem:
        raise SystemExit(f"cannot boot a test host here: {problem}")
    run_dir = testbed.new_run_dir()
    try:
        if args.runtime == "kata":
            results = bench_kata(run_dir, args.suite or list(testbed.SUITES), args.n)
        else:
            results = bench_frakti(run_dir, args.n)
    finally:
        testbed.remove_tree(run_dir)
    for system, figures in results.items():
        print(f"booted {system}, medians of {args.n} runs:")
        for label, key, goal in (
            ("no-op re-run of allinone (converged host):", "rerun", "< 1 s"),
            ("allinone --dry-run:", "dry", "< 1 s"),
            ("frakti-install --help start-up:", "help", "< 0.3 s"),
        ):
            print(f"  {label:43} {figures[key]:.3f} s   (goal {goal})")


if __name__ == "__main__":
    main()
