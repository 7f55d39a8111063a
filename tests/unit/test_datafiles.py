"""The shipped data tables: every one has a declared shape and obeys it; a
broken one is refused at load, naming the file and the key; and no caller can
change what the next one reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import yaml

from frakti_install import datafiles
from frakti_install.dataschema import SCHEMAS
from frakti_install.errors import ExitCode, FraktiInstallError

NAMES = sorted(SCHEMAS)


def test_every_data_file_has_a_shape() -> None:
    assert sorted(path.stem for path in datafiles.DATA_DIR.glob("*.yaml")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_shipped_files_validate(name: str) -> None:
    data = datafiles.load(name)
    assert data == datafiles.load(name, directory=datafiles.DATA_DIR)
    assert datafiles.validate(name, data) is data


def broken(tmp_path: Path, name: str, edit: Callable[[Dict[str, Any]], Any]) -> str:
    """The DataError message for the shipped `name` changed by `edit`."""
    data = datafiles.load(name)
    edit(data)
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(datafiles.DataError) as raised:
        datafiles.load(name, directory=tmp_path)
    assert raised.value.file == f"{name}.yaml"
    return raised.value.message


def _set(path: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    def edit(data: Dict[str, Any]) -> None:
        *parents, leaf = path.split("/")
        for part in parents:
            data = data[int(part)] if isinstance(data, list) else data[part]
        data[leaf] = value

    return edit


CASES = {
    "missing": (
        "kata",
        lambda d: d["families"]["debian"]["repo"].pop("url"),
        "data file kata.yaml: families.debian.repo.url: missing (a string)",
    ),
    "missing table": (
        "kata",
        lambda d: d.pop("containerd"),
        "data file kata.yaml: containerd: missing (a table (unit, socket, config, imports, "
        "drop_in, sandbox_image, cni_bin_dir, cni_conf_dir))",
    ),
    "wrong type": (
        "profiles",
        _set("families/rhel/selinux", "yes"),
        "data file profiles.yaml: families.rhel.selinux: expected true or false, got 'yes'",
    ),
    "unquoted version": (
        "versions",
        _set("sets/1.12/hyperd", 1.1),
        "data file versions.yaml: sets['1.12'].hyperd: expected a string, got 1.1",
    ),
    "list item": (
        "kata",
        _set("kata/modules", ["vhost_vsock", 7]),
        "data file kata.yaml: kata.modules[1]: expected a string, got 7",
    ),
    "unknown key": (
        "kata",
        _set("containerd/sokcet", "/run/containerd/containerd.sock"),
        "data file kata.yaml: containerd.sokcet: unknown key (known: unit, socket, config, "
        "imports, drop_in, sandbox_image, cni_bin_dir, cni_conf_dir)",
    ),
    "unknown optional key": (
        "versions",
        _set("rules/hyperd_for_frakti/0/frakti_bellow", "1.10"),
        "data file versions.yaml: rules.hyperd_for_frakti[0].frakti_bellow: unknown key "
        "(known: frakti_from, frakti_below, hyperd_from, hyperd_below)",
    ),
    "choice": (
        "artifacts",
        _set("artifacts/crictl/sha256", "givn"),
        "data file artifacts.yaml: artifacts.crictl.sha256: 'givn' is not one of 'given', "
        "'published'",
    ),
    "one URL or one per format": (
        "artifacts",
        _set("artifacts/hyperstart/url", {"deb": "{base}/x.deb"}),
        "data file artifacts.yaml: artifacts.hyperstart.url: expected a string or "
        "a table (deb, rpm), got a table",
    ),
    "name key not a string": (
        "versions",
        lambda d: d["sets"].update({1.13: d["sets"]["1.12"]}),
        "data file versions.yaml: sets[1.13]: the key 1.13 is not a string (quote it)",
    ),
    "reference": (
        "profiles",
        _set("systems/3/family", "debain"),
        "data file profiles.yaml: systems[3].family: 'debain' is not one of families: debian, rhel",
    ),
    "reference to an artifact": (
        "kata",
        _set("families/debian/repo/key_artifact", "kubernetes-key"),
        "data file kata.yaml: families.debian.repo.key_artifact: 'kubernetes-key' is not one "
        "of artifacts: kata, kubernetes-apt-key, kubernetes-rpm-key",
    ),
    "override of no such key": (
        "profiles",
        _set("systems/0/set/cni_sorce", "release"),
        "data file profiles.yaml: systems[0].set.cni_sorce: no such key in families.<family>",
    ),
    "override of the wrong type": (
        "profiles",
        _set("systems/0/set/packages.cni", "containernetworking-plugins"),
        "data file profiles.yaml: systems[0].set['packages.cni']: expected a list of strings, "
        "got 'containernetworking-plugins'",
    ),
    "published without its hash files": (
        "artifacts",
        lambda d: d["artifacts"]["kubeadm"].pop("hash_files"),
        "data file artifacts.yaml: artifacts.kubeadm.hash_files: missing "
        "(sha256: published needs it)",
    ),
    "a sha512 hash file without its URL": (
        "artifacts",
        lambda d: d["hash_files"]["kubernetes-release"]["ranges"][1].pop("url"),
        "data file artifacts.yaml: hash_files.kubernetes-release.ranges[1].url: missing "
        "(algorithm: sha512 needs it)",
    ),
    "signing key without fingerprints": (
        "kata",
        lambda d: d["artifacts"]["kubernetes-apt-key"].pop("fingerprints"),
        "data file kata.yaml: artifacts.kubernetes-apt-key.fingerprints: missing "
        "(sha256: fingerprint needs it)",
    ),
    "default set": (
        "versions",
        _set("default", "1.13"),
        "data file versions.yaml: default: '1.13' is not one of sets: 1.12",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_broken_file_names_file_and_key(tmp_path: Path, case: str) -> None:
    name, edit, message = CASES[case]
    assert broken(tmp_path, name, edit) == message


def test_every_problem_is_reported(tmp_path: Path) -> None:
    def edit(data: Dict[str, Any]) -> None:
        del data["bases"]
        data["artifacts"]["kubeadm"]["kind"] = ["kubernetes"]

    assert broken(tmp_path, "artifacts", edit).splitlines() == [
        "data file artifacts.yaml: bases: missing (a table of names)",
        "data file artifacts.yaml: artifacts.kubeadm.kind: expected a string, got a list",
    ]


def test_names_in_name_tables_are_free(tmp_path: Path) -> None:
    data = datafiles.load("artifacts")
    data["bases"]["my-mirror"] = "https://example.com"
    data["artifacts"]["some-tool"] = {"kind": "my-mirror", "url": "{base}/t", "sha256": "given"}
    assert datafiles.validate("artifacts", data) is data


def test_data_error_is_ours_exit_1() -> None:
    with pytest.raises(datafiles.DataError) as raised:
        datafiles.validate("versions", {"default": "1.12"})
    error = raised.value
    assert isinstance(error, FraktiInstallError) and error.exit_code == ExitCode.INTERNAL == 1
    assert str(error).startswith("data file versions.yaml: sets: missing (a table of names)\n")
    assert "bug in frakti-install" in error.hint


@pytest.mark.parametrize(
    "text,problem",
    [
        ("- a list\n", "(top level): expected a table (versions, bases, artifacts, "),
        ("versions: [\n", "not valid YAML: "),
    ],
)
def test_not_a_table_or_not_yaml(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "kata.yaml").write_text(text)
    with pytest.raises(datafiles.DataError, match="^data file kata.yaml: ") as raised:
        datafiles.load("kata", directory=tmp_path)
    assert raised.value.problems[0].startswith(problem)


def test_unknown_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(datafiles.DataError, match="no shape is declared"):
        datafiles.validate("kubernetes", {})
    with pytest.raises(datafiles.DataError, match="cannot read .*kata.yaml"):
        datafiles.load("kata", directory=tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_a_caller_cannot_change_what_the_next_reads(name: str) -> None:
    first = datafiles.load(name)
    pristine = datafiles.load(name, directory=datafiles.DATA_DIR)
    for value in first.values():  # every nested table and list, changed in place
        if isinstance(value, dict):
            for inner in value.values():
                if isinstance(inner, (dict, list)):
                    inner.clear()
            value["added"] = "by a caller"
        elif isinstance(value, list):
            value.append("by a caller")
    first.clear()
    assert datafiles.load(name) == pristine
    assert datafiles.load(name) is not datafiles.load(name)
