"""The pure-PyTorch YYNet: the numerical truth every kernel is tested against.

Blocks follow ``shared/spec/YYNET.md`` exactly (the paper plus the authors' code):

* ``Residual``: ``act(shortcut(x) + BN(Conv3x3(act(BN(Conv3x3(x))))))`` with a 1x1 shortcut.
* ``SqueezeExcite``: ``x * gate(W2 act(W1 mean_hw(x) + b1) + b2)``, reduction 4.
* ``DWBNActSE``: the MBConv span ``DWConv3x3 -> BN -> act -> Dropout -> SE`` (the fused-kernel span).
* ``MBConv``: ``BN -> 1x1 -> BN -> act -> span -> 1x1 -> BN`` plus a shortcut (no final act).
* ``YinYangFusion``: ``c1*A*I + c2*A + c3*I`` (A = Yang output, I = Yin output).

``ReferenceYYNet`` takes the span and fusion classes as arguments so that ``yyfast.YYNet`` can
swap in the fused-op versions without changing a single state_dict key.

Layer (``tests/test_layering.py``): this module, ``yyfast.timm_interface`` and ``yyfast.hub`` are one
layer, above ``yyfast.config``/``yyfast.activations`` and below the ops and ``yyfast.model``. The two
mixins ``ReferenceYYNet`` inherits (``TimmInterface``: timm's model methods; ``PretrainedMixin``:
``save_pretrained``/``from_pretrained``) are part of what the reference network is, the interface
every YYNet shares, and need only the config and torch, so they sit here and not above; they reach
back into this module only for ``new_classifier`` (the authors' initialisation), an import within
the layer.
"""
from __future__ import annotations

import math
from typing import Optional, Type

import torch
import torch.nn.functional as F
from torch import nn

from .activations import act_module, gate_module
from .config import FUSIONS, YYNetConfig
from .hub import PretrainedMixin
from .timm_interface import TimmInterface

#: The authors' truncated-normal correction: the std of a unit normal cut at +-2 std.
TRUNC_STD_CORRECTION = 0.87962566103423978


