"""Python side of the ``yyfast._C`` ops: fake (meta) implementations and autograd.

The schemas are declared once in ``csrc/ops.cpp`` (``TORCH_LIBRARY(yyfast, ...)``); the CUDA
kernels (csrc/cuda) and their C++ CPU twins (csrc/cpu) register under it. Importing this module
loads the extension; it raises ImportError if ``yyfast._C`` is missing.
"""
from __future__ import annotations

import torch

from .. import _C  # noqa: F401  (loading the library registers the ops)

_lib = torch.ops.yyfast


@torch.library.register_fake("yyfast::yinyang_fuse")
def _yinyang_fuse_fake(a, i, c1, c2, c3):
    return torch.empty_like(a, memory_format=torch.preserve_format)


@torch.library.register_fake("yyfast::yinyang_fuse_backward")
def _yinyang_fuse_backward_fake(grad, a, i, c1, c2, c3):
    return torch.empty_like(a), torch.empty_like(i)


def _fuse_setup(ctx, inputs, output):
    a, i, c1, c2, c3 = inputs
    ctx.save_for_backward(a, i)
    ctx.c = (c1, c2, c3)


def _fuse_backward(ctx, grad):
    a, i = ctx.saved_tensors
    ga, gi = _lib.yinyang_fuse_backward(grad, a, i, *ctx.c)
    return ga, gi, None, None, None


torch.library.register_autograd("yyfast::yinyang_fuse", _fuse_backward, setup_context=_fuse_setup)


def yinyang_fuse(a, i, c1, c2, c3):
    return _lib.yinyang_fuse(a, i, float(c1), float(c2), float(c3))


def dw_bn_act_se(*args):
    raise NotImplementedError("the C++/CUDA dw_bn_act_se kernels are not written yet")
