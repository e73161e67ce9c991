"""The two fused ops composed from ``torch.nn.functional`` calls: the numerical truth for the kernels.

They compute exactly what the ``yyfast.reference_model`` modules compute, so running them in float64
on the CPU gives the reference every kernel test compares against; the ``reference`` backend of
``yyfast.ops`` runs them too.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .. import activations


def dw_bn_act_se_reference(x: torch.Tensor, dw_weight: torch.Tensor, bn_weight: torch.Tensor,
                           bn_bias: torch.Tensor, running_mean: Optional[torch.Tensor],
                           running_var: Optional[torch.Tensor], se_w1: torch.Tensor, se_b1: torch.Tensor,
                           se_w2: torch.Tensor, se_b2: torch.Tensor, *, stride: int = 1, eps: float = 1e-5,
                           momentum: float = 0.1, training: bool = True, act: str = "gelu",
                           gate: str = "sigmoid") -> torch.Tensor:
    """``y = d * gate(W2 act(W1 mean_hw(d) + b1) + b2)`` with ``d = act(BN(DWConv3x3(x)))``.

    BN follows ``F.batch_norm``: in training it normalises with the biased batch variance and
    updates ``running_mean``/``running_var`` in place (unbiased variance, ``momentum``).
    ``se_w1`` is (Ch//r, Ch) or (Ch//r, Ch, 1, 1); ``se_w2`` is (Ch, Ch//r) or (Ch, Ch//r, 1, 1).
    """
    channels = x.shape[1]
    z = F.conv2d(x, dw_weight, None, stride, 1, 1, channels)
    u = F.batch_norm(z, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps)
    d = activations.act(act)(u)
    p = d.mean(dim=(2, 3))
    hidden = activations.act(act)(F.linear(p, se_w1.reshape(se_w1.shape[0], -1), se_b1))
    s = activations.gate(gate)(F.linear(hidden, se_w2.reshape(se_w2.shape[0], -1), se_b2))
    return d * s[:, :, None, None]


def yinyang_fuse_reference(a: torch.Tensor, i: torch.Tensor, c1: float, c2: float, c3: float) -> torch.Tensor:
    """``out = c1*A*I + c2*A + c3*I``."""
    return c1 * a * i + c2 * a + c3 * i
