"""Triton kernels for the Yin/Yang fusion ``out = c1*A*I + c2*A + c3*I`` and its backward.

Elementwise over the tensors' storage: A, I (and the gradient) are made dense in A's
``output_format`` (channels_last when A's strides suggest it, as the C++ ops do), so one flat index
addresses the same logical element in all of them. One pass each way, the byte floor: forward
reads A and I and writes out; backward reads g, A, I and writes dA = g*(c1*I + c2) and
dI = g*(c1*A + c3). Math in float32, results in the inputs' dtype.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .output_spec import output_format


@triton.jit
def yinyang_fuse_fwd_kernel(a_ptr, i_ptr, out_ptr, numel, c1, c2, c3, BLOCK: tl.constexpr):
    """out = c1*a*i + c2*a + c3*i over one block of the flat storage."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < numel
    a = tl.load(a_ptr + offs, mask=m, other=0.0).to(tl.float32)
    i = tl.load(i_ptr + offs, mask=m, other=0.0).to(tl.float32)
    out = c1 * a * i + c2 * a + c3 * i
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def yinyang_fuse_bwd_kernel(g_ptr, a_ptr, i_ptr, ga_ptr, gi_ptr, numel, c1, c2, c3, BLOCK: tl.constexpr):
    """dA = g*(c1*i + c2), dI = g*(c1*a + c3) over one block of the flat storage."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < numel
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + offs, mask=m, other=0.0).to(tl.float32)
    i = tl.load(i_ptr + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(ga_ptr + offs, (g * (c1 * i + c2)).to(ga_ptr.dtype.element_ty), mask=m)
    tl.store(gi_ptr + offs, (g * (c1 * a + c3)).to(gi_ptr.dtype.element_ty), mask=m)


def _block(t: torch.Tensor) -> int:
    # GPU: 1024 elements (4 warps x 8 a thread: 16-byte vector loads for half types).
    # Interpreter: its cost is per program, so few large programs.
    return 1024 if t.is_cuda else 1 << 16


def forward(a: torch.Tensor, i: torch.Tensor, c1: float, c2: float, c3: float) -> torch.Tensor:
    fmt = output_format(a)
    a = a.contiguous(memory_format=fmt)
    i = i.contiguous(memory_format=fmt)
    out = torch.empty_like(a, memory_format=fmt)
    numel = a.numel()
    if numel:
        block = _block(a)
        yinyang_fuse_fwd_kernel[(triton.cdiv(numel, block),)](a, i, out, numel, float(c1), float(c2), float(c3),
                                                              BLOCK=block)
    return out


def backward(grad: torch.Tensor, a: torch.Tensor, i: torch.Tensor, c1: float, c2: float, c3: float):
    fmt = output_format(a)
    a = a.contiguous(memory_format=fmt)
    i = i.contiguous(memory_format=fmt)
    grad = grad.contiguous(memory_format=fmt)
    ga = torch.empty_like(a, memory_format=fmt)
    gi = torch.empty_like(i, memory_format=fmt)
    numel = a.numel()
    if numel:
        block = _block(a)
        yinyang_fuse_bwd_kernel[(triton.cdiv(numel, block),)](grad, a, i, ga, gi, numel, float(c1), float(c2),
                                                             float(c3), BLOCK=block)
    return ga, gi
