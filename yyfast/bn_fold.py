"""BatchNorm folding: the exact algebra, done in float64 on the CPU.

An eval-mode BatchNorm is a per-channel affine map ``bn(z) = a*z + c`` with
``a = gamma / sqrt(running_var + eps)`` and ``c = beta - running_mean * a``. So

* ``bn(conv(x))`` is one convolution with weights ``a[o] * W[o]`` and bias ``a*b + c``
  (any kernel size, stride, groups: the scale acts on output channels);
* ``conv1x1(bn(x))`` is one 1x1 convolution with weights ``W[o, i] * a[i]`` and bias
  ``b + W @ c``; this is exact only because a 1x1 convolution has no zero padding (a padded
  3x3 convolution would see ``c`` inside the image but 0 in the padding).

Everything is computed in float64 so that the single cast to the inference dtype at the end is
the only rounding; the functions return new tensors on the parameters' own device and never modify
the modules they read. They are plain differentiable tensor ops: ``optimize_for_inference`` copies
their results into frozen modules, ``yyfast.YYNet``'s eval mode (``yyfast.eval_fold``) convolves
with them directly, which is why this module sits below both ``yyfast.model`` and ``yyfast.inference``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

Tensor = torch.Tensor


def _f64(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.to(dtype=torch.float64)


def bn_affine(bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """``(a, c)`` with ``bn(z) == a*z + c`` per channel in eval mode (float64, on bn's device)."""
    if not isinstance(bn, nn.BatchNorm2d):
        raise ValueError(f"bn must be an nn.BatchNorm2d, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn has no running statistics (track_running_stats=False); it cannot be folded")
    var = _f64(bn.running_var)
    gamma = _f64(bn.weight) if bn.weight is not None else torch.ones_like(var)
    beta = _f64(bn.bias) if bn.bias is not None else torch.zeros_like(var)
    a = gamma / torch.sqrt(var + bn.eps)
    return a, beta - _f64(bn.running_mean) * a


def fold_weight_bn(weight: Tensor, bias: Optional[Tensor], bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """Weights and bias (float64) of the single convolution equal to ``bn(conv(x, weight, bias))``."""
    if weight.shape[0] != bn.num_features:
        raise ValueError(f"bn has {bn.num_features} channels but the convolution has {weight.shape[0]} outputs")
    a, c = bn_affine(bn)
    folded = _f64(weight) * a.view(-1, *([1] * (weight.dim() - 1)))
    return folded, (c if bias is None else a * _f64(bias) + c)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """Weights and bias (float64) of the single convolution equal to ``bn(conv(x))``."""
    return fold_weight_bn(conv.weight, conv.bias, bn)


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
    b = w.new_zeros(w.shape[0]) if bias is None else _f64(bias)
    return w * a.view(1, -1, 1, 1), b + w[:, :, 0, 0] @ c


def fold_expand(block: nn.Module) -> Tuple[Tensor, Tensor]:
    """Weights and bias (float64) of an MBConv's ``bn_expand(expand(bn_in(x)))`` as one 1x1
    convolution (``bn_in`` left out where the block discards it, as the authors' ImageNet script)."""
    w, b = block.expand.weight, block.expand.bias
    if not block.discard_input_bn:
        w, b = fold_bn_into_1x1(block.bn_in, w, b)
    return fold_weight_bn(w, b, block.bn_expand)
