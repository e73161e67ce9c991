"""Write one CI stack's result as JSON: the versions it ran, what it ran, and how it went.

Run with the stack's own Python (its .venv), after its tests, by .ci/run and .ci/stacks.sh:

    python .ci/stack_result.py --name NAME --tests suite|subset --rc RC --install-s S --test-s S \
        --out .ci/results/NAME.json JUNIT.xml...

.ci/versions_table.py renders README.md's "Supported versions" table from these files.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def pytest_counts(junit_files):
    """Sum tests, failures, errors and skips over pytest --junitxml files."""
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for path in junit_files:
        root = ET.parse(path).getroot()
        suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
        for suite in suites:
            for key in total:
                total[key] += int(suite.get(key, 0))
    total["passed"] = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    return total


def versions():
    import numpy
    import torch
    import triton

    import yyfast._C as ext

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton.__version__,
        "numpy": numpy.__version__,
        "extension_cuda_kernels": bool(ext.cuda_built()),
    }


def git_commit():
    """The tested tree's commit: YYFAST_CI_COMMIT when the caller took it when it copied the tree."""
    if os.environ.get("YYFAST_CI_COMMIT"):
        return os.environ["YYFAST_CI_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return out.stdout.strip() + (" (uncommitted changes present)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--tests", required=True, choices=["suite", "subset"],
                    help="the whole suite or .ci/stacks.sh's subset")
    ap.add_argument("--rc", type=int, required=True, help="the stack's exit status (0: it passed)")
    ap.add_argument("--install-s", type=int, required=True)
    ap.add_argument("--test-s", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default=None, help="how the run differed from CI's, when it did")
    ap.add_argument("junit", nargs="*", type=Path)
    args = ap.parse_args(argv)
    result = {
        "name": args.name,
        "passed": args.rc == 0,
        "tests": args.tests,
        **versions(),
        "pytest": pytest_counts(p for p in args.junit if p.exists()),
        "install_s": args.install_s,
        "test_s": args.test_s,
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
    }
    if args.note:
        result["note"] = args.note
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"   result: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
