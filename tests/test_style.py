"""The Python lint: ``ruff check .`` with the rules in pyproject.toml's ``[tool.ruff]`` passes on the
whole tree (requirements.txt and the ``test`` extra install ruff)."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                                reason="ruff is not installed (pip install -r requirements.txt installs it)")


def _ruff(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_ruff_check_passes():
    proc = _ruff("check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_reads_the_projects_rules():
    """The check above uses pyproject.toml's rule selection, not ruff's defaults (which, in ruff 0.17,
    include pyupgrade's annotation rules that this code base does not follow): an unused import (F401)
    and a late-binding closure (B023) are reported, a ``typing.List`` annotation (UP006) is not."""
    code = "import os\nfrom typing import List\n\nfns: List = []\nfor k in range(3):\n    fns.append(lambda: k)\n"
    proc = _ruff("check", "--no-cache", "--stdin-filename", os.path.join(ROOT, "yyfast", "_probe.py"), "-",
                 stdin=code)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "F401" in out and "B023" in out and "UP006" not in out, out
