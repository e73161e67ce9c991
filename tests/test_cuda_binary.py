"""What the nvcc-built extension contains: SASS for sm_80 and sm_90, plus compute_90 PTX (the
``+PTX`` of the default ``TORCH_CUDA_ARCH_LIST=8.0;9.0+PTX``), so GPUs newer than the list (sm_100,
sm_120) JIT-compile the kernels instead of failing with "no kernel image is available"."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import resources  # noqa: E402  (bench/resources.py)


def _extension():
    try:
        from yyfast import _C
    except ImportError as exc:
        pytest.skip(f"yyfast._C is not built ({exc})")
    if not _C.cuda_built():
        pytest.skip("yyfast._C was built without CUDA kernels (no nvcc or a CPU-only torch)")
    return _C.__file__


def _cuobjdump(*args):
    try:
        tool = resources.cuobjdump()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    return subprocess.run([tool, *args], capture_output=True, text=True).stdout


def test_default_build_carries_sm80_sm90_code_and_ptx():
    so = _extension()
    sass = set(re.findall(r"arch = (sm_\d+)", _cuobjdump("--list-elf", so) + _cuobjdump("--dump-resource-usage", so)))
    if sass != {"sm_80", "sm_90"}:
        pytest.skip(f"built for {sorted(sass)}, not the default TORCH_CUDA_ARCH_LIST (8.0;9.0+PTX)")
    ptx = _cuobjdump("--list-ptx", so)
    assert "sm_90" in ptx or "compute_90" in ptx, f"no compute_90 PTX in {so}: {ptx!r}"


def test_resource_report_reads_every_cuda_kernel():
    so = _extension()
    rows = resources.cuda_rows(so)
    kernels = {r["kernel"].split("<")[0] for r in rows}
    assert kernels and {r["arch"] for r in rows} >= {90}
    assert all(r["reg"] > 0 for r in rows)
    assert all("(" not in r["kernel"] for r in rows), "names are short"
