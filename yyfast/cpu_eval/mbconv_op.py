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


def pack(we, be, wd, bd, w1, b1, w2, b2, wp, bp) -> Tuple[torch.Tensor, ...]:
    """The op's weight arguments, in schema order, from the folded block's: expand (Ce, Cin[, 1, 1]) and
    its bias, the depthwise conv (Ce, 1, 3, 3) with its BatchNorm folded and its bias, the SE's two
    linear maps (hid, Ce) / (Ce, hid) with biases, the projection (Cout, Ce[, 1, 1]) and its bias."""
    we, be, wd, bd, w1, b1, w2, b2, wp, bp = (t.detach() for t in (we, be, wd, bd, w1, b1, w2, b2, wp, bp))
    ce = be.numel()
    return (we.reshape(we.shape[0], -1).t().contiguous(),   # (Cin, Ce)
            be.contiguous(),
            wd.reshape(ce, 9).t().contiguous(),             # (9, Ce)
            bd.contiguous(),
            w1.reshape(w1.shape[0], ce).t().contiguous(),   # (Ce, hid)
            b1.contiguous(),
            w2.reshape(ce, -1).t().contiguous(),            # (hid, Ce)
            b2.contiguous(),
            wp.reshape(wp.shape[0], ce).t().contiguous(),   # (Ce, Cout)
            bp.contiguous())


def run(x: torch.Tensor, residual: Optional[torch.Tensor], packed: Tuple[torch.Tensor, ...], stride: int, act: str,
        gate: str) -> torch.Tensor:
    """``project'(span'(act(expand'(x)))) + residual`` in one call (channels_last output)."""
    return torch.ops.yyfast.mbconv_eval(x, residual, *packed, stride, act, gate)
