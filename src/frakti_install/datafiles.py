"""Loading the YAML tables shipped in frakti_install/data.

Each table is checked against its declared shape (dataschema.SCHEMAS) when it
is first read: a broken table stops the run there, naming the file and key,
instead of a KeyError inside some step. Every caller gets its own copy, so no
caller can change what the next one reads.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from frakti_install.dataschema import SCHEMAS, check
from frakti_install.errors import ExitCode, FraktiInstallError

DATA_DIR = Path(__file__).parent / "data"


class DataError(FraktiInstallError):
    """A shipped data file is unreadable or not of the shape the code relies on: our bug."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, file: str, problems: Sequence[str]) -> None:
        self.file = file
        self.problems = list(problems)
        super().__init__(
            "\n".join(f"data file {file}: {problem}" for problem in self.problems),
            hint="This is a bug in frakti-install's shipped data; please report it.",
        )


def validate(name: str, data: Any) -> Dict[str, Any]:
    """`data` itself when it has the shape of data/<name>.yaml, else DataError (every problem)."""
    spec = SCHEMAS.get(name)
    if spec is None:
        raise DataError(f"{name}.yaml", ["no shape is declared for it (dataschema.SCHEMAS)"])
    problems = check(spec, data)
    if problems:
        raise DataError(f"{name}.yaml", problems)
    return data  # a dict: the shape says so


def _read(name: str, directory: Path) -> Dict[str, Any]:
    path = directory / f"{name}.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DataError(path.name, [f"cannot read {path}: {error.strerror}"]) from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise DataError(path.name, [f"not valid YAML: {error}"]) from error
    return validate(name, data)


@functools.lru_cache(maxsize=None)
def _pickled(name: str) -> bytes:
    # Kept pickled: unpickling is the cheapest deep copy (about 5x faster than copy.deepcopy).
    return pickle.dumps(_read(name, DATA_DIR), protocol=pickle.HIGHEST_PROTOCOL)


def load(name: str, directory: Optional[Path] = None) -> Dict[str, Any]:
    """data/<name>.yaml, validated, as the caller's own copy (read and checked once).

    `directory` (tests) reads <directory>/<name>.yaml instead, every time."""
    if directory is not None:
        return _read(name, Path(directory))
    data: Dict[str, Any] = pickle.loads(_pickled(name))
    return data
