"""The package version, whose one source is ``version`` in pyproject.toml's ``[project]`` table."""
from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

#: pyproject.toml of a source checkout (this file is yyfast/_version.py in it).
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def read_version(distribution: str = "yyfast", pyproject: Path = PYPROJECT) -> str:
    """The installed distribution's version (pip wrote it from pyproject.toml); for a source tree imported
    without being installed, pyproject.toml's own; ``"0+unknown"`` when neither exists."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        pass
    try:
        with open(pyproject, "rb") as f:
            return tomllib.load(f)["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"


__version__ = read_version()
