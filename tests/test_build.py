"""The build: the libtorch-free CMake build of the shared math (+ its ctest), and the extension's
CUDA flag. The CMake build is what shows a compiler error in seconds instead of a full pip build."""
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    path = os.path.join(home, "bin", "nvcc")
    return path if os.path.exists(path) else shutil.which("nvcc")


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_math_and_ctest(tmp_path):
    """Configure, build the shared-math test, the span-kernel check and the emulated CUDA kernels' driver
    (and the device-code compile when nvcc exists), run ctest."""
    build = tmp_path / "build"
    configure = ["cmake", "-S", ROOT, "-B", str(build), "-DYYFAST_WITH_TORCH=OFF",
                 f"-DPython3_EXECUTABLE={sys.executable}"]
    nvcc = _nvcc()
    if nvcc:
        configure.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
    else:
        configure.append("-DCMAKE_CUDA_COMPILER=")  # no CUDA: the device-code target is left out
    start = time.perf_counter()
    subprocess.run(configure, check=True, capture_output=True, text=True)
    targets = ["yyfast_math_test", "yyfast_span_bench", "yyfast_emu_driver"] + (["yyfast_math_device"] if nvcc else [])
    for target in targets:
        res = subprocess.run(["cmake", "--build", str(build), "--target", target, "-j", "2"], capture_output=True,
                             text=True)
        assert res.returncode == 0, f"building {target} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    res = subprocess.run(["ctest", "--test-dir", str(build), "--output-on-failure"], capture_output=True, text=True)
    assert res.returncode == 0, f"ctest failed:\n{res.stdout[-4000:]}"
    for name in ("shared_math", "span_kernels", "cuda_emu_kernels", "cuda_emu_faults", "cuda_emu_global_oob"):
        assert name in res.stdout, res.stdout
    assert "100% tests passed" in res.stdout, res.stdout
    print(f"cmake build + ctest: {time.perf_counter() - start:.1f} s")


def test_extension_has_cuda_kernels_when_buildable():
    """torch is a CUDA build and nvcc exists -> setup.py must have compiled the CUDA kernels."""
    ext = pytest.importorskip("yyfast._C", reason="the yyfast._C extension is not built")
    if not torch.version.cuda:
        pytest.skip("torch is a CPU-only build: the extension has only the C++ CPU kernels")
    if _nvcc() is None:
        pytest.skip("nvcc is not found: the extension has only the C++ CPU kernels")
    assert ext.cuda_built() is True, "torch.version.cuda and nvcc exist but yyfast._C was built without CUDA"


def test_ops_registered():
    pytest.importorskip("yyfast._C", reason="the yyfast._C extension is not built")
    for name in ("dw_bn_act_se_cuda", "dw_bn_act_se_cuda_backward", "yinyang_fuse_cuda", "yinyang_fuse_cuda_backward"):
        assert hasattr(torch.ops.yyfast, name), f"torch.ops.yyfast.{name} is not registered"


@pytest.mark.parametrize("env, expect", [
    ({"YYFAST_BUILD_EXT": "0"}, "building no extension"),
    ({}, "with CUDA" if torch.version.cuda and _nvcc() else "C++ CPU kernels only"),
])
def test_setup_decides_the_extension_from_the_environment(env, expect):
    """setup.py's decision, without building: YYFAST_BUILD_EXT=0 builds nothing; otherwise CUDA when
    torch is a CUDA build and nvcc is found (never from torch.cuda.is_available())."""
    run_env = {k: v for k, v in os.environ.items() if k != "YYFAST_BUILD_EXT"} | env
    run = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, env=run_env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert expect in run.stdout, run.stdout
