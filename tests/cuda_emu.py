"""The CUDA-on-CPU emulator for the tests: builds it and routes the ``yyfast`` ops to it.

* ``load_emulator()`` compiles ``csrc/emu/emu_ops.cpp`` (the exact device and launch code of
  ``csrc/cuda``, through ``csrc/emu/cuda_emu.h``) with ``torch.utils.cpp_extension.load`` into
  ``build/`` on first use (ninja rebuilds it when a kernel header changes, so a changed ``.cu`` header
  is what runs) and returns ``torch.ops.yyfast_emu``.
* ``emulated_cuda_kernels()`` makes the CPU kernels of the ``yyfast`` ops (what ``backend="cuda"``
  runs on CPU tensors, normally the C++ CPU twins) call the emulated CUDA kernels instead, so the
  shared proofs of ``op_checks`` (autograd, fakes, running statistics and all) run unchanged on them.
* ``build_driver()`` compiles the libtorch-free driver ``csrc/emu/tests/emu_driver.cpp`` (ASan + UBSan),
  optionally against a mutated copy of the kernels.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
OPS = ("dw_bn_act_se_cuda", "dw_bn_act_se_cuda_backward", "yinyang_fuse_cuda", "yinyang_fuse_cuda_backward")


def compiler():
    """The host C++ compiler (``$CXX``, else c++/g++/clang++), or None."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@functools.lru_cache(maxsize=None)
def load_emulator():
    """Compile (first call, about a minute on 2 cores) and load the emulated ops; ``torch.ops.yyfast_emu``."""
    from torch.utils.cpp_extension import load

    tag = f"py{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__.replace('+', '_')}"
    build = os.path.join(ROOT, "build", f"cuda_emu-{tag}")
    os.makedirs(build, exist_ok=True)
    # -O2: the emulated kernels' own arithmetic is a small part of their time (the barriers among host
    # threads dominate), -O0 would still make the backward of the test shapes ~2x slower.
    load(name="yyfast_cuda_emu", sources=[os.path.join(CSRC, "emu", "emu_ops.cpp"),
                                          os.path.join(CSRC, "dw_bn_act_se_host.cpp")],
         extra_include_paths=[CSRC], extra_cflags=["-O2", "-g0", "-Wno-unknown-pragmas"], build_directory=build,
         is_python_module=False, verbose=False)
    return torch.ops.yyfast_emu


@contextlib.contextmanager
def emulated_cuda_kernels():
    """Inside the block, ``backend="cuda"`` on CPU tensors runs the emulated CUDA kernels."""
    emu = load_emulator()
    from yyfast.ops import cuda_ops  # noqa: F401  (loads yyfast._C: schemas, fakes, autograd)

    lib = torch.library.Library("yyfast", "IMPL")
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel": that is the point
            for name in OPS:
                lib.impl(name, getattr(emu, name), "CPU")
        yield emu
    finally:
        lib._destroy()  # the C++ CPU twins are the CPU kernels again


def build_driver(out_dir, kernels_dir: str | None = None) -> str:
    """Compile ``emu_driver.cpp`` with ASan + UBSan into ``out_dir``; ``kernels_dir`` is a directory with
    a (mutated) copy of ``cuda/`` and ``common/`` searched before ``csrc``. Returns the executable."""
    cxx = compiler()
    exe = os.path.join(str(out_dir), "emu_driver")
    includes = ([f"-I{kernels_dir}"] if kernels_dir else []) + [f"-I{CSRC}"]
    # -O0 without -g: 7 s of CPU per build instead of 30 s at -O1 -g (g++ 12), and the driver still runs
    # in ~4 s (its time is the host threads' barriers, not the arithmetic).
    cmd = [cxx, "-std=c++17", "-O0", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-pthread",
           "-Wno-unknown-pragmas", *includes,
           os.path.join(CSRC, "emu", "tests", "emu_driver.cpp"), "-o", exe]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"building the emulator driver failed:\n{res.stderr[-4000:]}"
    return exe


def mutated_kernels(dest, file: str, old: str, new: str) -> str:
    """A copy of ``csrc/cuda`` and ``csrc/common`` under ``dest`` with ``old`` replaced by ``new`` (exactly
    once) in ``cuda/<file>``; returns the directory to put before ``csrc`` on the include path."""
    root = os.path.join(str(dest), "csrc")
    for sub in ("cuda", "common"):
        shutil.copytree(os.path.join(CSRC, sub), os.path.join(root, sub))
    path = os.path.join(root, "cuda", file)
    with open(path) as f:
        text = f.read()
    assert text.count(old) == 1, f"the mutation's target occurs {text.count(old)} times in {file}: {old!r}"
    with open(path, "w") as f:
        f.write(text.replace(old, new))
    return root
