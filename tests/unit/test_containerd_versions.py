"""The files the installer writes for containerd, fed to the REAL containerd of
Debian 12 (1.6), Debian 13 (1.7) and sid (2.x): `containerd --config F config dump`
needs no daemon. The kata runtime must be where that release's CRI plugin reads it,
runc's SystemdCgroup as kubelet's cgroup driver wants, and the user's own settings
still in effect.

The binaries come from the machine's own Debian mirror (tests/unit/realcontainerd.py);
on a machine that cannot fetch them at all (not root, no apt) the tests skip and say
why; a mirror that fails is an error, never a skip.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from frakti_install import probes
from frakti_install.steps import containerd as step
from tests.unit import realcontainerd
from tests.unit.simkata import CONFIG, DOCKER_CONTAINERD_CONFIG, KataSimMachine

GLOB = "/etc/containerd/conf.d/*.toml"


@pytest.fixture(scope="session")
def binaries() -> Dict[str, realcontainerd.Binary]:
    try:
        realcontainerd.machine_can_fetch()
    except realcontainerd.Unavailable as why:
        pytest.skip(f"real containerd binaries: {why}")
    return realcontainerd.fetch()


SUITES = list(realcontainerd.SUITES)


def written(
    tmp_path: Path, binary: realcontainerd.Binary, files: Dict[str, str], **settings: Any
) -> Dict[str, Any]:
    """What the installer writes for this containerd, given the user's files (path ->
    text); returns the dump containerd makes of it and the step's verdict."""
    m = KataSimMachine(tmp_path / "sim", "debian", "12")
    m.kata.containerd_version_output = binary.version_output
    for path, text in files.items():
        m.runner.write(path, text)
    ctx = m.context(m.settings(**settings))
    version = probes.parse_containerd_version(binary.version_output)
    assert version is not None, binary.version_output
    found = step.release(version)
    main = step.edit_main_config(files.get(CONFIG), GLOB, found, CONFIG)
    drop_in, carried_from = step.drop_in_content(ctx, main, found)
    # the same files in a directory of their own: only the imported glob moves
    etc = tmp_path / "etc-containerd"
    (etc / "conf.d").mkdir(parents=True)

    def relocate(text: str) -> str:
        return text.replace(GLOB, f"{etc}/conf.d/*.toml")

    out = {CONFIG: main.text, ctx.runtime.data["containerd"]["drop_in"]: drop_in}
    for path, text in {**files, **out}.items():
        (etc / path[len("/etc/containerd/") :]).write_text(relocate(text))
    result = subprocess.run(
        [str(binary.path), "--config", str(etc / "config.toml"), "config", "dump"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    dump = probes.parse_containerd_dump(result.stdout, result.returncode, result.stderr)
    assert dump.ok, f"containerd {binary.package_version}: {dump.error}"
    ctx.facts.containerd_config = lambda path: dump  # type: ignore[method-assign]  # the verify reads it
    return {
        "dump": dump,
        "problems": step.effective_config_problems(ctx),
        "found": found,
        "main": main,
        "drop_in": drop_in,
        "carried_from": carried_from,
    }


def cri(result: Dict[str, Any], what: str, *rest: str) -> Any:
    """A value at the path the dump's config version has it."""
    dump = result["dump"]
    return dump.get(*step.config_paths(dump.version)[what], *rest)


@pytest.mark.parametrize("suite", SUITES)
def test_the_release_is_the_one_the_suite_carries(binaries, suite):
    found = probes.parse_containerd_version(binaries[suite].version_output)
    assert found is not None
    assert ".".join(map(str, found)).startswith(realcontainerd.SUITES[suite])


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("driver,systemd", [("systemd", True), ("cgroupfs", False)])
def test_fresh_host_kata_runtime_where_the_cri_reads_it(
    binaries, tmp_path, suite, driver, systemd
):
    result = written(tmp_path, binaries[suite], {}, cgroup_driver=driver)
    dump, found = result["dump"], result["found"]
    assert result["problems"] == []
    # 1.x reads version 2 and dumps it; 2.x dumps its own newest version
    assert dump.version == (2 if found.version[0] == 1 else found.max_version)
    assert result["main"].config_version == found.default_version
    assert cri(result, "runtimes", "kata", "runtime_type") == "io.containerd.kata.v2"
    assert cri(result, "runtimes", "runc", "options", "SystemdCgroup") is systemd
    assert cri(result, "default_runtime") == "runc"
    assert cri(result, "sandbox_image") == "registry.k8s.io/pause:3.10"
    cni = dump.get(*step.config_paths(dump.version)["cni"])
    assert "/opt/cni/bin" in ([cni.get("bin_dir")] + list(cni.get("bin_dirs") or []))
    # the entry link, the same for every Kata release (data/kata.yaml kata.entry)
    assert (
        cri(result, "runtimes", "kata", "options", "ConfigPath")
        == "/opt/kata/frakti-install/configuration.toml"
    )


USERS_V2 = """version = 2
# my registry and my runc
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/srv/registry-certs"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  BinaryName = "/usr/local/bin/crun"
"""
USERS_V3 = """version = 3
# my registry and my runc
[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/srv/registry-certs"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  BinaryName = "/usr/local/bin/crun"
"""
# The same settings as inline tables: toml_text's reader did not see them at all.
USERS_INLINE = """version = 2
[plugins]
  "io.containerd.grpc.v1.cri" = { registry = { config_path = "/srv/registry-certs" }, containerd = { runtimes = { runc = { options = { BinaryName = "/usr/local/bin/crun" } } } } }
"""  # noqa: E501


def users_config(suite: str, binaries: Dict[str, realcontainerd.Binary]) -> str:
    major = probes.parse_containerd_version(binaries[suite].version_output) or (0,)
    return USERS_V3 if major[0] >= 2 else USERS_V2


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("form", ["tables", "inline", "v2-on-any"])
def test_users_registry_and_runc_settings_stay_in_effect(binaries, tmp_path, suite, form):
    text = {"tables": users_config(suite, binaries), "inline": USERS_INLINE}.get(form, USERS_V2)
    result = written(tmp_path, binaries[suite], {CONFIG: text})
    assert result["problems"] == []
    assert cri(result, "runtimes", "kata", "runtime_type") == "io.containerd.kata.v2"
    options = cri(result, "runtimes", "runc", "options")
    assert options["BinaryName"] == "/usr/local/bin/crun"
    assert options["SystemdCgroup"] is True
    dump = result["dump"]
    registry = "io.containerd.grpc.v1.cri" if dump.version == 2 else "io.containerd.cri.v1.images"
    assert dump.get("plugins", registry, "registry", "config_path") == "/srv/registry-certs"
    # the drop-in is at the user's config version, whatever the release
    assert result["main"].config_version == (3 if text.startswith("version = 3") else 2)
    # containerd 1.x replaces a plugin's table: there the drop-in repeats the user's
    replaced = result["found"].sections == "replaced"
    assert (result["carried_from"] == CONFIG) is replaced
    assert "= {" not in result["drop_in"]  # carried settings become tables of the drop-in


@pytest.mark.parametrize("suite", SUITES)
def test_dockers_containerd_io_config_gets_the_cri_back(binaries, tmp_path, suite):
    result = written(tmp_path, binaries[suite], {CONFIG: DOCKER_CONTAINERD_CONFIG})
    assert result["problems"] == []
    assert result["dump"].get("disabled_plugins") == []
    assert cri(result, "runtimes", "kata", "runtime_type") == "io.containerd.kata.v2"


@pytest.mark.parametrize("suite", SUITES)
def test_imports_written_as_one_string_work_after_the_edit(binaries, tmp_path, suite):
    other = "/etc/containerd/other/*.toml"
    result = written(
        tmp_path, binaries[suite], {CONFIG: f'version = 2\nimports = "{other}"\n'}
    )
    assert result["problems"] == []
    assert result["main"].imports == (other, GLOB)


@pytest.mark.parametrize("suite", [s for s in SUITES if realcontainerd.SUITES[s].startswith("2.")])
def test_a_drop_in_at_another_version_would_lose_the_users_settings(binaries, tmp_path, suite):
    """Why the drop-in follows the main config's version: on 2.x a v3 drop-in over a
    v2 config.toml switches the merged files to v3, and the user's v2 tables are read
    by no plugin. (1.x reads no version 3 at all.)"""
    binary = binaries[suite]
    etc = tmp_path / "etc"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "config.toml").write_text(
        USERS_V2.replace("version = 2", f'version = 2\nimports = ["{etc}/conf.d/*.toml"]')
    )
    (etc / "conf.d" / "90.toml").write_text(
        'version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata]\n'
        '  runtime_type = "io.containerd.kata.v2"\n'
    )
    result = subprocess.run(
        [str(binary.path), "--config", str(etc / "config.toml"), "config", "dump"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    dump = probes.parse_containerd_dump(result.stdout, result.returncode, result.stderr)
    runc: Optional[Dict[str, Any]] = dump.get(
        *step.config_paths(dump.version)["runtimes"], "runc", "options"
    )
    assert runc is not None and runc.get("BinaryName") in ("", None)
