"""The C++/CUDA sources in csrc/ are formatted as .clang-format says (Google style, 120 columns).

Fix a failure with ``clang-format -i`` on the files it names (the ``clang-format`` wheel pinned in
requirements.txt; another version may format differently)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = {".h", ".cpp", ".cu", ".cuh", ".inc"}


def _clang_format() -> str | None:
    """The clang-format next to this Python (the pinned wheel in the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / ("clang-format.exe" if os.name == "nt" else "clang-format")
    return str(beside) if beside.is_file() else shutil.which("clang-format")


def test_clang_format():
    tool = _clang_format()
    if tool is None:
        pytest.skip("the clang-format executable is not installed (pip install -r requirements.txt)")
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*") if p.suffix in SUFFIXES)
    assert len(files) > 20, files  # the glob found the sources
    res = subprocess.run([tool, "--dry-run", "-Werror", "--style=file", *files], cwd=ROOT, capture_output=True,
                         text=True)
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()
    assert res.returncode == 0, f"{version}: not formatted (run clang-format -i on them):\n{res.stderr[-6000:]}"
