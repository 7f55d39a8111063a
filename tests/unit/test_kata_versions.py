"""Kata releases: which tarball, shim and config each layout names, and the
pinned sha256 of the default (kata.yaml kata.layouts, artifacts.kata.pinned)."""

from __future__ import annotations

import datetime

import pytest

from frakti_install import datafiles
from frakti_install.config import Settings
from frakti_install.errors import ConfigError, MissingChecksum
from frakti_install.runtimes.kata import KataContainersRuntime

DAY = datetime.date(2026, 12, 2)


def runtime(**settings: object) -> KataContainersRuntime:
    return KataContainersRuntime(Settings(runtime="kata", **settings), day=DAY)  # type: ignore[arg-type]


def artifacts(rt: KataContainersRuntime, arch: str = "amd64"):
    return rt.artifacts(arch, "deb", lambda: None)  # type: ignore[arg-type,return-value]


def test_default_is_3_32_0_with_the_go_shim_and_a_zst_tarball():
    rt = runtime()
    kata = rt.data["kata"]
    assert rt.version("kata") == "3.32.0"
    assert kata["layout_shim"] == "/opt/kata/bin/containerd-shim-kata-v2"
    assert kata["layout_config"].endswith("/kata-containers/configuration-qemu.toml")
    assert artifacts(rt).get("kata").url.endswith("/3.32.0/kata-static-3.32.0-amd64.tar.zst")


def test_4_x_uses_runtime_rs_paths():
    rt = runtime(kata_version="4.1.0")
    kata = rt.data["kata"]
    assert kata["layout_shim"] == "/opt/kata/runtime-rs/bin/containerd-shim-kata-v2"
    assert kata["layout_config"] == (
        "/opt/kata/share/defaults/kata-containers/runtime-rs/configuration-qemu-runtime-rs.toml"
    )
    assert kata["runtime"] == "runtime-rs"
    assert artifacts(rt, "arm64").get("kata").filename == "kata-static-4.1.0-arm64.tar.zst"


def test_3_20_keeps_the_xz_tarball_and_older_releases_are_refused():
    assert artifacts(runtime(kata_version="3.20.0")).get("kata").filename.endswith(".tar.xz")
    with pytest.raises(ConfigError, match="older than the releases"):
        runtime(kata_version="3.1.0")
    with pytest.raises(ConfigError, match="not a Kata Containers release number"):
        runtime(kata_version="v3.32.0")


def test_the_default_needs_no_checksum_on_either_arch():
    pins = datafiles.load("kata")["artifacts"]["kata"]["pinned"]
    for arch in ("amd64", "arm64"):
        table = artifacts(runtime(), arch)
        table.require_checksum_source("kata")  # no MissingChecksum
        expected = table.expected("kata")
        assert expected is not None and expected.algorithm == "sha256"
        assert expected.hexdigest == pins[f"kata-static-3.32.0-{arch}.tar.zst"]
        assert "pinned" in table.get("kata").verified_with()


def test_a_release_without_a_pin_needs_checksum_and_a_given_one_wins():
    with pytest.raises(MissingChecksum, match="--checksum kata="):
        artifacts(runtime(kata_version="4.1.0")).require_checksum_source("kata")
    given = "ab" * 32
    table = artifacts(runtime(checksums={"kata": given}))
    expected = table.expected("kata")
    assert expected is not None and expected.hexdigest == given


def test_pins_are_sha256_of_known_layouts():
    data = datafiles.load("kata")
    for name, value in data["artifacts"]["kata"]["pinned"].items():
        assert len(value) == 64 and int(value, 16) >= 0, name
        assert name.endswith(".tar.zst") or name.endswith(".tar.xz"), name


@pytest.mark.parametrize("release", ["3.2.0", "3.32.0", "4.0.0", "4.1.0"])
def test_shim_link_and_config_path_name_the_same_entry_for_every_layout(release):
    """What the shim link and containerd's ConfigPath name does not depend on the
    release, so moving between layouts (Go shim -> runtime-rs) changes neither:
    only the prefix link switches. The entry paths lie under the prefix (so
    they are in every tree) and are not a path of any layout."""
    kata = runtime(kata_version=release).data["kata"]
    assert kata["shim_target"] == "/opt/kata/frakti-install/containerd-shim-kata-v2"
    assert kata["config_path"] == "/opt/kata/frakti-install/configuration.toml"
    layouts = datafiles.load("kata")["kata"]["layouts"]
    for entry in (kata["shim_target"], kata["config_path"]):
        assert entry.startswith(kata["prefix"] + "/")
        assert entry not in {row[key] for row in layouts for key in ("shim_target", "config_path")}
