"""A whole BatchNorm-folded MBConv block as one C++ call on float32 CPU tensors (``yyfast::mbconv_eval``).

The op (``csrc/cpu/mbconv_eval.cpp``) keeps each sample's expanded activations in per-thread buffers
that persist across calls, so the two 4x-wide tensors of the block are never allocated: with glibc's
default allocator those were fresh mmaps, page-faulted on every call (issue 17). ``pack`` puts a
block's folded weights into the op's layouts (the callers cache the result: ``inference/block_plan.py``
for the folded model, ``model.FusedMBConv`` with its fold); ``usable`` says where the op can run.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

_STATE = {"checked": False, "ok": False}


def available() -> bool:
    """Whether the extension with ``yyfast::mbconv_eval`` is built and loads here (checked once)."""
    if not _STATE["checked"]:
        _STATE["checked"] = True
        try:
            import yyfast._C  # noqa: F401  (registers the ops)

            _STATE["ok"] = hasattr(torch.ops.yyfast, "mbconv_eval")
        except Exception:  # extension not built: the blocks run op by op
            _STATE["ok"] = False
    return bool(_STATE["ok"])


def usable(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling() and available())


def shortcut_weights(shortcut: nn.Module, stride: int) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """The (weight, bias) of an MBConv shortcut the op computes itself: ``MaxPool(3, stride, 1) -> 1x1 conv``
    at stride 2 or a 1x1 conv at stride 1 (the reference's two forms). None for an identity or any other
    module (the caller passes its output as ``residual``)."""
    pool, conv = (shortcut[0], shortcut[1]) if isinstance(shortcut, nn.Sequential) and len(shortcut) == 2 else (
        None, shortcut)
    if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
        return None
    if stride == 1 and pool is None:
        return conv.weight, conv.bias
    if (stride == 2 and isinstance(pool, nn.MaxPool2d) and pool.kernel_size in (3, (3, 3))
            and pool.stride in (2, (2, 2)) and pool.padding in (1, (1, 1)) and pool.dilation in (1, (1, 1))
            and not pool.ceil_mode):
        return conv.weight, conv.bias
    return None


def _transposed(w: torch.Tensor, rows: int) -> torch.Tensor:
    """``w`` as a (rows, -1) matrix, transposed: a view of ``w`` where its layout allows (the op takes a
    matrix or the transpose of a contiguous one), else a contiguous copy."""
    m = w.reshape(rows, -1).t()
    return m if m.is_contiguous() or m.t().is_contiguous() else m.contiguous()


def pack(we, be, wd, bd, w1, b1, w2, b2, wp, bp, shortcut_w=None, shortcut_b=None) -> Tuple[torch.Tensor, ...]:
    """The op's weight arguments, in schema order, from the folded block's: expand (Ce, Cin[, 1, 1]) and
    its bias, the depthwise conv (Ce, 1, 3, 3) with its BatchNorm folded and its bias, the SE's two
    linear maps (hid, Ce) / (Ce, hid) with biases, the projection (Cout, Ce[, 1, 1]) and its bias, then
    the shortcut's 1x1 weight (Cout, Cin, 1, 1) or None (its bias, if any, joins the projection's).

    Views of the given tensors wherever their layout allows (transposed matrices: the op reads either
    layout), not copies: the folded model's parameters are then what the op reads, so a write to one, by
    any route, needs no repacking, and its forward checks only the copies (InferenceYYNet._fast_record)."""
    we, be, wd, bd, w1, b1, w2, b2, wp, bp = (t.detach() for t in (we, be, wd, bd, w1, b1, w2, b2, wp, bp))
    ce = be.numel()
    if shortcut_b is not None:
        bp = bp + shortcut_b.detach()
    wsc = None if shortcut_w is None else _transposed(shortcut_w.detach(), shortcut_w.shape[0])
    return (_transposed(we, we.shape[0]),   # (Cin, Ce)
            be.contiguous(),
            _transposed(wd, ce),            # (9, Ce)
            bd.contiguous(),
            _transposed(w1, w1.shape[0]),   # (Ce, hid)
            b1.contiguous(),
            _transposed(w2, ce),            # (hid, Ce)
            b2.contiguous(),
            _transposed(wp, wp.shape[0]),   # (Ce, Cout)
            bp.contiguous(),
            wsc)                            # (Cin, Cout) or None


def gemm_layout(block: nn.Module) -> None:
    """Stores a folded MBConv block's 1x1 convolution weights (the expansion, the projection, the shortcut's
    own 1x1 conv) with their (Cout, Cin) matrix transposed in memory: strides (1, Cout, ...), the (Cin,
    Cout) row-major B that the op's GEMMs read. ``pack``'s views of them are then contiguous and the op
    reads them as they are; a weight in the usual layout (after ``p.data = t`` or ``model.to(...)``) is
    transposed once a call instead (csrc/cpu/mbconv_eval.cpp). Values, shapes and every PyTorch route
    are unchanged (F.conv2d and oneDNN take any strides)."""
    weights = [block.expand.weight, block.project.weight]
    shortcut = shortcut_weights(block.shortcut, block.span.stride)  # a 1x1 conv the op computes itself
    if shortcut is not None:
        weights.append(shortcut[0])
    for w in weights:
        if w.dim() == 4 and tuple(w.shape[2:]) == (1, 1):
            w.data = gemm_b(w.detach())


def gemm_b(w: torch.Tensor) -> torch.Tensor:
    """A 1x1 weight (Cout, Cin[, 1, 1]) with the same values and shape, its (Cout, Cin) matrix transposed in
    memory (strides (1, Cout, ...)): what ``pack`` turns into the op's row-major (Cin, Cout) by a view."""
    return w.reshape(w.shape[0], -1).t().contiguous().t().view(w.shape)


def owns_shortcut(packed: Tuple[torch.Tensor, ...]) -> bool:
    """Whether the op computes the block's shortcut itself (the caller passes no residual)."""
    return packed[10] is not None


def run(x: torch.Tensor, residual: Optional[torch.Tensor], packed: Tuple[torch.Tensor, ...], stride: int, act: str,
        gate: str) -> torch.Tensor:
    """``project'(span'(act(expand'(x)))) + residual`` (or + the shortcut, when ``packed`` has it) in one
    call (channels_last output)."""
    return torch.ops.yyfast.mbconv_eval(x, residual, *packed[:10], stride, act, gate, packed[10])
