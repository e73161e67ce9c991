"""A Residual stem's first 3x3 convolution (+ act) and its 1x1 shortcut in one C++ pass
(``yyfast::stem_conv_eval``, float32 CPU, eval), for the few input channels a stem sees.

oneDNN took 0.13 ms on two threads for the two convolutions of a 32x32 sample with 3 input channels
(0.17 with the Yin stem's one), whose 1.8 M multiply-adds need far less; the op does them in one pass
over the input in 0.04 (0.03) ms, and 0.59 against 0.68 ms at batch 16 (``csrc/cpu/stem_conv.cpp``).
With more input channels (a single-path Residual's strided first convolution) the op runs im2col + GEMM
and takes the shortcut from the im2col's centre tap: 0.044 against oneDNN's 0.123 ms at batch 1 for
yynet_small_64's 64 -> 64, 16x16 -> 8x8 (2 threads), 0.117 vs 0.171 at batch 3, but 10% and 27% slower at
batch 16 and 256 (0.53 vs 0.49, 9.7 vs 7.7 ms: about 0.1% and 0.3% of those forwards). At stride 1 such
a convolution is Winograd's (``winograd``), so ``applies`` leaves it.
``packed`` puts the weights in the op's layouts (cached on the conv, rebuilt when a weight changes);
``applies`` says where the op computes a block.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from . import mbconv_op

#: More input channels than this: the op applies only at stride > 1, by im2col + GEMM (its direct kernel is
#: for few channels: csrc/cpu/stem_conv.cpp's kMaxCin, with the measurements).
MAX_IN_CHANNELS = 8


def available() -> bool:
    return mbconv_op.available() and hasattr(torch.ops.yyfast, "stem_conv_eval")


def applies(conv1: nn.Module, shortcut: nn.Module) -> bool:
    """Whether ``conv1`` (3x3, padding 1, biased, ungrouped; any stride with at most ``MAX_IN_CHANNELS``
    input channels, else stride > 1) and ``shortcut`` (a biased 1x1 conv of the same stride) are what the
    op computes, in float32 on the CPU."""
    if not (isinstance(conv1, nn.Conv2d) and isinstance(shortcut, nn.Conv2d)):
        return False
    s = conv1.stride
    return (conv1.kernel_size == (3, 3) and conv1.padding == (1, 1) and conv1.dilation == (1, 1)
            and conv1.groups == 1 and conv1.bias is not None and conv1.padding_mode == "zeros" and s[0] == s[1]
            and (conv1.in_channels <= MAX_IN_CHANNELS or s[0] > 1) and conv1.out_channels % 16 == 0
            and shortcut.kernel_size == (1, 1) and shortcut.stride == s and shortcut.padding == (0, 0)
            and shortcut.groups == 1 and shortcut.bias is not None
            and shortcut.in_channels == conv1.in_channels and shortcut.out_channels == conv1.out_channels
            and all(t.dtype == torch.float32 and t.device.type == "cpu"
                    for t in (conv1.weight, conv1.bias, shortcut.weight, shortcut.bias)))


def forget(module: nn.Module) -> None:
    """Drop ``module``'s cached packing (``packed`` prepares it again at the next use)."""
    module.__dict__.pop("_stem_conv", None)


def packed(conv1: nn.Conv2d, shortcut: nn.Conv2d) -> Tuple[torch.Tensor, ...]:
    """The op's weight arguments (weight (9, Cin, Cout), bias, shortcut weight (Cin, Cout), shortcut bias),
    cached on ``conv1`` until any of the four tensors is replaced or modified."""
    sources = (conv1.weight, conv1.bias, shortcut.weight, shortcut.bias)
    key = tuple((t.data_ptr(), t._version) for t in sources)
    cached = conv1.__dict__.get("_stem_conv")
    if cached is None or cached[0] != key:
        cached = (key, pack(*sources))
        conv1.__dict__["_stem_conv"] = cached
    return cached[1]


def pack(weight: torch.Tensor, bias: torch.Tensor, shortcut_weight: torch.Tensor,
         shortcut_bias: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """The op's weight arguments from the conv's (Cout, Cin, 3, 3) weight and bias and the shortcut's
    (Cout, Cin, 1, 1) weight and bias."""
    w, b, ws, bs = (t.detach() for t in (weight, bias, shortcut_weight, shortcut_bias))
    cout, cin = w.shape[:2]
    return (w.permute(2, 3, 1, 0).reshape(9, cin, cout).contiguous(), b.contiguous(),
            ws.reshape(cout, cin).t().contiguous(), bs.contiguous())


def run(x: torch.Tensor, weights: Tuple[torch.Tensor, ...], stride: int, act: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(act(conv1(x)), shortcut(x))`` in one call, channels_last; ``weights`` from ``packed``."""
    return torch.ops.yyfast.stem_conv_eval(x, *weights, stride, 1, act)
