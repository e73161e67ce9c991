"""The folded model's features in one C++ call (``yyfast::yynet_features_eval``, float32 CPU).

``InferenceYYNet`` runs its fast graph block by block, each block one prepared op call from Python
(``bind_onednn``). This module turns the same prepared weights into the arguments of one op that calls
those ops itself (``csrc/cpu/yynet_eval.cpp``): the same results bit for bit, without the Python
between the blocks (4.34 -> 4.06 ms a batch-1 forward of yynet_small_64, 2 threads, 2-core EPYC).

Each block gives its ``Step`` (``FoldedResidual.whole_step``, ``FoldedMBConv.whole_step``); ``build``
puts them together, or returns None when a block is not one the op runs (the per-block path stays).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import cpu_fusion
from ..cpu_eval import mbconv_op, stem_conv, winograd


class Step(NamedTuple):
    """One block of the op's plan: its four plan ints and its weights."""
    plan: Tuple[int, int, int, int]
    weights: Tuple[Optional[torch.Tensor], ...]


class Plan(NamedTuple):
    weights: List[Optional[torch.Tensor]]
    plan: List[int]
    fusion: List[float]
    act: str
    gate: str


def available() -> bool:
    return (mbconv_op.available() and hasattr(torch.ops.yyfast, "yynet_eval") and cpu_fusion.available()
            and winograd.available())


def extension():
    """The ``yyfast._C`` module (its ``fast_record`` / ``fast_forward``, ``csrc/fast_forward.cpp``); call only
    where ``available()``."""
    import yyfast._C as ext
    return ext


def _is_plain_conv(conv: nn.Module, kernel: int, stride: int, padding: int) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (kernel, kernel) and conv.stride == (stride, stride)
            and conv.padding == (padding, padding) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.bias is not None and conv.padding_mode == "zeros")


def residual_step(conv1: nn.Conv2d, conv2: nn.Conv2d, shortcut: nn.Module) -> Optional[Step]:
    """A ``FoldedResidual``'s step, as its ``bind_onednn`` computes it: conv1 with the act and the 1x1
    shortcut in one ``stem_conv`` pass where it applies, else conv1 (Winograd, or oneDNN) and the shortcut
    (oneDNN, or an identity); then conv2 with the add and the act (Winograd, or oneDNN's conv + add and
    the act in place). None if the geometry is another."""
    stride, padding = conv1.stride[0], conv1.padding[0]
    if not (_is_plain_conv(conv1, 3, stride, padding) and _is_plain_conv(conv2, 3, 1, 1)
            and conv1.out_channels == conv2.in_channels):
        return None
    wino2 = winograd.applies(conv2)
    second = winograd.packed(conv2) if wino2 else (conv2.weight.detach(), conv2.bias.detach())
    if wino2 and stem_conv.available() and stem_conv.applies(conv1, shortcut):
        w1, b1, wsc, bsc = stem_conv.packed(conv1, shortcut)
        return Step((0, stride, padding, 4 | 2), (w1, b1, *second, wsc, bsc))
    if isinstance(shortcut, nn.Identity):
        if stride != 1 or conv1.in_channels != conv2.out_channels:
            return None
        sc: Tuple[Optional[torch.Tensor], ...] = (None, None)
    elif _is_plain_conv(shortcut, 1, stride, 0):
        sc = (shortcut.weight.detach(), shortcut.bias.detach())
    else:
        return None
    wino1 = winograd.applies(conv1)
    first = winograd.packed(conv1) if wino1 else (conv1.weight.detach(), conv1.bias.detach())
    flags = (1 if wino1 else 0) | (2 if sc[0] is not None else 0) | (0 if wino2 else 8)
    return Step((0, stride, padding, flags), (*first, *second, *sc))


def mbconv_step(packed: Tuple[Optional[torch.Tensor], ...], stride: int, shortcut: nn.Module) -> Optional[Step]:
    """A ``FoldedMBConv``'s step from its ``block_plan.packed_weights``; None if its shortcut is neither
    the op's own nor an identity."""
    if not mbconv_op.owns_shortcut(packed) and not isinstance(shortcut, nn.Identity):
        return None
    return Step((1, stride, 0, 0), tuple(packed))


def build(yang: Sequence[Optional[Step]], yin: Sequence[Optional[Step]], single: Sequence[Optional[Step]],
          yin_input: str, fusion: Sequence[float], act: str, gate: str) -> Optional[Plan]:
    """The op's arguments from every block's step, or None if any block has none."""
    chains = (list(yang), list(yin), list(single))
    if any(s is None for chain in chains for s in chain) or not yang or not yin:
        return None
    plan = [0 if yin_input == "mean" else 1, len(yang), len(yin), len(single)]
    weights: List[Optional[torch.Tensor]] = []
    for chain in chains:
        for s in chain:
            plan.extend(s.plan)
            weights.extend(s.weights)
    return Plan(weights, plan, [float(c) for c in fusion], act, gate)


def run(plan: Plan, x: torch.Tensor) -> torch.Tensor:
    """The features of ``x`` (float32 CPU): what the blocks and the fusion compute, channels_last."""
    return torch.ops.yyfast.yynet_features_eval(x, plan.weights, plan.plan, plan.fusion, plan.act, plan.gate)


def run_logits(plan: Plan, x: torch.Tensor, fc: nn.Linear, classifier: nn.Linear) -> torch.Tensor:
    """The logits: the features, then mean -> ``fc`` -> act -> ``classifier``, in the same call."""
    return torch.ops.yyfast.yynet_eval(x, plan.weights, plan.plan, plan.fusion, plan.act, plan.gate, fc.weight,
                                       fc.bias, classifier.weight, classifier.bias)
