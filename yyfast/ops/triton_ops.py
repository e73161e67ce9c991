"""The Triton backend: the kernels in ``yyfast.kernels`` registered as PyTorch custom ops.

Ops (namespace ``yyfast``), each with a fake (meta) implementation and, for the forward ops, an
autograd formula, so they run under ``torch.compile(fullgraph=True)`` and pass
``torch.library.opcheck``:

* ``triton_dw_bn_act_se(x, ...) -> (y, mean, var, pooled, h1, h2)`` and
  ``triton_dw_bn_act_se_backward(grad_y, ...) -> 8 gradients``;
* ``triton_yinyang_fuse(a, i, c1, c2, c3) -> out`` and ``triton_yinyang_fuse_backward``.

``torch.library.custom_op`` is used rather than ``triton_op``: under TRITON_INTERPRET the latter's
fake-tensor test fails (the interpreter touches the fake tensors' data), see KERNELS.md.

The public functions at the bottom are the backend contract of ``yyfast.ops`` (its docstring).
Importing this module raises ImportError only when Triton itself is missing.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor

import triton  # noqa: F401  (an ImportError here means: no Triton, no Triton backend)

from yyfast.kernels import dw_bn_act_se as _span
from yyfast.kernels import yinyang_fuse as _fuse
from .double_backward import span_grads
from .fuse_autograd import register_fuse_autograd

__all__ = ["dw_bn_act_se", "yinyang_fuse"]


# ---------------------------------------------------------------------------------------------
# dw_bn_act_se
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("yyfast::triton_dw_bn_act_se", mutates_args=())
def _span_op(x: Tensor, dw_weight: Tensor, bn_weight: Tensor, bn_bias: Tensor, running_mean: Tensor,
             running_var: Tensor, se_w1: Tensor, se_b1: Tensor, se_w2: Tensor, se_b2: Tensor, stride: int,
             eps: float, training: bool, act: str, gate: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _span.forward(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1, se_w2, se_b2,
                         stride, eps, training, act, gate)


@_span_op.register_fake
def _span_fake(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1, se_w2, se_b2, stride,
               eps, training, act, gate):
    n, c, h, w = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    y = x.new_empty((n, c, ho, wo)).contiguous(memory_format=_span.memory_format_of(x))
    f32 = dict(dtype=torch.float32, device=x.device)
    return (y, x.new_empty((c,), **f32), x.new_empty((c,), **f32), x.new_empty((n, c), **f32),
            x.new_empty((n, se_w1.shape[0]), **f32), x.new_empty((n, c), **f32))


@torch.library.custom_op("yyfast::triton_dw_bn_act_se_backward", mutates_args=())
def _span_backward_op(grad_y: Tensor, x: Tensor, dw_weight: Tensor, bn_weight: Tensor, bn_bias: Tensor,
                      mean: Tensor, var: Tensor, se_w1: Tensor, se_b1: Tensor, se_w2: Tensor, se_b2: Tensor,
                      pooled: Tensor, h1: Tensor, h2: Tensor, stride: int, eps: float, training: bool, act: str,
                      gate: str) -> List[Tensor]:
    return list(_span.backward(grad_y, x, dw_weight, bn_weight, bn_bias, mean, var, se_w1, se_b1, se_w2, se_b2,
                               pooled, h1, h2, stride, eps, training, act, gate))


@_span_backward_op.register_fake
def _span_backward_fake(grad_y, x, dw_weight, bn_weight, bn_bias, mean, var, se_w1, se_b1, se_w2, se_b2, pooled,
                        h1, h2, stride, eps, training, act, gate):
    gx = x.new_empty(x.shape).contiguous(memory_format=_span.memory_format_of(x))
    return [gx] + [torch.empty_like(t, memory_format=torch.contiguous_format)
                   for t in (dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2)]


def _span_setup(ctx, inputs, output):
    x, dw_weight, bn_weight, bn_bias, _rm, _rv, se_w1, se_b1, se_w2, se_b2, stride, eps, training, act, gate = inputs
    _y, mean, var, pooled, h1, h2 = output
    ctx.save_for_backward(x, dw_weight, bn_weight, bn_bias, mean, var, se_w1, se_b1, se_w2, se_b2, pooled, h1, h2)
    ctx.args = (stride, eps, training, act, gate)


def _span_backward(ctx, grad_y, _gmean, _gvar, _gpooled, _gh1, _gh2):
    # Only y is differentiable: mean/var feed the running statistics (no_grad), and pooled/h1/h2
    # are saved intermediates that the public function never returns.
    x, dw_weight, bn_weight, bn_bias, mean, var, se_w1, se_b1, se_w2, se_b2, pooled, h1, h2 = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: the kernel's gradients would have no graph
        gx, gdw, ggamma, gbeta, gw1, gb1, gw2, gb2 = span_grads(
            ctx.needs_input_grad, grad_y, x, dw_weight, bn_weight, bn_bias, mean, var, se_w1, se_b1, se_w2, se_b2,
            *ctx.args)
        return gx, gdw, ggamma, gbeta, None, None, gw1, gb1, gw2, gb2, None, None, None, None, None
    gx, gdw, ggamma, gbeta, gw1, gb1, gw2, gb2 = torch.ops.yyfast.triton_dw_bn_act_se_backward(
        grad_y, x, dw_weight, bn_weight, bn_bias, mean, var, se_w1, se_b1, se_w2, se_b2, pooled, h1, h2, *ctx.args)
    return gx, gdw, ggamma, gbeta, None, None, gw1, gb1, gw2, gb2, None, None, None, None, None


_span_op.register_autograd(_span_backward, setup_context=_span_setup)


# ---------------------------------------------------------------------------------------------
# yinyang_fuse
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("yyfast::triton_yinyang_fuse", mutates_args=())
def _fuse_op(a: Tensor, i: Tensor, c1: float, c2: float, c3: float) -> Tensor:
    return _fuse.forward(a, i, c1, c2, c3)


@_fuse_op.register_fake
def _fuse_fake(a, i, c1, c2, c3):
    return torch.empty_like(a, memory_format=_fuse.dense_format(a))


@torch.library.custom_op("yyfast::triton_yinyang_fuse_backward", mutates_args=())
def _fuse_backward_op(grad: Tensor, a: Tensor, i: Tensor, c1: float, c2: float, c3: float) -> Tuple[Tensor, Tensor]:
    return _fuse.backward(grad, a, i, c1, c2, c3)


@_fuse_backward_op.register_fake
def _fuse_backward_fake(grad, a, i, c1, c2, c3):
    fmt = _fuse.dense_format(a)
    return torch.empty_like(a, memory_format=fmt), torch.empty_like(i, memory_format=fmt)


register_fuse_autograd("yyfast::triton_yinyang_fuse", torch.ops.yyfast.triton_yinyang_fuse_backward)


# ---------------------------------------------------------------------------------------------
# The backend contract used by yyfast.ops
# ---------------------------------------------------------------------------------------------
def dw_bn_act_se(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1, se_w2, se_b2,
                 stride: int, eps: float, training: bool, act: str, gate: str):
    """(y, mean, var): y differentiable; mean/var the float32 batch mean and biased variance
    (training) or the running statistics (eval)."""
    y, mean, var, _pooled, _h1, _h2 = torch.ops.yyfast.triton_dw_bn_act_se(
        x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1, se_w2, se_b2, int(stride),
        float(eps), bool(training), act, gate)
    return y, mean, var


def yinyang_fuse(a, i, c1, c2, c3):
    return torch.ops.yyfast.triton_yinyang_fuse(a, i, float(c1), float(c2), float(c3))
