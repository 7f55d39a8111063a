from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from tests.unit.simhost import SimMachine


@pytest.fixture
def machine(tmp_path: Path) -> Callable[..., SimMachine]:
    def make(os_id: str = "debian", version: str = "12", **kwargs: object) -> SimMachine:
        return SimMachine(tmp_path / f"{os_id}-{version}", os_id, version, **kwargs)  # type: ignore[arg-type]

    return make
