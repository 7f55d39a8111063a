"""Loading the YAML tables shipped in frakti_install/data."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict

import yaml

DATA_DIR = Path(__file__).parent / "data"


@functools.lru_cache(maxsize=None)
def load(name: str) -> Dict[str, Any]:
    with open(DATA_DIR / f"{name}.yaml", encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"data file {name}.yaml is not a mapping")
    return data
