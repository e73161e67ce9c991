"""The eval 3x3 convolutions by Winograd (``yyfast::conv3x3_winograd_eval``, float32 CPU).

oneDNN runs the stems' 64->64 3x3 convolutions at this CPU's peak already, so the only way to make
them faster is fewer multiplications: F(4x4, 3x3) does 4x fewer, F(2x2, 3x3) 2.25x
(``csrc/cpu/winograd_conv.cpp``; the op takes either, by the shape of the transformed weights).
The model uses F(4x4, 3x3) (``TILE``): a 64->64 convolution with add + GELU on 32x32 took 0.179 ms
against F(2x2, 3x3)'s 0.250 at batch 1 and 2.97 against 4.17 ms at batch 16 (2 threads; 1 thread:
0.349 vs 0.483 and 5.86 vs 8.40 ms; 2-core EPYC, best of 3 medians, 2026-11-28), for a rounding error
of about 1e-6 of the largest output instead of 3e-7 (the tests hold both to the float64 convolution).
This module prepares the transformed weights ``U = G g G^T`` once per convolution (in float64, then
cast; cached on the module, rebuilt when the weight changes) and says where the op applies: a
3x3, stride 1, padding 1, ungrouped convolution with channel counts that are multiples of 16.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from . import mbconv_op

# F(2x2, 3x3)'s filter transform (B^T and A^T, additions only, are in the C++ kernels).
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
# F(4x4, 3x3)'s, for the points 0, 1, -1, 1/2, -2, infinity: row j is (1, p, p^2) / prod_{l != j} (p - p_l)
# (B^T and A^T: csrc/cpu/winograd_kernels.inc).
_G4 = ((1.0, 0.0, 0.0), (1 / 3, 1 / 3, 1 / 3), (-1 / 3, 1 / 3, -1 / 3), (-16 / 15, -8 / 15, -4 / 15),
       (1 / 15, -2 / 15, 4 / 15), (0.0, 0.0, 1.0))
#: The output tile the model's convolutions use: F(TILE x TILE, 3x3).
TILE = 4


def available() -> bool:
    return mbconv_op.available() and hasattr(torch.ops.yyfast, "conv3x3_winograd_eval")


def applies(conv: nn.Conv2d) -> bool:
    """Whether ``conv``'s geometry is one the op computes."""
    return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.in_channels % 16 == 0
            and conv.out_channels % 16 == 0 and conv.weight.dtype == torch.float32
            and conv.weight.device.type == "cpu")


def transform_weights(weight: torch.Tensor, tile: int = TILE) -> torch.Tensor:
    """``U = G g G^T`` for every (out, in) filter pair of ``weight`` (Cout, Cin, 3, 3): ((tile + 2)^2, Cin,
    Cout) for F(tile x tile, 3x3), tile 2 or 4, computed in float64 and returned in ``weight``'s dtype."""
    g = torch.tensor(_G4 if tile == 4 else _G, dtype=torch.float64)
    u = torch.einsum("xa,ocab,nb->xnco", g, weight.detach().to(torch.float64), g)
    return u.reshape(-1, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def forget(module: nn.Module) -> None:
    """Drop ``module``'s cached transform (``packed`` prepares it again at the next use)."""
    module.__dict__.pop("_winograd", None)


def packed(conv: nn.Conv2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """``conv``'s transformed weights and its bias, cached on it until either is replaced or modified."""
    key = tuple((t.data_ptr(), t._version) for t in (conv.weight, conv.bias))
    cached = conv.__dict__.get("_winograd")
    if cached is None or cached[0] != key:
        bias = conv.bias.detach().contiguous()
        cached = (key, (transform_weights(conv.weight), bias))
        conv.__dict__["_winograd"] = cached
    return cached[1]


def conv(conv: nn.Conv2d, x: torch.Tensor, act: str = "none", residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``act(conv(x) + residual)`` in one call (``act`` "none", "gelu" or "silu"); ``applies(conv)`` and a
    float32 CPU ``x`` are the caller's to check."""
    return conv_with(*packed(conv), x, act, residual)


def conv_with(u: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, act: str = "none",
              residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The same with weights already transformed (``transform_weights``) and the bias given."""
    return torch.ops.yyfast.conv3x3_winograd_eval(x, u, bias.contiguous(), residual, act)
