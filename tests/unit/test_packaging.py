"""What the wheel carries: bootstrap.py and templates/ reach the package only
through symlinks (data/bootstrap.py -> ../../../bootstrap.py, templates ->
../../templates), so the built wheel must hold their bytes, not links or
stale copies; and `frakti-install cluster` ships the bootstrap.py that
test_bootstrap.py runs."""

from __future__ import annotations

import importlib.util
import shutil
import stat
import subprocess
import sys
import zipfile
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml

from frakti_install import cluster

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "frakti_install"
# What the build reads; the rest of the checkout (tests, .venv, .git) stays behind.
SOURCES = ("pyproject.toml", "README.md", "bootstrap.py", "templates", "src")
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
# pip's words when it cannot get the build requirements (setuptools, wheel) offline
NO_INDEX = (
    "No matching distribution found",
    "Could not find a version",
    "NewConnectionError",
    "Network is unreachable",
)


def _bdist_wheel_here() -> bool:
    """This Python can build without an index: setuptools with bdist_wheel
    (its own since 70.1, before that from the wheel package)."""
    try:
        version = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        return False
    major_minor = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    return major_minor >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel built from a copy of the checkout (symlinks kept as symlinks),
    so the build neither writes build/ into the tree nor reuses a stale one."""
    tmp = tmp_path_factory.mktemp("wheel")
    tree, out = tmp / "tree", tmp / "dist"
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, symlinks=True, ignore=JUNK)
        else:
            tree.mkdir(exist_ok=True)
            shutil.copy2(source, tree / name)
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(tree)]
    isolated = not _bdist_wheel_here()
    if not isolated:
        argv.insert(4, "--no-build-isolation")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 and isolated and any(words in output for words in NO_INDEX):
        pytest.skip(
            "cannot build the wheel offline: this Python's setuptools has no bdist_wheel "
            "(pip install wheel) and pip reaches no index for the build requirements"
        )
    assert proc.returncode == 0, output
    (built,) = out.glob("frakti_install-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def _files(archive: zipfile.ZipFile, prefix: str) -> Dict[str, bytes]:
    return {
        info.filename[len(prefix) :]: archive.read(info)
        for info in archive.infolist()
        if info.filename.startswith(prefix) and not info.is_dir()
    }


def test_wheel_carries_bootstrap_bytes(wheel: zipfile.ZipFile) -> None:
    shipped = wheel.read("frakti_install/data/bootstrap.py")
    assert shipped == (ROOT / "bootstrap.py").read_bytes()


def test_wheel_carries_every_template(wheel: zipfile.ZipFile) -> None:
    templates = _files(wheel, "frakti_install/templates/")
    expected = {path.name: path.read_bytes() for path in (ROOT / "templates").glob("*.j2")}
    assert expected and templates.keys() == expected.keys()
    for name, data in expected.items():
        assert templates[name] == data, name


def test_wheel_carries_the_data_tables(wheel: zipfile.ZipFile) -> None:
    data = _files(wheel, "frakti_install/data/")
    tables = [*(PACKAGE / "data").glob("*.yaml"), *(PACKAGE / "data").glob("*.yml")]
    assert {"artifacts.yaml", "kata.yaml", "cluster-playbook.yml"} <= {p.name for p in tables}
    for path in tables:
        assert data.get(path.name) == path.read_bytes(), path.name


def test_wheel_holds_no_symlinks(wheel: zipfile.ZipFile) -> None:
    links: List[str] = [
        info.filename for info in wheel.infolist() if stat.S_ISLNK(info.external_attr >> 16)
    ]
    assert not links


# --------------------------------------------------------------------------- cluster


def _tasks(node: Any) -> Iterator[Dict[str, Any]]:
    """Every task of the playbook, in blocks too."""
    if isinstance(node, list):
        for item in node:
            yield from _tasks(item)
    elif isinstance(node, dict):
        if "name" in node:
            yield node
        for key in ("tasks", "block", "rescue", "always", "pre_tasks", "post_tasks"):
            yield from _tasks(node.get(key, []))


def test_cluster_ships_the_bootstrap_the_tests_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit import test_bootstrap

    monkeypatch.delenv("FRAKTI_INSTALL_BOOTSTRAP", raising=False)
    inventory = cluster.Inventory(
        name="one",
        hosts=(cluster.ClusterHost("10.0.0.1", "master", cluster.SSHTarget("10.0.0.1")),),
        install=cluster.InstallSource(version="0.1.0"),
    )
    shipped = Path(
        cluster.extra_vars(inventory, dry_run=True, workdir=tmp_path)["frakti_bootstrap"]
    )
    # every play (master, workers) copies exactly that file to its hosts
    copies = [
        task["ansible.builtin.copy"]
        for task in _tasks(yaml.safe_load(cluster.PLAYBOOK.read_text()))
        if str(task.get("ansible.builtin.copy", {}).get("dest", "")).endswith("/bootstrap.py")
    ]
    assert len(copies) == 2 and {copy["src"] for copy in copies} == {"{{ frakti_bootstrap }}"}
    # ... which is the package's own resource (what a wheel install finds) ...
    resource = resources.files("frakti_install") / "data" / "bootstrap.py"
    assert shipped == cluster.find_bootstrap() == Path(str(resource)).resolve()
    # ... and the very file test_bootstrap.py loads and runs
    tested = Path(str(test_bootstrap.bs.__file__)).resolve()
    assert shipped == tested == test_bootstrap.BOOTSTRAP.resolve()
    assert shipped.read_bytes() == tested.read_bytes() == resource.read_bytes()
