"""Autograd for a ``yinyang_fuse`` op, shared by the Triton and the C++/CUDA registrations.

``out = c1*A*I + c2*A + c3*I`` saves A and I; the backend's backward op gives
``dA = g*(c1*I + c2)`` and ``dI = g*(c1*A + c3)``; the coefficients get no gradient. With
``create_graph=True`` the same formula runs as differentiable tensor ops instead
(``double_backward.fuse_grads``), so second derivatives are exact.
"""
from __future__ import annotations

import torch

from .double_backward import fuse_grads


def register_fuse_autograd(op: str, backward_op) -> None:
    """Register autograd for the fuse op named ``op`` (``"yyfast::..."``), whose gradient is
    ``backward_op(grad, a, i, c1, c2, c3) -> (grad_a, grad_i)``."""

    def setup_context(ctx, inputs, output):
        a, i, c1, c2, c3 = inputs
        ctx.save_for_backward(a, i)
        ctx.c = (c1, c2, c3)

    def backward(ctx, grad):
        a, i = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the kernel's gradients would have no graph
            ga, gi = fuse_grads(grad, a, i, *ctx.c)
        else:
            ga, gi = backward_op(grad, a, i, *ctx.c)
        return ga, gi, None, None, None

    torch.library.register_autograd(op, backward, setup_context=setup_context)
