"""The CUDA kernels of csrc/cuda, executed without a GPU: the CUDA-on-CPU emulator (csrc/emu).

* The emulated ops (the exact device and launch code of the .cu files, compiled by the host compiler)
  go through the same proofs as every backend (``op_checks``): float64 reference, float32 / float16 /
  bfloat16 / float64, both strides, NCHW and channels_last, NaN-poisoned allocations, every gradient,
  the running statistics, and a ``yynet_small_16`` training step. The shapes give several tiles per
  sample (more than one block per sample), several channel blocks with a partial last one (idle lanes),
  and SE layers whose hidden width leaves warps idle.
* The emulator's sanitizer checks catch deliberately broken copies of the real kernels (a removed
  ``__syncthreads``, off-by-one bounds, an uninitialised shared read, a wrong shuffle mask), and the
  libtorch-free driver's own fault kernels (``emu_driver --faults``).

All marked ``cuda_emu`` (``python -m pytest -m cuda_emu tests``). Building the emulated ops takes about
a minute on 2 cores the first time (cached under build/).
"""
import os
import subprocess
import time

import pytest
import torch

from cuda_emu import build_driver, compiler, emulated_cuda_kernels, mutated_kernels
from op_checks import SpanCase, check_dw_bn_act_se, check_model_step, check_yinyang_fuse

pytest.importorskip("yyfast._C", reason="the yyfast._C extension is not built (pip install -e . --no-build-isolation)")
pytest.importorskip("ninja", reason="torch.utils.cpp_extension.load needs ninja to build the emulated ops")

pytestmark = [pytest.mark.cuda_emu,
              pytest.mark.skipif(compiler() is None, reason="no host C++ compiler to build the emulator")]


@pytest.fixture(scope="module")
def emu():
    start = time.perf_counter()
    with emulated_cuda_kernels() as ops:
        print(f"emulated ops ready in {time.perf_counter() - start:.1f} s")
        yield ops


# (N, C, H, W): 37 channels -> 2 channel blocks (5 of 32 lanes active in the second), 13x21 = 273
# output positions -> 3 tiles of 128 per sample at stride 1 (1 at stride 2), hidden 9 -> 9 of the SE
# kernels' 8 warps busy (one warp twice); 70 channels -> 3 channel blocks, hidden 17.
SPAN_CASES = [
    (torch.float32, SpanCase((2, 37, 13, 21), 1, "gelu", "sigmoid", True, False)),
    (torch.float32, SpanCase((2, 37, 13, 21), 2, "silu", "hardsigmoid", True, True)),
    (torch.float32, SpanCase((1, 70, 12, 23), 1, "gelu", "hardsigmoid", False, True)),
    (torch.float32, SpanCase((3, 5, 7, 9), 2, "silu", "sigmoid", False, False)),
    (torch.float64, SpanCase((2, 37, 13, 21), 1, "silu", "sigmoid", True, True)),
    (torch.float64, SpanCase((1, 12, 2, 3), 2, "gelu", "hardsigmoid", True, False)),
    (torch.float16, SpanCase((2, 37, 13, 21), 1, "gelu", "sigmoid", True, True)),
    (torch.bfloat16, SpanCase((1, 40, 11, 13), 2, "silu", "hardsigmoid", False, False)),
]


@pytest.mark.parametrize("dtype, case", [pytest.param(d, c, id=f"{str(d)[6:]}-{c.shape}-s{c.stride}-"
                                                             f"{'train' if c.training else 'eval'}-"
                                                             f"{'cl' if c.channels_last else 'nchw'}")
                                         for d, c in SPAN_CASES])
def test_dw_bn_act_se_emulated(emu, dtype, case):
    check_dw_bn_act_se("cuda", "cpu", dtype, case)


def test_dw_bn_act_se_mixed_precision_emulated(emu):
    """bfloat16 activations with float32 parameters, as under autocast."""
    check_dw_bn_act_se("cuda", "cpu", torch.bfloat16, SpanCase((2, 37, 13, 21), 1, "gelu", "sigmoid", True, True),
                       param_dtype=torch.float32)


@pytest.mark.parametrize("dtype, shape, cl", [(torch.float32, (2, 37, 13, 21), True),  # 20202 elements: 79 blocks
                                              (torch.float16, (3, 5, 7), False), (torch.bfloat16, (300,), False),
                                              (torch.float64, (2, 3, 5, 7), False)])
def test_yinyang_fuse_emulated(emu, dtype, shape, cl):
    check_yinyang_fuse("cuda", "cpu", dtype, shape, "gate_add", channels_last=cl)


def test_yynet_small_16_step_emulated(emu):
    check_model_step("cuda", "cpu", batch=2)