def authors_trunc_normal_(weight: torch.Tensor) -> torch.Tensor:
    """``std = sqrt(1 / mean(fan_in, fan_out)) / 0.8796...``, cut at +-2 std (authors' notebook)."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    std = math.sqrt(1.0 / ((fan_in + fan_out) / 2.0)) / TRUNC_STD_CORRECTION
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


def _init_main(module: nn.Module) -> None:
    """Truncated-normal weights and zero biases for every conv/linear inside ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            authors_trunc_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _init_shortcut(conv: nn.Conv2d) -> None:
    nn.init.dirac_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class SqueezeExcite(nn.Module):
    """``y = x * gate(fc2(act(fc1(mean_hw(x)))))``; fc1: d -> d//r, fc2: d//r -> d, 1x1 convs with bias."""

    def __init__(self, channels: int, reduction: int = 4, act: str = "gelu", gate: str = "sigmoid"):
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = act_module(act)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)
        self.gate = gate_module(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class DWBNActSE(nn.Module):
    """The MBConv span ``DWConv3x3(stride) -> BN -> act -> Dropout -> SE`` in plain PyTorch.

    This is the span ``yyfast.ops.dw_bn_act_se`` fuses; subclasses in ``yyfast.model`` keep the
    same parameters and buffers and replace only ``forward``.
    """

    def __init__(self, channels: int, stride: int = 1, act: str = "gelu", gate: str = "sigmoid",
                 reduction: int = 4, dropout: float = 0.0, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride={stride!r} is not valid; allowed values: 1, 2")
        self.channels, self.stride, self.act_name, self.gate_name = channels, stride, act, gate
        self.conv = nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
        self.act = act_module(act)
        self.drop = nn.Dropout(dropout)
        self.se = SqueezeExcite(channels, reduction, act, gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.drop(self.act(self.bn(self.conv(x)))))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stride={self.stride}, act={self.act_name}, gate={self.gate_name}"


class YinYangFusion(nn.Module):
    """``out = c1*A*I + c2*A + c3*I``: A is the Yang (colour) output, I the Yin (form) output."""

    def __init__(self, formula: str = "add"):
        super().__init__()
        if formula not in FUSIONS:
            raise ValueError(f"fusion={formula!r} is not valid; allowed values: {', '.join(map(repr, FUSIONS))}")
        self.formula = formula
        self.c1, self.c2, self.c3 = FUSIONS[formula]

    def forward(self, a: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        out = a * i * self.c1 if self.c1 else None
        for c, t in ((self.c2, a), (self.c3, i)):
            if c:
                out = t * c if out is None else out + t * c
        return out if out is not None else torch.zeros_like(a)

    def extra_repr(self) -> str:
        return f"formula={self.formula}, c=({self.c1:g}, {self.c2:g}, {self.c3:g})"


class Residual(nn.Module):
    """ResNet basic block: ``act(shortcut(x) + BN(conv2(act(BN(conv1(x))))))``, 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, cfg: YYNetConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(c_out, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.act_name = cfg.act
        self.act1 = act_module(cfg.act)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(c_out, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, 0, bias=True)
        self.act = act_module(cfg.act)
        _init_main(nn.ModuleList([self.conv1, self.conv2]))
        _init_shortcut(self.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act(self.shortcut(x) + main)


class MBConv(nn.Module):
    """``BN -> 1x1 expand -> BN -> act -> span -> 1x1 project -> BN`` + shortcut (expansion 4)."""

    def __init__(self, c_in: int, c_out: int, stride: int, cfg: YYNetConfig,
                 span_cls: Type[DWBNActSE] = DWBNActSE):
        super().__init__()
        hidden = cfg.expansion * c_out
        bn = dict(eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.discard_input_bn = cfg.discard_mbconv_input_bn
        self.bn_in = nn.BatchNorm2d(c_in, **bn)
        self.expand = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(hidden, **bn)
        self.act_name = cfg.act
        self.act = act_module(cfg.act)
        self.span = span_cls(hidden, stride, cfg.act, cfg.se_gate, cfg.se_reduction, cfg.mbconv_dropout, **bn)
        self.project = nn.Conv2d(hidden, c_out, 1, bias=False)
        self.bn_project = nn.BatchNorm2d(c_out, **bn)
        if stride > 1:
            self.shortcut = nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.Conv2d(c_in, c_out, 1, bias=False))
            _init_shortcut(self.shortcut[1])
        elif c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=True)
            _init_shortcut(self.shortcut)
        else:
            self.shortcut = nn.Identity()
        _init_main(nn.ModuleList([self.expand, self.span, self.project]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn_in(x)
        if self.discard_input_bn:  # the authors' ImageNet script computes it and drops the result
            h = x
        h = self.act(self.bn_expand(self.expand(h)))
        return self.bn_project(self.project(self.span(h))) + self.shortcut(x)


class YinInput(nn.Module):
    """The Yin branch's single channel: the mean of the colour channels, or the first (red)."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean(dim=1, keepdim=True) if self.mode == "mean" else x[:, :1]
        # A one-channel tensor's strides are ambiguous and read as NCHW, so without this the whole
        # Yin branch would drop out of channels_last when the input is in it.
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() and y.is_contiguous():
            n, _, h, w = y.shape
            y = y.as_strided(y.shape, (h * w, 1, w, 1))  # the same memory, channels_last strides
        return y

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class Head(nn.Module):
    """``global average pool -> Linear(C->head_width) -> act -> Dropout -> Linear(->classes)``.

    ``num_classes=0`` has no classifier (``nn.Identity``); ``pre_logits=True`` stops before the
    dropout and the classifier (timm's ``forward_head`` contract).
    """

    def __init__(self, c_in: int, cfg: YYNetConfig):
        super().__init__()
        self.fc = nn.Linear(c_in, cfg.head_width)
        self.act = act_module(cfg.act)
        self.drop = nn.Dropout(cfg.head_dropout)
        self.classifier = nn.Linear(cfg.head_width, cfg.num_classes) if cfg.num_classes else nn.Identity()
        _init_main(self)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.act(self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))
        return x if pre_logits else self.classifier(self.drop(x))


def new_classifier(width: int, num_classes: int) -> nn.Module:
    """A freshly initialised ``Linear(width -> num_classes)``; ``nn.Identity`` for 0 classes."""
    if num_classes == 0:
        return nn.Identity()
    linear = nn.Linear(width, num_classes)
    _init_main(linear)  # the authors' initialisation, as the head's own classifier gets
    return linear


def _branch(cfg: YYNetConfig, c_in: int, late_stride: bool, span_cls, residual_cls=None,
            mbconv_cls=None) -> nn.Sequential:
    residual_cls, mbconv_cls = residual_cls or Residual, mbconv_cls or MBConv
    widths = cfg.branch_widths()
    blocks = [residual_cls(c_in, widths[0], 1, cfg)]
    for k in range(cfg.yy_mbconvs):
        stride = 2 if (k == cfg.yy_mbconvs - 1 if late_stride else k == 0) else 1
        blocks.append(mbconv_cls(widths[k], widths[k + 1], stride, cfg, span_cls))
    return nn.Sequential(*blocks)


def _single_path(cfg: YYNetConfig, span_cls, residual_cls=None, mbconv_cls=None) -> nn.Sequential:
    residual_cls, mbconv_cls = residual_cls or Residual, mbconv_cls or MBConv
    return nn.Sequential(*(residual_cls(c_in, c_out, stride, cfg) if kind == "residual"
                           else mbconv_cls(c_in, c_out, stride, cfg, span_cls)
                           for kind, c_in, c_out, stride in cfg.single_path_blocks()))


class ReferenceYYNet(TimmInterface, PretrainedMixin, nn.Module):
    """The whole network: Yin and Yang branches, fusion, single path, head.

    ``span_cls``, ``fusion_cls``, ``residual_cls`` and ``mbconv_cls`` are the classes used for the
    MBConv spans, the stem fusion and the blocks; any subclass of ``DWBNActSE`` / ``YinYangFusion`` /
    ``Residual`` / ``MBConv`` that adds no parameters keeps the state_dict identical.
    timm's model interface comes from ``TimmInterface`` (``yyfast.timm_interface``),
    ``save_pretrained``/``from_pretrained`` from ``PretrainedMixin`` (``yyfast.hub``).
    """

    def __init__(self, cfg: YYNetConfig, span_cls: Type[DWBNActSE] = DWBNActSE,
                 fusion_cls: Type[YinYangFusion] = YinYangFusion, residual_cls: Optional[Type[Residual]] = None,
                 mbconv_cls: Optional[Type[MBConv]] = None):
        super().__init__()
        self.config = cfg
        self.yin_input = YinInput(cfg.yin_input)
        blocks = dict(span_cls=span_cls, residual_cls=residual_cls, mbconv_cls=mbconv_cls)
        self.yin = _branch(cfg, 1, late_stride=True, **blocks)     # form: late stride
        self.yang = _branch(cfg, cfg.in_chans, late_stride=False, **blocks)  # colour: early stride
        self.fusion = fusion_cls(cfg.fusion)
        self.single_path = _single_path(cfg, **blocks)
        self.head = Head(cfg.out_width, cfg)

    def __prepare_scriptable__(self):
        # torch.jit.script calls this first; without it, scripting fails deep inside on an
        # unrelated annotation error (issue 12).
        raise RuntimeError(f"TorchScript (torch.jit.script) is not supported for {type(self).__name__}: its "
                           "blocks are Python code TorchScript cannot compile (and YYNet calls custom ops). "
                           "Use torch.compile(model), torch.export.export(model, (x,)) or "
                           "yyfast.export_onnx(model, path) instead.")

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The Yin and Yang branches and their fusion: the input of the single path."""
        if x.dim() != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(f"x must have shape (N, {self.config.in_chans}, H, W), got {tuple(x.shape)}")
        a = self.yang(x)
        i = self.yin(self.yin_input(x))
        return self.fusion(a, i)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.single_path(self.forward_stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
