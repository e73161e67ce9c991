"""The version has one source, pyproject.toml's ``[project] version``: the installed metadata, ``yyfast.__version__``
and ``python -m yyfast.info`` report it, setup.py does not repeat it, and an uninstalled source tree reads it."""
import os
import re
import tomllib
from importlib import metadata

import yyfast
from yyfast import _version, info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject_version():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["version"]


def test_one_version_everywhere():
    version = _pyproject_version()
    assert yyfast.__version__ == version == metadata.version("yyfast") == info.collect()["yyfast"]


def test_setup_py_and_the_package_do_not_repeat_it():
    for path in ("setup.py", "yyfast/__init__.py"):
        with open(os.path.join(ROOT, path)) as f:
            text = f.read()
        assert not re.search(r"""version\s*=\s*["']\d""", text), f"{path} spells out a version"


def test_uninstalled_source_tree_reads_pyproject(tmp_path):
    missing = "yyfast-no-such-distribution"
    assert _version.read_version(missing) == _pyproject_version()
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\nname = "x"\n')
    assert _version.read_version(missing, bad) == "0+unknown"
    assert _version.read_version(missing, tmp_path / "absent.toml") == "0+unknown"
