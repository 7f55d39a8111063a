"""The timer that re-runs `frakti-install routes`: its units, the settings it
runs with (those the install recorded, without secrets), its interval, and
switching it off."""

from __future__ import annotations

import stat

import pytest

from frakti_install import config, joining, plans
from frakti_install.engine import Status
from frakti_install.errors import ConfigError
from frakti_install.steps.routes_sync import RoutesSync
from tests.unit.simhost import SimMachine, frakti
from tests.unit.test_cluster_sim import run

TIMER = "frakti-routes-sync.timer"
SETTINGS = "/var/lib/frakti-install/settings.yaml"


@pytest.fixture
def master(tmp_path):
    m = SimMachine(tmp_path / "master", "debian", "12", hostname="master")
    run(m, plans.allinone(frakti()), pod_cidr="10.32.0.0/16")
    return m


def test_allinone_starts_a_timer_that_runs_routes_with_the_install_settings(master):
    service = master.p("/etc/systemd/system/frakti-routes-sync.service").read_text()
    assert f"ExecStart=/usr/local/bin/frakti-install routes --quiet --config {SETTINGS}" in service
    timer = master.p(f"/etc/systemd/system/{TIMER}").read_text()
    assert "OnUnitActiveSec=5min" in timer and "WantedBy=timers.target" in timer
    assert master.state.units[TIMER].enabled and master.state.units[TIMER].active
    saved = master.p(SETTINGS)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    # What the timer's run reads back is what this install used.
    assert config.load(saved) == config.validate(
        config.Settings(pod_cidr="10.32.0.0/16", checksums=master.settings().checksums)
    )


def test_a_workers_saved_settings_hold_no_join_secret(master, tmp_path):
    line = joining.create_join_line(master.context())
    worker = SimMachine(
        tmp_path / "worker", "debian", "12", hostname="worker", ip="10.0.0.2",
        cluster=master.state.cluster,
    )  # fmt: skip
    run(
        worker, plans.node(frakti()), pod_cidr="10.32.0.0/16", join_endpoint=line.endpoint,
        join_token=line.token, join_ca_hash=line.ca_hash,
    )  # fmt: skip
    saved = worker.p(SETTINGS).read_text()
    assert line.token not in saved and "join_" not in saved
    assert "pod_cidr: 10.32.0.0/16" in saved


def test_a_new_interval_rewrites_and_restarts_only_the_timer(master):
    starts = {unit: st.starts for unit, st in master.state.units.items()}
    steps = run(
        master, plans.allinone(frakti()), pod_cidr="10.32.0.0/16", routes_sync_interval="1h"
    )
    changed = [name for name, r in steps.items() if r.status is Status.CHANGE]
    assert changed == ["settings", "routes-sync"]
    assert "OnUnitActiveSec=1h" in master.p(f"/etc/systemd/system/{TIMER}").read_text()
    after = {unit: st.starts for unit, st in master.state.units.items()}
    assert after == {**starts, TIMER: starts[TIMER] + 1}


def test_off_removes_the_timer_and_its_files(master):
    steps = run(
        master, plans.allinone(frakti()), pod_cidr="10.32.0.0/16", routes_sync_interval="off"
    )
    assert steps["routes-sync"].status is Status.CHANGE
    assert not master.state.units[TIMER].enabled and not master.state.units[TIMER].active
    for path in (f"/etc/systemd/system/{TIMER}", "/etc/systemd/system/frakti-routes-sync.service"):
        assert not master.p(path).exists()
    assert "routes_sync_interval: 'off'" in master.p(SETTINGS).read_text()  # still the record
    again = run(
        master, plans.allinone(frakti()), pod_cidr="10.32.0.0/16", routes_sync_interval="off"
    )
    assert again["routes-sync"].status is Status.OK


def test_no_fixed_path_to_the_tool_is_a_clear_error(tmp_path):
    m = SimMachine(tmp_path / "m", "debian", "12")
    m.p("/usr/local/bin/frakti-install").unlink()
    with pytest.raises(ConfigError, match="timer cannot run it") as caught:
        RoutesSync().check(m.context())
    assert "routes_sync_interval: off" in (caught.value.hint or "")


@pytest.mark.parametrize("value", ["5", "5 min", "0s", "-1h", "weekly", ""])
def test_a_bad_interval_is_refused(value):
    with pytest.raises(ConfigError, match="routes_sync_interval"):
        config.validate(config.Settings(routes_sync_interval=value))
