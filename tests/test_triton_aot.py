"""The Triton kernels compile ahead of time for real GPUs (sm_80, sm_90) on this GPU-less machine.

The interpreter (TRITON_INTERPRET=1, every other Triton test) proves what the kernels compute;
this proves the GPU compiler accepts them, for the specialisations the launch code really makes:
bench/triton_aot.py records every ``kernel[grid](...)`` the launch functions in ``kernels/*.py``
make for every model preset's shapes (fp32/fp16/bf16, train/eval, forward/backward, gelu/silu,
stride 1/2, NCHW/channels_last) and compiles them with ``triton.compile(ASTSource(...),
target=GPUTarget("cuda", cc, 32))``. Each run compiles the small cover in which every kernel meets
each of its pointer-dtype combinations and constant values once; ``python bench/triton_aot.py``
compiles all distinct specialisations. It runs in a subprocess, because this test process imports
the kernels under the interpreter, as functions Triton cannot compile.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import resources  # noqa: E402  (bench/resources.py)
import triton_aot  # noqa: E402  (bench/triton_aot.py)

pytest.importorskip("triton")


def _defined_kernels():
    """Every ``*_kernel`` defined in kernels/*.py (interpreted here, so found by name)."""
    from yyfast.kernels import dw_bn_act_se, yinyang_fuse

    return {name for mod in (dw_bn_act_se, yinyang_fuse) for name in vars(mod) if name.endswith("_kernel")}


@pytest.mark.triton_aot
def test_every_kernel_compiles_for_sm80_and_sm90(tmp_path):
    out = tmp_path / "aot.json"
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "triton_aot.py"), "--quick", "--subset", "cover",
                           "--arch", "80,90", "--json", str(out)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    by_arch = {arch: {r["key"] for r in rows if r["arch"] == arch} for arch in (80, 90)}
    assert by_arch[80] and by_arch[80] == by_arch[90], "every specialisation compiled for both targets"
    assert {r["name"] for r in rows} == _defined_kernels(), "every kernel in kernels/*.py launched and compiled"
    assert all(r["cubin_bytes"] > 0 for r in rows)
    # every dtype reaches every op's kernels: fp32, fp16 and bf16 pointers appear
    for name in _defined_kernels():
        kinds = set().union(*({*r["dtypes"]} for r in rows if r["name"] == name))
        assert {"fp32", "fp16", "bf16"} <= kinds, (name, kinds)


def _spec(name, act, stride, ptrs):
    """A stand-in with the fields cover() reads."""
    class K:
        arg_names = ["x_ptr", "ACT", "STRIDE"]
        fn = type("F", (), {"__name__": name})
    return triton_aot.Specialisation(K, {"x_ptr": ptrs, "ACT": "constexpr", "STRIDE": "constexpr"},
                                     {(1,): act, (2,): stride}, {}, {})


def test_cover_meets_every_constant_and_dtype_once():
    specs = [_spec("k", a, s, p) for a in (0, 1) for s in (1, 2) for p in ("*fp32", "*bf16")]
    chosen = triton_aot.cover(specs)
    assert len(chosen) == 2  # (act, stride, dtype) all met by two launches, e.g. (0,1,fp32) + (1,2,bf16)
    feats = set().union(*(triton_aot._features(s) for s in chosen))
    assert feats == set().union(*(triton_aot._features(s) for s in specs))


def test_parse_resource_usage_reads_cuobjdump_text():
    text = """
Fatbin elf code:
================
arch = sm_90
code version = [1,8]

Resource usage:
 Common:
  GLOBAL:0
 Function _Z3fooPf:
  REG:72 STACK:8 SHARED:1024 LOCAL:16 CONSTANT[0]:616 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    (row,) = resources.parse_resource_usage(text)
    assert row == {"arch": 90, "function": "_Z3fooPf", "reg": 72, "stack": 8, "shared": 1024, "local": 16}
