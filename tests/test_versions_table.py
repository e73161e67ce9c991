""".ci/versions_table.py: README's Supported versions table from CI's stack results, and its refusals."""
import importlib.util
import json
from pathlib import Path

import pytest

CI = Path(__file__).resolve().parent.parent / ".ci"


def _load():
    spec = importlib.util.spec_from_file_location("ci_versions_table", CI / "versions_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vt = _load()


def _result(name, python, torch, triton, passed=True):
    return {"name": name, "passed": passed, "tests": "subset", "python": python, "torch": torch,
            "torch_cuda": "13.0", "triton": triton, "numpy": "2.4.6", "extension_cuda_kernels": True,
            "pytest": {}, "install_s": 1, "test_s": 1, "date": "2026-11-27", "commit": "x"}


@pytest.fixture()
def repo(tmp_path):
    """A miniature repository: stacks, requirements, pyproject, README with empty markers, results."""
    (tmp_path / "stacks.txt").write_text("# name python torch triton\nold 3.10 2.11.0 3.6.0\nnew 3.12 2.15.0 3.9.0\n")
    (tmp_path / "requirements.txt").write_text("torch==2.14.1\nnumpy\n")
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools", "torch>=2.11"]\n[project]\nname = "x"\nrequires-python = ">=3.10"\n'
        'dependencies = ["torch>=2.11", "triton>=3.6; platform_system == \'Linux\'", "numpy"]\n')
    (tmp_path / "README.md").write_text(f"# x\n\n{vt.START}\n{vt.END}\n\nafter\n")
    results = tmp_path / "results"
    results.mkdir()
    for r in (_result("pinned", "3.11.7", "2.14.1+cu130", "3.8.0"), _result("old", "3.10.13", "2.11.0+cu130", "3.6.0"),
              _result("new", "3.12.1", "2.15.0+cu132", "3.9.0")):
        (results / f"{r['name']}.json").write_text(json.dumps(r))
    return tmp_path


def _main(repo, *extra):
    return vt.main(["--results", str(repo / "results"), "--readme", str(repo / "README.md"), "--stacks",
                    str(repo / "stacks.txt"), "--requirements", str(repo / "requirements.txt"),
                    "--pyproject", str(repo / "pyproject.toml"), *extra])


def test_writes_the_table_then_check_passes(repo, capsys):
    assert _main(repo, "--check") == 1                     # empty section: stale
    assert _main(repo) == 0
    text = (repo / "README.md").read_text()
    assert "| pinned (`requirements.txt`) | 3.11.7 | 2.14.1 | 3.8.0 | 13.0 | the whole suite |" in text
    assert "| old | 3.10.13 | 2.11.0 | 3.6.0 | 13.0 | the subset in `.ci/stacks.sh` |" in text
    assert text.endswith(f"{vt.END}\n\nafter\n")
    assert _main(repo, "--check") == 0


def test_check_fails_when_a_result_changes(repo):
    assert _main(repo) == 0
    (repo / "results" / "new.json").write_text(json.dumps(_result("new", "3.12.2", "2.15.0+cu132", "3.9.0")))
    assert _main(repo, "--check") == 1


@pytest.mark.parametrize("change, message", [
    (lambda r: (r / "results" / "old.json").unlink(), "no "),
    (lambda r: (r / "results" / "gone.json").write_text(json.dumps(_result("gone", "3.11.7", "2.12.0", "3.7.0"))),
     "not in .ci/stacks.txt"),
    (lambda r: (r / "results" / "old.json").write_text(json.dumps(_result("old", "3.10.13", "2.11.0", "3.6.0", False))),
     "failed"),
    (lambda r: (r / "stacks.txt").write_text("old 3.10 2.12.0 3.6.0\nnew 3.12 2.15.0 3.9.0\n"), "but the stack pins"),
    (lambda r: (r / "pyproject.toml").write_text(
        (r / "pyproject.toml").read_text().replace("torch>=2.11", "torch>=2.4")),
     "torch>=2.11"),
    (lambda r: (r / "pyproject.toml").write_text((r / "pyproject.toml").read_text().replace(">=3.10", ">=3.9")),
     'requires-python = ">=3.10"'),
])
def test_refuses_results_that_do_not_match(repo, capsys, change, message):
    change(repo)
    assert _main(repo) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
