"""Eval-mode BatchNorm folding on the fly, for ``yyfast.YYNet``'s blocks outside the fused span.

In eval mode ``bn(conv(x))`` is one convolution with per-output-channel scaled weights and a bias,
and ``conv1x1(bn(x))`` one 1x1 convolution (``yyfast.inference.fold``, the algebra
``optimize_for_inference`` uses too). The
fused model uses that in eval mode so a BatchNorm costs no pass over the activations (on the
2-core CPU, the eval BatchNorms outside the spans were ~20% of the forward time of yynet_small_64,
``bench/results``). The parameters and state_dict are untouched: the folded weights are computed
from them (in float64, rounded once) and cached until any of them changes (``Tensor._version``),
so optimiser steps and ``load_state_dict`` are seen at the next forward. With autograd on, or
under ``torch.compile``, they are recomputed in the graph instead, so gradients flow to the
parameters exactly as through the unfolded blocks. Without autograd on float32 CPU tensors the
blocks also run each folded convolution with its activation or residual add as a oneDNN post-op
(``yyfast.inference.cpu_fusion``).
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch
from torch import nn

Tensor = torch.Tensor


def in_dtype(dtype: torch.dtype, *tensors: Tensor) -> Tuple[Tensor, ...]:
    """The float64 folded weights and biases, rounded once to the model's dtype."""
    return tuple(t.to(dtype) for t in tensors)


def bn_tensors(bn: nn.BatchNorm2d) -> Tuple[Tensor, ...]:
    return bn.weight, bn.bias, bn.running_mean, bn.running_var


class FoldCache:
    """Holds one block's folded weights, recomputed when a source tensor is replaced or modified."""

    def __init__(self) -> None:
        self._key = None
        self._value: Tuple[Tensor, ...] = ()

    def get(self, sources: Sequence[Tensor], compute: Callable[[], Tuple[Tensor, ...]]) -> Tuple[Tensor, ...]:
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return compute()
        key = tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        if key != self._key:
            self._value = tuple(v.detach() for v in compute())
            self._key = key
        return self._value
