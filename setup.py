"""Build yyfast and its extension ``yyfast._C``.

* torch is a CUDA build and nvcc is found (``CUDA_HOME``, else ``/usr/local/cuda``): a
  ``CUDAExtension`` with ``csrc/**/*.cpp`` and ``csrc/**/*.cu``, for ``TORCH_CUDA_ARCH_LIST``
  (default ``8.0;9.0+PTX``: sm_80 and sm_90 code, plus compute_90 PTX that the driver JIT-compiles
  on newer GPUs such as sm_100 and sm_120). Whether a GPU is present on the build machine does not matter.
* Otherwise: a ``CppExtension`` with the C++ (CPU) sources only.
* ``YYFAST_BUILD_EXT=0``: no extension; the package still imports (reference backend).

Install with ``pip install -e . --no-build-isolation`` (torch must already be installed).
"""
import glob
import os
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _nvcc_home():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [home] if home else ["/usr/local/cuda"]
    for path in candidates:
        if path and os.path.exists(os.path.join(path, "bin", "nvcc")):
            return path
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


def extensions():
    if os.environ.get("YYFAST_BUILD_EXT", "1") == "0":
        print("yyfast: YYFAST_BUILD_EXT=0, building no extension")
        return [], {}
    import torch

    cuda_home = _nvcc_home() if torch.version.cuda else None
    if cuda_home:
        # torch.utils.cpp_extension reads CUDA_HOME at import time; without it, it guesses
        # /usr/local from /usr/local/bin/nvcc and fails to find the headers.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    cpp = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cu = sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    # -g0: Python's CFLAGS add -g, which makes the template-heavy ATen TUs slower to compile and link
    # (CI compiles everything on 2 cores on every run).
    cxx = ["-O3", "-g0", "-fopenmp"] if os.name != "nt" else ["/O2"]
    include = [os.path.join(ROOT, "csrc")]
    if cuda_home:
        print(f"yyfast: building yyfast._C with CUDA ({cuda_home}, arches {os.environ['TORCH_CUDA_ARCH_LIST']})")
        ext = CUDAExtension("yyfast._C", cpp + cu, include_dirs=include, define_macros=[("YYFAST_WITH_CUDA", None)],
                            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
                            extra_link_args=["-fopenmp"] if os.name != "nt" else [])
    else:
        why = "torch is a CPU-only build" if not torch.version.cuda else "nvcc was not found"
        print(f"yyfast: building yyfast._C with C++ CPU kernels only ({why})")
        ext = CppExtension("yyfast._C", cpp, include_dirs=include, extra_compile_args={"cxx": cxx},
                           extra_link_args=["-fopenmp"] if os.name != "nt" else [])
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()

# Name, version and dependencies come from pyproject.toml's [project] table (the version's one place).
setup(
    packages=find_packages(include=["yyfast", "yyfast.*"]) + ["yyfast.kernels"],
    package_dir={"yyfast.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
