"""Eval-mode BatchNorm folding on the fly, for ``yyfast.YYNet``'s blocks outside the fused span.

In eval mode ``bn(conv(x))`` is one convolution with per-output-channel scaled weights and a bias,
and ``conv1x1(bn(x))`` one 1x1 convolution (``yyfast.bn_fold``, the algebra
``optimize_for_inference`` uses too). The
fused model uses that in eval mode so a BatchNorm costs no pass over the activations (on the
2-core CPU, the eval BatchNorms outside the spans were ~20% of the forward time of yynet_small_64,
``bench/results``). The parameters and state_dict are untouched: the folded weights are computed
from them (in float64, rounded once) and cached until any of them changes (``FoldCache``), so
optimiser steps, running-statistic updates and ``load_state_dict`` are seen at the next forward. With autograd on, or
under ``torch.compile``, they are recomputed in the graph instead, so gradients flow to the
parameters exactly as through the unfolded blocks. Without autograd on float32 CPU tensors the
blocks also run each folded convolution with its activation or residual add as a oneDNN post-op
(``yyfast.cpu_fusion``).
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
    """Holds one block's folded weights, recomputed unless every source tensor still holds exactly
    the values they were folded from.

    The key is a copy of the sources' contents, compared with ``torch.equal`` at each use, because
    no cheaper key sees every change: ATen's ``batch_norm`` updates ``running_mean``/``running_var``
    in place without bumping their ``Tensor._version`` (its schema does not declare them mutated; a
    train-mode forward, with or without grad, leaves the version unchanged), and ``p.data.copy_()``
    or ``p.data.fill_()`` write through a tensor with its own version counter. A stale fold is a
    silent wrong output (issue 12), so the cache pays one read of the sources per eval forward:
    measured on the 2-core CPU (yynet_small_64, float32, channels_last, median of 7x5 forwards),
    12.3 ms a forward at batch 1 against 11.8 ms with the old version key and 14.6 ms folding anew
    every time; at batch 64 all three are ~385 ms (within noise). The snapshot costs one copy of
    the folded blocks' parameters and statistics.
    """

    def __init__(self) -> None:
        self._sources: Tuple[Tensor, ...] = ()
        self._value: Tuple[Tensor, ...] = ()

    def _unchanged(self, sources: Sequence[Tensor]) -> bool:
        if len(sources) != len(self._sources):
            return False
        return all(s.dtype == t.dtype and s.device == t.device and s.shape == t.shape and torch.equal(s, t)
                   for s, t in zip(self._sources, sources))

    def get(self, sources: Sequence[Tensor], compute: Callable[[], Tuple[Tensor, ...]]) -> Tuple[Tensor, ...]:
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return compute()
        if not self._unchanged(sources):
            self._value = tuple(None if v is None else v.detach() for v in compute())
            self._sources = tuple(t.detach().clone() for t in sources)
        return self._value
