"""The layers of pyproject.toml's import-linter contracts hold: no module
imports a higher layer, the step modules share only their building blocks,
and the runtime profiles do not know each other."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def lint_imports() -> str:
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs import-linter")
    return found


def test_no_module_imports_a_higher_layer() -> None:
    result = subprocess.run(
        [lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    """The check can fail: a copy of the package where a step imports the CLI breaks it."""
    package = tmp_path / "src" / "frakti_install"
    shutil.copytree(ROOT / "src" / "frakti_install", package, symlinks=True)
    step = package / "steps" / "swap.py"
    step.write_text(step.read_text() + "\nfrom frakti_install import cli  # noqa\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    result = subprocess.run(
        [lint_imports(), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0, result.stdout
    assert "frakti_install.steps.swap -> frakti_install.cli" in result.stdout, result.stdout