def test_emulated_ops_are_the_ones_that_ran(emu):
    """The override is real: the op rejects what only the CUDA launch code checks (batch > 65535, grid z)."""
    x = torch.randn(65536, 1, 1, 1)
    w = torch.randn(1, 1, 3, 3)
    one = torch.ones(1)
    with pytest.raises(RuntimeError, match="at most 65535"):
        torch.ops.yyfast.dw_bn_act_se_cuda(x, w, one, one * 0, one * 0, one, torch.ones(1, 1), one, torch.ones(1, 1),
                                           one, 1, 1e-5, False, "gelu", "sigmoid")


# ------------------------------------------------------------------------------ sanitizer checks

@pytest.fixture(scope="module")
def drivers(tmp_path_factory):
    """The driver against the real kernels ("clean") and against each mutation, built in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    def build(name, out):
        if name == "clean":
            return build_driver(out)
        file, old, new, _expect = MUTATIONS[name]
        return build_driver(out, mutated_kernels(out, file, old, new))

    names = ["clean", *MUTATIONS]
    # The folders first, in this thread: pytest creates its base temp folder lazily and not thread-safely
    # (run alone with -m cuda_emu, two builder threads each made one and mktemp refused the other's).
    outs = [tmp_path_factory.mktemp(name) for name in names]
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        return dict(zip(names, pool.map(build, names, outs)))


@pytest.fixture(scope="module")
def clean_driver(drivers):
    return drivers["clean"]


def test_driver_real_kernels_clean_under_asan(clean_driver):
    """Every kernel, float and double, forward training/eval and backward: no emulator error, no ASan report."""
    res = subprocess.run([clean_driver], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "every kernel ran clean" in res.stdout, res.stdout + res.stderr[-4000:]


def test_driver_catches_every_deliberate_fault(clean_driver):
    res = subprocess.run([clean_driver, "--faults"], capture_output=True, text=True, timeout=120)
    print(res.stdout)
    assert res.returncode == 0 and "every deliberate fault was caught" in res.stdout, res.stdout + res.stderr
    assert res.stdout.count("caught ") == 11, res.stdout


def test_driver_asan_catches_out_of_bounds_global_write(clean_driver):
    res = subprocess.run([clean_driver, "--global-oob"], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "AddressSanitizer: heap-buffer-overflow" in res.stderr, res.stdout + res.stderr


# Deliberately broken copies of the real kernels: (file, original, mutation, what must be reported).
MUTATIONS = {
    "block_sum_rows-first-__syncthreads-removed": (
        "dw_bn_act_se_kernels.cuh",
        "  buf[threadIdx.y][threadIdx.x] = v;\n  __syncthreads();\n",
        "  buf[threadIdx.y][threadIdx.x] = v;\n",
        "shared-memory race|uninitialised shared memory"),
    "block_sum_rows-second-__syncthreads-removed": (
        "dw_bn_act_se_kernels.cuh",
        "    for (int r = 0; r < kRowLanes; ++r) total += buf[r][threadIdx.x];\n  }\n  __syncthreads();\n",
        "    for (int r = 0; r < kRowLanes; ++r) total += buf[r][threadIdx.x];\n  }\n",
        "shared-memory race"),
    "block_sum_rows-off-by-one-row-bound": (
        "dw_bn_act_se_kernels.cuh",
        "for (int r = 0; r < kRowLanes; ++r) total += buf[r][threadIdx.x];",
        "for (int r = 0; r <= kRowLanes; ++r) total += buf[r][threadIdx.x];",
        "out-of-bounds shared access: 'buf'\\[8\\] of 8"),
    "tile_end-off-by-one": (
        "dw_bn_act_se_kernels.cuh",
        "return e < s.HWo ? e : s.HWo;",
        "return e <= s.HWo ? e : s.HWo + 1;",
        "AddressSanitizer: heap-buffer-overflow"),
    "se_forward-pooled-mean-not-stored-for-last-channel": (
        "dw_bn_act_se_kernels.cuh",
        "  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {\n    acc_t sum = 0;",
        "  for (int64_t c = threadIdx.x; c < C - 1; c += blockDim.x) {\n    acc_t sum = 0;",
        "read of uninitialised shared memory 'p'"),
    "warp_sum-mask-misses-lane-31": (
        "dw_bn_act_se_kernels.cuh",
        "__shfl_down_sync(0xffffffffu, v, off)",
        "__shfl_down_sync(0x7fffffffu, v, off)",
        "not in its mask"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_emulator_catches_broken_real_kernel(drivers, name):
    import re

    expect = MUTATIONS[name][3]
    res = subprocess.run([drivers[name]], capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"the broken kernel ({name}) was not caught:\n{out[-3000:]}"
    found = re.search(expect, out)
    assert found, f"{name}: expected /{expect}/ in:\n{out[-3000:]}"
    line = next(ln for ln in out.splitlines() if found.group(0) in ln)
    print(f"{name}: {line.strip()[:300]}")
