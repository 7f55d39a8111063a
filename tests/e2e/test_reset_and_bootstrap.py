"""On a booted Debian 12 host: reset returns the host to how it was before
allinone (files and units), allinone works again after it; and the
`curl ... | python -` bootstrap installs the tool from a wheel served over
local HTTP and runs it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Callable, Dict

import pytest
import testbed
from test_allinone import (
    EXIT,
    describe,
    installed_host,
    make_config,
    run_installer,
    write_config,
)

pytestmark = pytest.mark.e2e

# What the comparison leaves out: the tool's own record of what it did (kept on
# purpose), package-manager and systemd bookkeeping, logs, caches, the test's
# own plumbing, and the stand-ins' state.
NOT_COMPARED = (
    "/var/lib/frakti-install", "/var/log", "/var/cache", "/var/lib/apt", "/var/lib/dpkg",
    "/var/lib/systemd", "/var/lib/docker", "/var/lib/ucf", "/etc/ld.so.cache", "/srv/mirror",
    "/wheelhouse", "/opt/frakti-install", "/usr/local/bin/frakti-install", "/root",
    "/var/lib/standin-k8s", "/tmp", "/var/tmp", "/etc/machine-id",
)
LISTING = (
    "find / -xdev \\( -path /proc -o -path /sys -o -path /run -o -path /dev \\) -prune "
    "-o \\( -type f -o -type l \\) -printf '%p %m\\n' | sort"
)


def host_listing(machine: testbed.Machine) -> Dict[str, str]:
    files = machine.run(["sh", "-c", LISTING], timeout=120).stdout.splitlines()
    units = machine.run(
        ["systemctl", "list-unit-files", "--no-legend", "--no-pager"], timeout=60
    ).stdout.splitlines()
    listing = {
        path: mode
        for path, _, mode in (line.rpartition(" ") for line in files)
        if not path.startswith(NOT_COMPARED)
    }
    listing.update({f"unit:{u.split()[0]}": u.split()[1] for u in units if u.strip()})
    return listing


def test_reset_purge_restores_the_host_and_allinone_works_again(
    request: pytest.FixtureRequest,
    boot_host: Callable[..., testbed.Machine],
    wheelhouse: Path,
    mirror: dict,
) -> None:
    machine = installed_host(request, boot_host, wheelhouse, make_config(mirror), "reset")
    before = host_listing(machine)
    first = run_installer(machine)
    assert first.returncode == EXIT["ok"], describe(first)
    assert host_listing(machine) != before

    dry = machine.run(["frakti-install", "reset", "--purge", "--dry-run", "--json"], check=False)
    assert dry.returncode == 0, describe(dry)
    assert machine.exists("/usr/bin/frakti"), "reset --dry-run removed something"

    reset = machine.run(
        ["frakti-install", "reset", "--purge", "--yes", "--json"], check=False, timeout=900
    )
    assert reset.returncode == 0, describe(reset)
    after = host_listing(machine)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), (
        f"reset left the host different:\nadded {added}\nremoved {removed}\nchanged {changed}"
    )
    for unit in ("kubelet", "frakti", "hyperd", "docker"):
        state = machine.run(["systemctl", "is-active", unit], check=False).stdout.strip()
        assert state != "active", f"{unit} still runs after reset"

    again = run_installer(machine)
    assert again.returncode == EXIT["ok"], describe(again)


def test_bootstrap_one_liner_installs_from_local_http_and_runs(
    request: pytest.FixtureRequest,
    boot_host: Callable[..., testbed.Machine],
    wheelhouse: Path,
    project_root: Path,
    mirror: dict,
) -> None:
    machine = boot_host(request, "bootstrap")
    testbed_wheels = machine.path("/srv/wheels")
    testbed_wheels.mkdir(parents=True)
    for wheel in wheelhouse.glob("*.whl"):
        (testbed_wheels / wheel.name).write_bytes(wheel.read_bytes())
    project_wheel = (wheelhouse / "PROJECT_WHEEL").read_text().strip()
    machine.run(
        ["systemd-run", "--unit=wheel-server", "--quiet", "python3", "-m", "http.server",
         "--bind", "127.0.0.1", "8081", "--directory", "/srv/wheels"]
    )  # fmt: skip
    machine.wait_tcp(8081)
    machine.write("/root/bootstrap.py", (project_root / "bootstrap.py").read_bytes())
    write_config(machine, make_config(mirror))
    url = f"http://127.0.0.1:8081/{project_wheel}"
    one_liner = (
        "python3 - --from-url " + shlex.quote(url) + " --insecure-http"
        " --pip-arg=--no-index --pip-arg=--find-links=http://127.0.0.1:8081/"
        " -- allinone --dry-run --json -c /root/frakti.yaml < /root/bootstrap.py"
    )
    result = machine.run(["sh", "-c", one_liner], check=False, timeout=600)
    assert result.returncode == 0, describe(result)
    plan = json.loads(result.stdout[result.stdout.index("{") :])
    assert plan["os"]["id"] == "debian" and plan["dry_run"] is True
    assert machine.path("/usr/local/bin/frakti-install").is_symlink()
    version = machine.run(["frakti-install", "--version"]).stdout
    assert version.startswith("frakti-install ")
    again = machine.run(["sh", "-c", one_liner], check=False, timeout=600)  # repair/upgrade
    assert again.returncode == 0, describe(again)
