"""BatchNorm folding: the exact algebra, done in float64 on the CPU.

An eval-mode BatchNorm is a per-channel affine map ``bn(z) = a*z + c`` with
``a = gamma / sqrt(running_var + eps)`` and ``c = beta - running_mean * a``. So

* ``bn(conv(x))`` is one convolution with weights ``a[o] * W[o]`` and bias ``a*b + c``
  (any kernel size, stride, groups: the scale acts on output channels);
* ``conv1x1(bn(x))`` is one 1x1 convolution with weights ``W[o, i] * a[i]`` and bias
  ``b + W @ c``; this is exact only because a 1x1 convolution has no zero padding (a padded
  3x3 convolution would see ``c`` inside the image but 0 in the padding).

Everything is computed in float64 so that the single cast to the inference dtype at the end is
the only rounding; the functions return new tensors and never modify the modules they read.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

Tensor = torch.Tensor


def _f64(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.detach().to(device="cpu", dtype=torch.float64)


def bn_affine(bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """``(a, c)`` with ``bn(z) == a*z + c`` per channel in eval mode (float64, CPU)."""
    if not isinstance(bn, nn.BatchNorm2d):
        raise ValueError(f"bn must be an nn.BatchNorm2d, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn has no running statistics (track_running_stats=False); it cannot be folded")
    channels = bn.num_features
    gamma = _f64(bn.weight) if bn.weight is not None else torch.ones(channels, dtype=torch.float64)
    beta = _f64(bn.bias) if bn.bias is not None else torch.zeros(channels, dtype=torch.float64)
    a = gamma / torch.sqrt(_f64(bn.running_var) + bn.eps)
    return a, beta - _f64(bn.running_mean) * a


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """Weights and bias (float64) of the single convolution equal to ``bn(conv(x))``."""
    if conv.out_channels != bn.num_features:
        raise ValueError(f"bn has {bn.num_features} channels but conv has {conv.out_channels} outputs")
    a, c = bn_affine(bn)
    weight = _f64(conv.weight) * a.view(-1, *([1] * (conv.weight.dim() - 1)))
    bias = c if conv.bias is None else a * _f64(conv.bias) + c
    return weight, bias


def fold_bn_into_1x1(bn: nn.BatchNorm2d, weight: Tensor, bias: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """Weights and bias (float64) of the 1x1 convolution equal to ``conv1x1(bn(x))``.

    ``weight`` is (out, in, 1, 1) and ``bias`` (out,) or None, as float64 or any float dtype.
    """
    if weight.dim() != 4 or weight.shape[2:] != (1, 1):
        raise ValueError(f"weight must be a 1x1 convolution weight (out, in, 1, 1), got {tuple(weight.shape)}")
    if weight.shape[1] != bn.num_features:
        raise ValueError(f"bn has {bn.num_features} channels but the 1x1 convolution takes {weight.shape[1]}")
    a, c = bn_affine(bn)
    w = _f64(weight)
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else _f64(bias)
    return w * a.view(1, -1, 1, 1), b + w[:, :, 0, 0] @ c
