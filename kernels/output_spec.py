"""The memory format and the statistics dtype of the fused ops' outputs, shared by both backends'
launch code and by the fakes (it imports no Triton: the C++/CUDA backend's fakes use it too).

``output_format`` is the one memory-format helper. It mirrors the C++ side, ``output_format`` in
``csrc/dw_bn_act_se_host.cpp`` (the span) and ``Tensor::suggest_memory_format`` in
``csrc/cpu/yinyang_fuse.cpp`` and ``csrc/cuda/yinyang_fuse_launch.h`` (the fusion), which stay in
C++; so a fake (meta) output has the strides the real kernels give, on every backend.
"""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format


def output_format(t: torch.Tensor) -> torch.memory_format:
    """``Tensor::suggest_memory_format`` in Python: channels_last (channels_last_3d for 5-D) when
    ``t``'s strides order the channels innermost, else contiguous_format. For a 4-D tensor this is
    the C++ ``output_format``. A tensor that is both (one channel, or one pixel) follows its strides
    exactly as the C++ does: ``(N, 1, H, W)`` with strides ``(H*W, 1, W, 1)`` is channels_last."""
    return suggest_memory_format(t)


def span_output_size(h: int, w: int, stride: int) -> tuple:
    """``dw_bn_act_se``'s output height and width: a 3x3 depthwise conv with padding 1 at ``stride``."""
    return (h - 1) // stride + 1, (w - 1) // stride + 1


def stats_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of ``dw_bn_act_se``'s mean, var and pooled: float64 for a float64 x, else float32
    (the C++ ``acc_type_for``; the Triton kernels accumulate in float32 either way)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
