"""``yyfast.optimize_for_inference``: fold a trained YYNet into an eval-only inference model."""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn


from ..bn_fold import fold_conv_bn, fold_expand
from ..cpu_eval import mbconv_op
from ..reference_model import MBConv, ReferenceYYNet, Residual
from .cuda_graph import CUDAGraphForward
from .modules import FoldedMBConv, FoldedResidual, FoldedSpan, InferenceYYNet, _conv

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _frozen_copy(module: nn.Module) -> nn.Module:
    """A float64 copy of a module kept as it is (the shortcuts), detached from the original."""
    return copy.deepcopy(module).to(device="cpu", dtype=torch.float64)


def _linear(src: nn.Linear) -> nn.Linear:
    return _frozen_copy(src)


def fold_residual(block: Residual, act: str) -> FoldedResidual:
    w1, b1 = fold_conv_bn(block.conv1, block.bn1)
    w2, b2 = fold_conv_bn(block.conv2, block.bn2)
    conv1 = _conv(w1, b1, block.conv1.stride[0], block.conv1.padding[0])
    conv2 = _conv(w2, b2, block.conv2.stride[0], block.conv2.padding[0])
    return FoldedResidual(conv1, conv2, _frozen_copy(block.shortcut), act)


def fold_mbconv(block: MBConv, act: str, gate: str) -> FoldedMBConv:
    # expand(bn_in(x)) -> one 1x1 conv (exact: a 1x1 conv has no padding), then bn_expand on top.
    we, be = fold_expand(block)
    span = block.span
    wd, bd = fold_conv_bn(span.conv, span.bn)
    fc1 = nn.Linear(span.se.fc1.in_channels, span.se.fc1.out_channels, dtype=torch.float64)
    fc2 = nn.Linear(span.se.fc2.in_channels, span.se.fc2.out_channels, dtype=torch.float64)
    with torch.no_grad():
        for lin, conv in ((fc1, span.se.fc1), (fc2, span.se.fc2)):
            lin.weight.copy_(conv.weight.detach().reshape(lin.weight.shape))
            lin.bias.copy_(conv.bias.detach())
    folded_span = FoldedSpan(_conv(wd, bd, span.stride, 1, groups=span.channels), fc1, fc2, act, gate)
    wp, bp = fold_conv_bn(block.project, block.bn_project)
    return FoldedMBConv(_conv(we, be), folded_span, _conv(wp, bp), _frozen_copy(block.shortcut), act)


def _fold_blocks(blocks: nn.Sequential, act: str, gate: str) -> nn.ModuleList:
    out = []
    for block in blocks:
        if isinstance(block, Residual):
            out.append(fold_residual(block, act))
        elif isinstance(block, MBConv):
            out.append(fold_mbconv(block, act, gate))
        else:
            raise ValueError(f"cannot fold a {type(block).__name__} block; expected Residual or MBConv")
    return nn.ModuleList(out)


def fold_model(model: ReferenceYYNet) -> InferenceYYNet:
    """The float64, CPU, BatchNorm-folded twin of ``model`` (eval semantics; ``model`` is not changed)."""
    if not isinstance(model, ReferenceYYNet):
        raise ValueError(f"model must be a yyfast YYNet or ReferenceYYNet, got {type(model).__name__}")
    cfg = model.config
    args = (cfg.act, cfg.se_gate)
    return InferenceYYNet(cfg, _fold_blocks(model.yin, *args), _fold_blocks(model.yang, *args),
                          _fold_blocks(model.single_path, *args), _linear(model.head.fc),
                          _linear(model.head.classifier))


def optimize_for_inference(model: ReferenceYYNet, *, dtype: Optional[torch.dtype] = None, channels_last: bool = True,
                           backend: str = "auto", cuda_graph: bool = False,
                           batch_size: Optional[int] = None) -> nn.Module:
    """An eval-only copy of ``model`` with every BatchNorm folded into its convolution.

    The folding is done in float64 and cast once to ``dtype`` (default: the model's dtype);
    the result lives on the model's device. ``model`` itself is not modified.

    * ``channels_last``: weights and activations in channels_last (the fast layout for the 1x1
      convs and the fused kernels).
    * ``backend``: the MBConv span's engine: ``"auto"`` (a fused kernel where one runs on the
      device, else the folded plain-PyTorch span), ``"reference"`` (always plain PyTorch),
      ``"triton"`` or ``"cuda"`` (``yyfast.ops.dw_bn_act_se`` in eval mode).
    * ``cuda_graph``: on a GPU, replay a captured CUDA graph for batches of ``batch_size``
      (the first batch's size if None); other sizes run eagerly.

    Returns an ``InferenceYYNet`` (or a ``CUDAGraphForward`` around one); ``.train()`` raises.
    """
    from ..model import check_backend

    if not isinstance(model, ReferenceYYNet):
        raise ValueError(f"model must be a yyfast YYNet or ReferenceYYNet, got {type(model).__name__}")
    check_backend(backend)
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not valid; allowed values: None, "
                         + ", ".join(str(d) for d in FLOAT_DTYPES))
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r} is not valid; it must be None or a positive integer")
    if not isinstance(cuda_graph, bool):
        raise ValueError(f"cuda_graph={cuda_graph!r} is not valid; it must be True or False")
    first = next(model.parameters())
    device, target_dtype = first.device, dtype or first.dtype
    folded = fold_model(model)
    folded.backend, folded.channels_last = backend, bool(channels_last)
    folded = folded.to(device=device, dtype=target_dtype)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    for p in folded.parameters():
        p.requires_grad_(False)
    if device.type == "cpu" and target_dtype == torch.float32:
        # the MBConv block op's GEMMs read the 1x1 weights transposed (see gemm_layout)
        for block in folded.modules():
            if isinstance(block, FoldedMBConv):
                mbconv_op.gemm_layout(block)
    if cuda_graph:
        return CUDAGraphForward(folded, batch_size)
    return folded
