"""Python side of the ``yyfast._C`` ops: fake (meta) implementations and autograd.

The schemas are declared once in ``csrc/ops.cpp`` (``TORCH_LIBRARY(yyfast, ...)``); the CUDA
kernels (csrc/cuda) and their C++ CPU twins (csrc/cpu) register under it. Importing this module
loads the extension; it raises ImportError if ``yyfast._C`` is missing.

``torch.ops.yyfast.dw_bn_act_se`` returns ``(y, mean, var, pooled)``: ``pooled`` (N, C) is the SE
input ``mean_hw(d)``, saved for the backward (which recomputes the tiny SE MLP from it); the
functional ``dw_bn_act_se`` below returns the contract's ``(y, mean, var)``.
"""
from __future__ import annotations

import torch

from .. import _C  # noqa: F401  (loading the library registers the ops)
from .double_backward import span_grads
from .fuse_autograd import register_fuse_autograd

_lib = torch.ops.yyfast


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _out_format(x: torch.Tensor) -> torch.memory_format:
    """The output's memory format: channels_last iff x suggests it, the same stride heuristic as the
    C++ ``output_format`` (``Tensor::suggest_memory_format``), so fake and real strides agree."""
    from torch._prims_common import suggest_memory_format

    fmt = suggest_memory_format(x)
    return torch.channels_last if fmt == torch.channels_last else torch.contiguous_format


# ----------------------------------------------------------------------------- yinyang_fuse

@torch.library.register_fake("yyfast::yinyang_fuse")
def _yinyang_fuse_fake(a, i, c1, c2, c3):
    return torch.empty_like(a, memory_format=torch.preserve_format)


@torch.library.register_fake("yyfast::yinyang_fuse_backward")
def _yinyang_fuse_backward_fake(grad, a, i, c1, c2, c3):
    return torch.empty_like(a), torch.empty_like(i)


register_fuse_autograd("yyfast::yinyang_fuse", _lib.yinyang_fuse_backward)


def yinyang_fuse(a, i, c1, c2, c3):
    return _lib.yinyang_fuse(a, i, float(c1), float(c2), float(c3))


# ----------------------------------------------------------------------------- dw_bn_act_se

@torch.library.register_fake("yyfast::dw_bn_act_se")
def _dw_bn_act_se_fake(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1, se_w2, se_b2,
                       stride, eps, training, act, gate):
    n, c, h, w = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    acc = _acc_dtype(x)
    y = torch.empty((n, c, ho, wo), dtype=x.dtype, device=x.device, memory_format=_out_format(x))
    mean = x.new_empty((c,), dtype=acc)
    var = x.new_empty((c,), dtype=acc)
    pooled = x.new_empty((n, c), dtype=acc)
    return y, mean, var, pooled


@torch.library.register_fake("yyfast::dw_bn_act_se_backward")
def _dw_bn_act_se_backward_fake(grad_y, x, dw_weight, bn_weight, bn_bias, mean, var, pooled, se_w1, se_b1, se_w2,
                                se_b2, stride, eps, training, act, gate):
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_out_format(x))
    return (gx, torch.empty_like(dw_weight, memory_format=torch.contiguous_format),
            torch.empty_like(bn_weight), torch.empty_like(bn_bias),
            torch.empty_like(se_w1, memory_format=torch.contiguous_format), torch.empty_like(se_b1),
            torch.empty_like(se_w2, memory_format=torch.contiguous_format), torch.empty_like(se_b2))


_SPAN_TENSORS = ("x", "dw_weight", "bn_weight", "bn_bias", "running_mean", "running_var", "se_w1", "se_b1", "se_w2",
                 "se_b2")


def _span_setup(ctx, inputs, output):
    (x, dw_weight, bn_weight, bn_bias, _rm, _rv, se_w1, se_b1, se_w2, se_b2, stride, eps, training, act,
     gate) = inputs
    _y, mean, var, pooled = output
    # Only x and per-channel/per-sample vectors are saved: the backward recomputes the depthwise
    # output, BN and activation from x instead of keeping any activation-sized tensor.
    ctx.save_for_backward(x, dw_weight, bn_weight, bn_bias, mean, var, pooled, se_w1, se_b1, se_w2, se_b2)
    ctx.args = (stride, eps, training, act, gate)
    ctx.mark_non_differentiable(mean, var, pooled)


def _span_backward(ctx, grad_y, _grad_mean, _grad_var, _grad_pooled):
    # mean/var/pooled are marked non-differentiable (mean/var feed only the running statistics).
    x, dw_weight, bn_weight, bn_bias, mean, var, pooled, se_w1, se_b1, se_w2, se_b2 = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: the kernel's gradients would have no graph
        gx, gw, ggamma, gbeta, gw1, gb1, gw2, gb2 = span_grads(
            ctx.needs_input_grad, grad_y, x, dw_weight, bn_weight, bn_bias, mean, var, se_w1, se_b1, se_w2, se_b2,
            *ctx.args)
        return gx, gw, ggamma, gbeta, None, None, gw1, gb1, gw2, gb2, None, None, None, None, None
    grads = _lib.dw_bn_act_se_backward(grad_y, x, dw_weight, bn_weight, bn_bias, mean, var, pooled, se_w1, se_b1,
                                       se_w2, se_b2, *ctx.args)
    gx, gw, ggamma, gbeta, gw1, gb1, gw2, gb2 = grads
    return gx, gw, ggamma, gbeta, None, None, gw1, gb1, gw2, gb2, None, None, None, None, None


torch.library.register_autograd("yyfast::dw_bn_act_se", _span_backward, setup_context=_span_setup)


def dw_bn_act_se(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1, se_w2, se_b2,
                 stride: int, eps: float, training: bool, act: str, gate: str):
    """The span on the ``yyfast._C`` kernels: returns ``(y, mean, var)`` (see ``yyfast.ops``)."""
    y, mean, var, _pooled = _lib.dw_bn_act_se(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1,
                                              se_b1, se_w2, se_b2, int(stride), float(eps), bool(training), str(act),
                                              str(gate))
    return y, mean, var
