"""One fake (meta) implementation and one autograd formula per fused op, shared by every backend.

A backend defines its ops (``yyfast::<op>_<backend>`` and ``..._backward``, schemas in
``schemas.py``) and calls ``register_dw_bn_act_se(backend)``/``register_yinyang_fuse(backend)``
here, which register the fakes of both ops and the forward's autograd (through that backend's
backward op), and return the backend's functional entry point (see ``yyfast.ops``). With
``create_graph=True`` the autograd formulas run ``double_backward`` instead of the backward op, so
second derivatives are exact.
"""
from __future__ import annotations

import torch

from yyfast.kernels.output_spec import output_format, span_output_size, stats_dtype

from .double_backward import fuse_grads, span_grads
from .schemas import op_names


# ----------------------------------------------------------------------------- dw_bn_act_se

def _span_fake(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1, se_w2, se_b2, stride, eps,
               training, act, gate):
    n, c, h, w = x.shape
    ho, wo = span_output_size(h, w, stride)
    acc = stats_dtype(x)
    y = torch.empty((n, c, ho, wo), dtype=x.dtype, device=x.device, memory_format=output_format(x))
    return y, x.new_empty((c,), dtype=acc), x.new_empty((c,), dtype=acc), x.new_empty((n, c), dtype=acc)


def _span_backward_fake(grad_y, x, dw_weight, bn_weight, bn_bias, mean, var, pooled, se_w1, se_b1, se_w2, se_b2,
                        stride, eps, training, act, gate):
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=output_format(x))
    return (gx, *(torch.empty_like(t, memory_format=torch.contiguous_format)
                  for t in (dw_weight, bn_weight, bn_bias, se_w1, se_b1, se_w2, se_b2)))


def _span_setup(ctx, inputs, output):
    (x, dw_weight, bn_weight, bn_bias, _rm, _rv, se_w1, se_b1, se_w2, se_b2, stride, eps, training, act,
     gate) = inputs
    _y, mean, var, pooled = output
    # Only x and per-channel/per-sample vectors are saved: the backward recomputes the depthwise
    # output, BN and activation from x (and the SE MLP from pooled) instead of keeping any
    # activation-sized tensor.
    ctx.save_for_backward(x, dw_weight, bn_weight, bn_bias, mean, var, pooled, se_w1, se_b1, se_w2, se_b2)
    ctx.args = (stride, eps, training, act, gate)
    # mean/var feed only the running statistics (under no_grad); pooled is a saved intermediate.
    ctx.mark_non_differentiable(mean, var, pooled)


def register_dw_bn_act_se(backend: str):
    """Fakes and autograd for ``yyfast::dw_bn_act_se_<backend>``; returns
    ``dw_bn_act_se(x, ..., stride, eps, training, act, gate) -> (y, mean, var)``."""
    name, backward_name = op_names("dw_bn_act_se", backend)
    torch.library.register_fake(f"yyfast::{name}", _span_fake)
    torch.library.register_fake(f"yyfast::{backward_name}", _span_backward_fake)
    op, backward_op = getattr(torch.ops.yyfast, name), getattr(torch.ops.yyfast, backward_name)

    def backward(ctx, grad_y, _grad_mean, _grad_var, _grad_pooled):
        x, dw_weight, bn_weight, bn_bias, mean, var, pooled, se_w1, se_b1, se_w2, se_b2 = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the kernel's gradients would have no graph
            grads = span_grads(ctx.needs_input_grad, grad_y, x, dw_weight, bn_weight, bn_bias, mean, var, se_w1,
                               se_b1, se_w2, se_b2, *ctx.args)
        else:
            grads = backward_op(grad_y, x, dw_weight, bn_weight, bn_bias, mean, var, pooled, se_w1, se_b1, se_w2,
                                se_b2, *ctx.args)
        gx, gw, ggamma, gbeta, gw1, gb1, gw2, gb2 = grads
        return gx, gw, ggamma, gbeta, None, None, gw1, gb1, gw2, gb2, None, None, None, None, None

    torch.library.register_autograd(f"yyfast::{name}", backward, setup_context=_span_setup)

    def dw_bn_act_se(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1, se_w2, se_b2,
                     stride: int, eps: float, training: bool, act: str, gate: str):
        y, mean, var, _pooled = op(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1, se_w2,
                                   se_b2, int(stride), float(eps), bool(training), str(act), str(gate))
        return y, mean, var

    dw_bn_act_se.__doc__ = f"The span on the {backend} backend: ``(y, mean, var)`` (see ``yyfast.ops``)."
    return dw_bn_act_se


# ----------------------------------------------------------------------------- yinyang_fuse

def _fuse_fake(a, i, c1, c2, c3):
    return torch.empty_like(a, memory_format=output_format(a))


def _fuse_backward_fake(grad, a, i, c1, c2, c3):
    fmt = output_format(a)
    return torch.empty_like(a, memory_format=fmt), torch.empty_like(a, memory_format=fmt)


def _fuse_setup(ctx, inputs, output):
    a, i, c1, c2, c3 = inputs
    ctx.save_for_backward(a, i)
    ctx.c = (c1, c2, c3)


def register_yinyang_fuse(backend: str):
    """Fakes and autograd for ``yyfast::yinyang_fuse_<backend>`` (``out = c1*A*I + c2*A + c3*I`` saves
    A and I; the coefficients get no gradient); returns ``yinyang_fuse(a, i, c1, c2, c3) -> out``."""
    name, backward_name = op_names("yinyang_fuse", backend)
    torch.library.register_fake(f"yyfast::{name}", _fuse_fake)
    torch.library.register_fake(f"yyfast::{backward_name}", _fuse_backward_fake)
    op, backward_op = getattr(torch.ops.yyfast, name), getattr(torch.ops.yyfast, backward_name)

    def backward(ctx, grad):
        a, i = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the kernel's gradients would have no graph
            ga, gi = fuse_grads(grad, a, i, *ctx.c)
        else:
            ga, gi = backward_op(grad, a, i, *ctx.c)
        return ga, gi, None, None, None

    torch.library.register_autograd(f"yyfast::{name}", backward, setup_context=_fuse_setup)

    def yinyang_fuse(a, i, c1, c2, c3):
        return op(a, i, float(c1), float(c2), float(c3))

    yinyang_fuse.__doc__ = f"The Yin/Yang fusion on the {backend} backend (see ``yyfast.ops``)."
    return yinyang_fuse
