"""The memory format of every fused op's outputs, shared by both backends' launch code and fakes.

It mirrors the C++ side (``output_format`` in ``csrc/dw_bn_act_se_host.cpp`` for the span, and
``Tensor::suggest_memory_format`` in ``csrc/cpu/yinyang_fuse.cpp``/``csrc/cuda/yinyang_fuse_launch.h``
for the fusion), so a fake (meta) output has the strides the real kernels give on every backend.
It imports no Triton: the C++/CUDA backend's fakes use it too.
"""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format


def output_format(t: torch.Tensor) -> torch.memory_format:
    """``Tensor::suggest_memory_format`` in Python: channels_last (channels_last_3d for 5-D) when
    ``t``'s strides order the channels innermost, else contiguous_format. For a 4-D tensor this is
    the C++ ``output_format``. A tensor that is both (one channel, or one pixel) follows its strides
    exactly as the C++ does (e.g. ``(N, 1, H, W)`` made channels_last is channels_last)."""
    return suggest_memory_format(t)
