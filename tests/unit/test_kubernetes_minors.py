"""The kata profile's table of Kubernetes minors (kata.yaml kubernetes.releases)
and what --kubernetes-version / allow_eol do with it.

Behaviour tests pass their own day, never the test run's clock. The table's
invariants are judged on its `reviewed` day: on that day the default must be
supported. A later CI run must not fail because time passed (an old checkout
keeps passing); on such a day the installer itself refuses the EOL default
with exit 3, which test_eol_default_is_refused_on_a_later_day shows."""

from __future__ import annotations

import datetime
import json

import pytest

from frakti_install import datafiles, versions
from frakti_install.config import Settings
from frakti_install.errors import ConfigError
from frakti_install.runtimes.kata import KataContainersRuntime

TABLE = datafiles.load("kata")
RELEASES = versions.kubernetes_releases(TABLE["kubernetes"])
REVIEWED = datetime.date.fromisoformat(TABLE["kubernetes"]["reviewed"])
DAY = datetime.date(2026, 12, 2)


def runtime(day: datetime.date = DAY, **settings: object) -> KataContainersRuntime:
    return KataContainersRuntime(Settings(runtime="kata", **settings), day=day)  # type: ignore[arg-type]


# --- invariants of the data ----------------------------------------------------
def test_minors_are_newest_first_with_later_minors_ending_later():
    minors = [versions.parse(r.minor) for r in RELEASES]
    assert minors == sorted(minors, reverse=True) and len(set(minors)) == len(minors)
    eols = [r.eol for r in RELEASES]
    assert eols == sorted(eols, reverse=True)


def test_latest_patches_are_well_formed_patches_of_their_minor():
    for row in RELEASES:
        assert versions._PATCH.match(row.latest), row
        assert row.latest.startswith(row.minor + "."), row
        assert row.source.strip(), f"{row.minor} names no source"


def test_the_default_is_a_known_minor_supported_on_the_reviewed_day():
    default = TABLE["versions"]["kubernetes"]
    row = next(r for r in RELEASES if r.minor == default)
    assert row.supported_on(REVIEWED), f"default {default} ended {row.eol}, before {REVIEWED}"


def test_the_reviewed_day_is_not_in_the_future():
    assert versions.today() >= REVIEWED


# --- behaviour ------------------------------------------------------------------
def test_a_minor_means_its_latest_patch_and_the_default_is_v1_35():
    assert runtime().kubernetes_version == "v1.35.9"
    assert runtime(kubernetes_version="v1.37").kubernetes_version == "v1.37.1"
    assert runtime(kubernetes_version="1.36").versions["kubernetes_minor"] == "v1.36"


def test_a_known_patch_is_taken_and_an_unknown_one_refused():
    assert runtime(kubernetes_version="v1.36.2").kubernetes_version == "v1.36.2"
    with pytest.raises(ConfigError, match=r"v1\.36\.9 is not a released patch.*v1\.36\.4"):
        runtime(kubernetes_version="v1.36.9")


def test_an_unknown_minor_and_garbage_are_refused():
    with pytest.raises(ConfigError, match=r"v1\.38 is not in the kata profile's release table"):
        runtime(kubernetes_version="v1.38")  # due 2026-12-16: not released
    with pytest.raises(ConfigError, match="not a version number|neither a minor"):
        runtime(kubernetes_version="latest")


def test_an_eol_minor_is_refused_with_its_date_and_the_fix():
    with pytest.raises(ConfigError) as caught:
        runtime(kubernetes_version="v1.34")
    text = str(caught.value)
    assert "2026-10-27" in text and "--allow-eol" in text and "v1.35" in text
    assert caught.value.exit_code == 3


def test_end_of_life_starts_on_the_eol_day():
    assert runtime(datetime.date(2026, 10, 26), kubernetes_version="v1.34").kubernetes_version
    with pytest.raises(ConfigError, match="2026-10-27"):
        runtime(datetime.date(2026, 10, 27), kubernetes_version="v1.34")


def test_allow_eol_installs_an_ended_release():
    assert runtime(kubernetes_version="v1.31", allow_eol=True).kubernetes_version == "v1.31.14"


def test_eol_default_is_refused_on_a_later_day():
    with pytest.raises(ConfigError, match="2027-02-28"):
        runtime(datetime.date(2027, 3, 1))


def test_allow_eol_comes_from_the_environment_and_the_config_file(tmp_path, monkeypatch):
    from frakti_install import session

    monkeypatch.setattr(versions, "today", lambda: DAY)
    with pytest.raises(ConfigError, match="end of life"):
        session.load_settings(None, {"runtime": "kata", "kubernetes_version": "v1.33"})
    monkeypatch.setenv("FRAKTI_INSTALL_ALLOW_EOL", "true")
    settings = session.load_settings(None, {"runtime": "kata", "kubernetes_version": "v1.33"})
    assert settings.allow_eol
    monkeypatch.delenv("FRAKTI_INSTALL_ALLOW_EOL")
    config = tmp_path / "c.yaml"
    config.write_text("runtime: kata\nkubernetes_version: v1.33\nallow_eol: true\n")
    assert session.load_settings(config, {}).allow_eol


def test_cli_refuses_eol_with_exit_3_before_any_change(monkeypatch):
    from typer.testing import CliRunner

    from frakti_install.cli import app

    monkeypatch.setattr(versions, "today", lambda: DAY)
    result = CliRunner().invoke(
        app, ["allinone", "--runtime", "kata", "--kubernetes-version", "v1.33", "--dry-run"]
    )
    assert result.exit_code == 3, result.output
    assert "2026-06-28" in result.output and "--allow-eol" in result.output


def test_info_shows_the_table_with_the_default(monkeypatch):
    rows = versions.release_rows(TABLE, DAY)
    by_minor = {row["minor"]: row for row in rows}
    assert by_minor["v1.35"]["default"] and by_minor["v1.35"]["status"] == "supported"
    assert by_minor["v1.34"]["status"] == "end of life"
    assert [r["minor"] for r in rows if r["default"]] == ["v1.35"]
    json.dumps(rows)  # what info --json prints
