"""Test setup shared by every test file.

Without a GPU, Triton kernels run on CPU tensors in Triton's interpreter: TRITON_INTERPRET must
be set before Triton (and yyfast's kernels) are imported, so it is set here, first.
"""
import os

import pytest

try:
    import torch

    _HAS_GPU = torch.cuda.is_available()
except Exception:  # pragma: no cover - torch missing is an install error reported by the imports
    _HAS_GPU = False

if not _HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

#: Devices every op test runs on: the CPU always, the GPU when one is visible.
DEVICES = ["cpu",
           pytest.param("cuda", marks=pytest.mark.skipif(not _HAS_GPU, reason="needs a CUDA GPU; none is visible"))]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
