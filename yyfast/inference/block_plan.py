"""A whole folded MBConv block as one C++ call on float32 CPU tensors (``yyfast::mbconv_eval``).

The op (``csrc/cpu/mbconv_eval.cpp``) keeps each sample's expanded activations in per-thread buffers
that persist across calls, so the two 4x-wide tensors of the block are never allocated: with glibc's
default allocator those were fresh mmaps, page-faulted on every call (issue 17). This module packs
the block's folded weights into the op's layouts once (cached on the block, rebuilt if a weight
tensor is replaced or modified in place) and decides where the op can run.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

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


def _sources(block):
    span = block.span
    return (block.expand.weight, block.expand.bias, span.conv.weight, span.conv.bias, span.fc1.weight,
            span.fc1.bias, span.fc2.weight, span.fc2.bias, block.project.weight, block.project.bias)


def _key(block) -> Tuple:
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in _sources(block))


def packed_weights(block) -> Tuple[torch.Tensor, ...]:
    """The op's weight arguments for ``block`` (a ``FoldedMBConv``), in schema order, cached."""
    key = _key(block)
    cached = block.__dict__.get("_packed")
    if cached is not None and cached[0] == key:
        return cached[1]
    we, be, wd, bd, w1, b1, w2, b2, wp, bp = (t.detach() for t in _sources(block))
    ce = be.numel()
    packed = (we.reshape(we.shape[0], -1).t().contiguous(),   # (Cin, Ce)
              be.contiguous(),
              wd.reshape(ce, 9).t().contiguous(),             # (9, Ce)
              bd.contiguous(),
              w1.reshape(w1.shape[0], ce).t().contiguous(),   # (Ce, hid)
              b1.contiguous(),
              w2.reshape(ce, -1).t().contiguous(),            # (hid, Ce)
              b2.contiguous(),
              wp.reshape(wp.shape[0], ce).t().contiguous(),   # (Ce, Cout)
              bp.contiguous())
    block.__dict__["_packed"] = (key, packed)
    return packed


def run_block(block, x: torch.Tensor, residual: Optional[torch.Tensor]) -> torch.Tensor:
    """``project'(span'(act(expand'(x)))) + residual`` in one call (channels_last output)."""
    span = block.span
    return torch.ops.yyfast.mbconv_eval(x, residual, *packed_weights(block), span.stride, block.act, span.gate)
