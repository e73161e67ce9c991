"""The folded model's MBConv blocks as one ``yyfast::mbconv_eval`` call each (``cpu_eval.mbconv_op``):
the packed weights cached on the block, rebuilt if a weight tensor is replaced or modified in place."""
from __future__ import annotations

from typing import Tuple

import torch

from ..cpu_eval import mbconv_op

available = mbconv_op.available
usable = mbconv_op.usable


def _sources(block):
    span = block.span
    shortcut = mbconv_op.shortcut_weights(block.shortcut, span.stride) or (None, None)
    return (block.expand.weight, block.expand.bias, span.conv.weight, span.conv.bias, span.fc1.weight,
            span.fc1.bias, span.fc2.weight, span.fc2.bias, block.project.weight, block.project.bias, *shortcut)


def _key(block) -> Tuple:
    return tuple(None if t is None else (t.data_ptr(), t._version, t.dtype, t.device) for t in _sources(block))


def forget(module) -> None:
    """Drop ``module``'s cached packing (``packed_weights`` packs again at the next use)."""
    module.__dict__.pop("_packed", None)


def packed_weights(block) -> Tuple[torch.Tensor, ...]:
    """The op's weight arguments for ``block`` (a ``FoldedMBConv``), in schema order, cached."""
    key = _key(block)
    cached = block.__dict__.get("_packed")
    if cached is not None and cached[0] == key:
        return cached[1]
    packed = mbconv_op.pack(*_sources(block))
    block.__dict__["_packed"] = (key, packed)
    return packed


def run_block(block, x: torch.Tensor, shortcut) -> torch.Tensor:
    """``project'(span'(act(expand'(x)))) + shortcut(x)`` in one call (channels_last output); ``shortcut(x)``
    is called only for a shortcut the op does not compute itself (``mbconv_op.shortcut_weights``)."""
    packed = packed_weights(block)
    residual = None if mbconv_op.owns_shortcut(packed) else shortcut(x)
    return mbconv_op.run(x, residual, packed, block.span.stride, block.act, block.span.gate)
