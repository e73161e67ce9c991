"""The YYNet configuration object, its validation, and the four presets.

Every number here comes from the paper (Tables 2 and 3) or the authors' code, as written in
``shared/spec/YYNET.md``. ``YYNetConfig`` describes the whole network; ``yyfast.reference_model``
builds the pure-PyTorch blocks from it and ``yyfast.model.YYNet`` wraps them with a backend.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from .activations import ACTIVATIONS, SE_GATES  # the names live with their functions and kernel codes

YIN_INPUTS = ("mean", "red")
BACKENDS = ("reference", "triton", "cuda", "auto")

#: Every fusion is ``c1*A*I + c2*A + c3*I`` with A the Yang output and I the Yin output
#: (paper Table 1). ``add`` is the paper's Eq. 1 and the default.
FUSIONS: Dict[str, Tuple[float, float, float]] = {
    "add": (0.0, 1.0, 1.0),
    "mul": (1.0, 0.0, 0.0),
    "gate": (-1.0, 1.0, 0.0),
    "mul_add": (1.0, 1.0, 1.0),
    "gate_sub": (-1.0, 2.0, -1.0),
    "gate_add": (-1.0, 2.0, 1.0),
}


def _choice(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not valid; allowed values: {', '.join(map(repr, allowed))}")


@dataclass(frozen=True)
class YYNetConfig:
    """All the options of a YYNet.

    Widths follow the paper's Table 3: the Yin and Yang branches start at ``yy_width`` channels
    (their Residual stem) and add ``channel_step`` channels at every MBConv; single-path stage
    ``i`` starts at ``sp_width + i * sp_stage_step`` channels (``sp_width=None``: the width the
    branches end at) and also adds ``channel_step`` per MBConv.
    """

    yy_width: int = 64
    channel_step: int = 0
    yy_mbconvs: int = 3
    sp_width: Optional[int] = None
    sp_stage_step: int = 0
    sp_stages: int = 1
    sp_mbconvs: int = 2
    extra_sp_stride: bool = True
    head_width: int = 40
    num_classes: int = 10
    in_chans: int = 3
    expansion: int = 4
    se_reduction: int = 4
    act: str = "gelu"
    se_gate: str = "sigmoid"
    yin_input: str = "mean"
    fusion: str = "add"
    head_dropout: float = 0.0
    mbconv_dropout: float = 0.0
    #: The authors' ImageNet script computes the MBConv input BatchNorm and discards its output.
    #: False (default) applies it, as the CIFAR blocks do; True reproduces that script.
    discard_mbconv_input_bn: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for key in ("yy_width", "yy_mbconvs", "sp_stages", "sp_mbconvs", "head_width",
                    "in_chans", "expansion", "se_reduction"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}={value!r} is not valid; it must be a positive integer")
        # num_classes=0: no classifier, the model returns the head's pre-logits (timm's convention)
        for key in ("channel_step", "sp_stage_step", "num_classes"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key}={value!r} is not valid; it must be a non-negative integer")
        if self.sp_width is not None and (isinstance(self.sp_width, bool) or not isinstance(self.sp_width, int)
                                          or self.sp_width < 1):
            raise ValueError(f"sp_width={self.sp_width!r} is not valid; it must be None or a positive integer")
        _choice("act", self.act, ACTIVATIONS)
        _choice("se_gate", self.se_gate, SE_GATES)
        _choice("yin_input", self.yin_input, YIN_INPUTS)
        _choice("fusion", self.fusion, tuple(FUSIONS))
        for key in ("head_dropout", "mbconv_dropout"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                raise ValueError(f"{key}={value!r} is not valid; it must be a float in [0, 1)")
        if not (isinstance(self.bn_eps, (int, float)) and self.bn_eps > 0):
            raise ValueError(f"bn_eps={self.bn_eps!r} is not valid; it must be a positive float")
        if not (isinstance(self.bn_momentum, (int, float)) and 0.0 <= self.bn_momentum <= 1.0):
            raise ValueError(f"bn_momentum={self.bn_momentum!r} is not valid; it must be a float in [0, 1]")
        for width in self.mbconv_widths():
            if width * self.expansion // self.se_reduction < 1:
                raise ValueError(f"se_reduction={self.se_reduction} leaves no SE channels at width {width}")

    # -- derived structure -------------------------------------------------------------------
    def branch_widths(self) -> Tuple[int, ...]:
        """Output widths of the branch blocks: Residual stem, then each MBConv."""
        return tuple(self.yy_width + i * self.channel_step for i in range(self.yy_mbconvs + 1))

    def sp_stage_widths(self, stage: int) -> Tuple[int, ...]:
        base = (self.sp_width if self.sp_width is not None else self.branch_widths()[-1]) + stage * self.sp_stage_step
        return tuple(base + i * self.channel_step for i in range(self.sp_mbconvs + 1))

    def single_path_blocks(self) -> Tuple[Tuple[str, int, int, int], ...]:
        """``(kind, c_in, c_out, stride)`` of every single-path block in order, kind ``residual`` or
        ``mbconv``: each stage is a stride-2 Residual then ``sp_mbconvs`` MBConvs (the first with
        stride 2 when ``extra_sp_stride``)."""
        blocks, c_prev = [], self.branch_widths()[-1]
        for s in range(self.sp_stages):
            widths = self.sp_stage_widths(s)
            blocks.append(("residual", c_prev, widths[0], 2))
            for k in range(self.sp_mbconvs):
                blocks.append(("mbconv", widths[k], widths[k + 1], 2 if (k == 0 and self.extra_sp_stride) else 1))
            c_prev = widths[-1]
        return tuple(blocks)

    def mbconv_widths(self) -> Tuple[int, ...]:
        widths = list(self.branch_widths()[1:])
        for s in range(self.sp_stages):
            widths += list(self.sp_stage_widths(s)[1:])
        return tuple(widths)

    @property
    def out_width(self) -> int:
        return self.sp_stage_widths(self.sp_stages - 1)[-1]

    @property
    def fusion_coefficients(self) -> Tuple[float, float, float]:
        return FUSIONS[self.fusion]

    def replace(self, **overrides: Any) -> "YYNetConfig":
        known = {f.name for f in dataclasses.fields(self)}
        for key in overrides:
            if key not in known:
                raise ValueError(f"unknown option {key!r}; allowed options: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _small(width: int) -> YYNetConfig:
    return YYNetConfig(name=f"yynet_small_{width}", yy_width=width)


PRESETS: Dict[str, YYNetConfig] = {
    "yynet_small_16": _small(16),
    "yynet_small_32": _small(32),
    "yynet_small_64": _small(64),
    # Authors' ImageNet script: GELU, hardsigmoid SE gate, red Yin input, gate_sub fusion,
    # 2 channels added per MBConv, 4 single-path stages from 64 channels, no extra SP stride, and
    # the MBConv input BN computed but its output discarded (the script that produced 66.49%).
    "yynet_imagenet": YYNetConfig(
        name="yynet_imagenet", yy_width=16, channel_step=2, sp_width=64, sp_stage_step=2, sp_stages=4,
        extra_sp_stride=False, head_width=500, num_classes=1000, act="gelu", se_gate="hardsigmoid",
        yin_input="red", fusion="gate_sub", discard_mbconv_input_bn=True),
}

#: Exact parameter counts (the acceptance oracle from the spec).
PARAMETER_COUNTS = {"yynet_small_16": 52_882, "yynet_small_32": 191_330,
                    "yynet_small_64": 726_274, "yynet_imagenet": 1_608_144}

#: Input resolution each preset was designed for (C, H, W).
INPUT_SIZES = {"yynet_small_16": (3, 32, 32), "yynet_small_32": (3, 32, 32),
               "yynet_small_64": (3, 32, 32), "yynet_imagenet": (3, 224, 224)}

#: The normalisation every preset is trained and evaluated with under the paper recipe
#: (``yyfast.preprocess``): the CIFAR-10 statistics, for ``yynet_imagenet`` too (the authors' ImageNet
#: script normalises with them). Images that are not S x S are stretched to it (bilinear), as the
#: script's ``Resize((224, 224))``: timm's ``crop_mode="squash"``, ``crop_pct=1.0``.
NORMALIZE_MEAN = (0.4914, 0.4822, 0.4465)
NORMALIZE_STD = (0.2023, 0.1994, 0.2010)


def list_models() -> list:
    """The preset names, sorted."""
    return sorted(PRESETS)


def get_config(name_or_config, **overrides: Any) -> YYNetConfig:
    """A preset name or a ``YYNetConfig``, with keyword overrides applied and validated."""
    if isinstance(name_or_config, YYNetConfig):
        config = name_or_config
    elif isinstance(name_or_config, str):
        if name_or_config not in PRESETS:
            raise ValueError(f"unknown model {name_or_config!r}; allowed values: {', '.join(list_models())}")
        config = PRESETS[name_or_config]
    else:
        raise ValueError(f"model must be a preset name or a YYNetConfig, got {type(name_or_config).__name__}")
    return config.replace(**overrides) if overrides else config
