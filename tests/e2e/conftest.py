"""Fixtures for the end-to-end tests: a booted Debian host per scenario (Debian 12;
the kata tests also boot Debian 13 and sid, see kata/test_kata_allinone.py).

Run them as root:  .venv/bin/pytest tests/e2e -m e2e
They are skipped, with the reason, where they cannot run (not root, no
systemd-nspawn and no apt-get to install it, no overlayfs). testbed.py says
how the host is built and booted. Set FRAKTI_E2E_CACHE / FRAKTI_E2E_WORK to
move the image cache (/var/cache/frakti-install-e2e) or the work directory
(/var/tmp/frakti-install-e2e), FRAKTI_E2E_PROJECT to install another checkout.
When a test fails, the journal and installer files of the hosts it used are
copied under <work>/diagnostics/.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testbed  # noqa: E402

# FRAKTI_E2E_PROJECT: test another checkout (or a build of it) with this harness.
PROJECT_ROOT = Path(os.environ.get("FRAKTI_E2E_PROJECT") or Path(__file__).resolve().parents[2])
TIMINGS: list[tuple[str, float]] = []
DIAGNOSTICS = testbed.DIAGNOSTICS
# Files of a failed test's diagnostics shown in the summary, with how many lines.
SUMMARY_EXCERPTS = (
    ("processes.txt", 40),
    ("var__lib__frakti-install/journal.jsonl", 12),
    ("var__log__frakti-install.log", 30),
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end test booting a Debian host with systemd-nspawn (needs root)"
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if TIMINGS:
        terminalreporter.section("frakti-install e2e timings")
        for what, seconds in TIMINGS:
            terminalreporter.write_line(f"{seconds:8.1f} s  {what}")
    if DIAGNOSTICS:
        terminalreporter.section("frakti-install e2e diagnostics of failed tests")
        for path in DIAGNOSTICS:
            terminalreporter.write_line(str(path))
            # where CI keeps only this output, the first things to read
            for name, lines in SUMMARY_EXCERPTS:
                excerpt = path / name
                if excerpt.is_file():
                    tail = excerpt.read_text(errors="replace").splitlines()[-lines:]
                    terminalreporter.write_line(f"--- {path.name}: {name} (last {lines} lines)")
                    for line in tail:
                        terminalreporter.write_line(line[:300])


@pytest.fixture(scope="session")
def record_timing() -> Callable[[str, float], None]:
    def record(what: str, seconds: float) -> None:
        TIMINGS.append((what, seconds))

    return record


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def testbed_ready() -> None:
    problem = testbed.host_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def image(testbed_ready: None, record_timing: Callable[[str, float], None]) -> Path:
    started = time.monotonic()
    path = testbed.ensure_image()
    record_timing(f"host image ready ({path.name})", time.monotonic() - started)
    return path


@pytest.fixture(scope="session")
def run_dir(testbed_ready: None) -> Iterator[Path]:
    path = testbed.new_run_dir()
    yield path
    testbed.remove_tree(path)


@pytest.fixture(scope="session")
def mirror(run_dir: Path, record_timing: Callable[[str, float], None]) -> dict[str, object]:
    """The stand-in mirror, built once: {"dir", "url", "versions", "sha256", "paths"}."""
    started = time.monotonic()
    info = testbed.build_mirror(run_dir / "mirror")
    record_timing("stand-in mirror built", time.monotonic() - started)
    return {**info, "dir": run_dir / "mirror", "url": testbed.MIRROR_URL}


@pytest.fixture(scope="session")
def wheelhouses(
    run_dir: Path, project_root: Path, record_timing: Callable[[str, float], None]
) -> Callable[[str], Path]:
    """wheelhouses("3.13"): frakti-install's wheel and its dependency wheels for that
    CPython (an image's testbed.image_python), built/downloaded once per session."""
    built: dict[str, Path] = {}

    def get(python_version: str) -> Path:
        if python_version not in built:
            started = time.monotonic()
            log = run_dir / f"wheelhouse-{python_version}.log"
            dest = run_dir / f"wheelhouse-{python_version}"
            try:
                built[python_version] = testbed.build_wheelhouse(
                    project_root, dest, log, python_version
                )
            except testbed.TestbedError as exc:
                pytest.fail(
                    f"could not build the project wheelhouse for Python {python_version} "
                    f"(log: {log}):\n{exc}",
                    pytrace=False,
                )
            record_timing(
                f"project wheelhouse built (Python {python_version})", time.monotonic() - started
            )
        return built[python_version]

    return get


@pytest.fixture(scope="session")
def wheelhouse(image: Path, wheelhouses: Callable[[str], Path]) -> Path:
    """The wheelhouse for the default image's python3."""
    return wheelhouses(testbed.image_python(image))


_counter = itertools.count(1)


@pytest.fixture(scope="session")
def boot_host(
    image: Path,
    run_dir: Path,
    mirror: dict[str, object],
    record_timing: Callable[[str, float], None],
) -> Callable[..., testbed.Machine]:
    """boot_host(request, label) -> a fresh booted host serving the stand-in mirror.

    The host is torn down by a finalizer on `request` (function- or
    module-scoped), also when the test fails; the diagnostics of hosts used by
    failed tests are kept first.
    """

    def boot(request: pytest.FixtureRequest, label: str = "") -> testbed.Machine:
        name = f"e2e-{next(_counter):02d}" + (f"-{label}" if label else "")
        failures_before = request.session.testsfailed
        machine = testbed.boot_machine(image, run_dir, name[:60])

        def finish() -> None:
            try:
                if request.session.testsfailed > failures_before:
                    DIAGNOSTICS.append(collect_diagnostics(machine, run_dir.name))
            finally:
                machine.stop()

        request.addfinalizer(finish)
        record_timing(f"boot {name}", machine.boot_seconds or 0.0)
        testbed.serve_mirror(machine, Path(str(mirror["dir"])))
        return machine

    return boot


@pytest.fixture
def host(
    request: pytest.FixtureRequest, boot_host: Callable[..., testbed.Machine]
) -> testbed.Machine:
    """A fresh host for one test."""
    return boot_host(request, request.node.name.split("[")[0].replace("test_", "")[:20])


def collect_diagnostics(machine: testbed.Machine, run_name: str) -> Path:
    """Copy what explains a failure out of a host before it is destroyed."""
    root = testbed.WORK_ROOT / "diagnostics"
    runs = sorted(root.glob("run-*"), key=lambda p: p.stat().st_mtime)
    for old in runs[:-3]:  # keep the diagnostics of the last few runs
        shutil.rmtree(old, ignore_errors=True)
    dest = root / run_name / machine.name
    dest.mkdir(parents=True, exist_ok=True)
    if machine.console.exists():
        shutil.copy(machine.console, dest / "console.log")
    if machine.pid is not None and machine.proc is not None and machine.proc.poll() is None:
        for name, argv in (
            ("journal.txt", ["journalctl", "-b", "--no-pager", "-o", "short-precise"]),
            ("units.txt", ["systemctl", "list-units", "--all", "--no-pager"]),
            ("processes.txt", ["ps", "-ef"]),
        ):
            try:
                (dest / name).write_text(machine.run(argv, check=False, timeout=60).stdout)
            except testbed.TestbedError as exc:
                (dest / name).write_text(str(exc))
    for inside in (
        "/var/log/frakti-install.log",
        "/var/lib/frakti-install",
        "/var/log/standin-kubeadm-init.log",
        "/var/lib/standin-k8s",
        "/etc/kubernetes/manifests",
        "/etc/cni/net.d",
        "/root/frakti.yaml",
    ):
        src = machine.path(inside)
        target = dest / inside.strip("/").replace("/", "__")
        try:
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True)
            elif src.is_file():
                shutil.copy(src, target)
        except OSError:
            pass
    return dest
