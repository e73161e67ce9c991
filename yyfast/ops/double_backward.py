"""Twice-differentiable backward formulas for the fused ops, used when a backward runs with
``create_graph=True`` (gradient penalties, Hessian-vector products; issue 12).

The fused backward kernels (C++/CUDA and Triton) are opaque to autograd: called with grad mode on
they return first-order gradients with no graph behind them, so a second derivative through them
was silently zero or missing. When grad mode is on inside the backward (which autograd does exactly
when ``create_graph=True``), the backends call these instead: the first-order gradients are taken
through the float reference (``yyfast.ops.composed``) recomputed from the saved inputs, an exact,
differentiable formulation of the same function, so every higher derivative is autograd's. The
ordinary backward (``create_graph=False``, and the backward that ``torch.compile`` traces) keeps the
fused kernels.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .composed import dw_bn_act_se_reference

#: Positions of the differentiable tensor inputs of the span op (x, dw_weight, bn_weight, bn_bias,
#: running_mean, running_var, se_w1, se_b1, se_w2, se_b2): the running statistics get no gradient.
_SPAN_GRAD_INPUTS = (0, 1, 2, 3, 6, 7, 8, 9)


def span_grads(needs_input_grad: Sequence[bool], grad_y: Tensor, x: Tensor, dw_weight: Tensor, bn_weight: Tensor,
               bn_bias: Tensor, mean: Tensor, var: Tensor, se_w1: Tensor, se_b1: Tensor, se_w2: Tensor,
               se_b2: Tensor, stride: int, eps: float, training: bool, act: str,
               gate: str) -> Tuple[Optional[Tensor], ...]:
    """The 8 gradients (x, dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2) of the span,
    as differentiable functions of the saved inputs and ``grad_y``.

    ``mean``/``var`` are the op's saved statistics: in eval the running statistics (constants of the
    function), in training the batch statistics, which the reference recomputes from ``x`` instead
    so that their dependence on ``x`` and ``dw_weight`` is differentiated too.
    """
    stats = (None, None) if training else (mean.detach().to(x.dtype), var.detach().to(x.dtype))
    with torch.enable_grad():
        y = dw_bn_act_se_reference(x, dw_weight, bn_weight, bn_bias, *stats, se_w1, se_b1, se_w2, se_b2,
                                   stride=stride, eps=eps, momentum=0.0, training=training, act=act, gate=gate)
        tensors = (x, dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2)
        wanted = [i for i, pos in enumerate(_SPAN_GRAD_INPUTS) if needs_input_grad[pos]]
        found = torch.autograd.grad(y, [tensors[i] for i in wanted], grad_y, create_graph=True, allow_unused=True)
    grads: list = [None] * len(tensors)
    for i, g in zip(wanted, found):
        grads[i] = torch.zeros_like(tensors[i]) if g is None else g
    return tuple(grads)


def fuse_grads(grad: Tensor, a: Tensor, i: Tensor, c1: float, c2: float, c3: float) -> Tuple[Tensor, Tensor]:
    """``(dA, dI) = (g*(c1*I + c2), g*(c1*A + c3))`` as differentiable tensor ops."""
    return grad * (c1 * i + c2), grad * (c1 * a + c3)
