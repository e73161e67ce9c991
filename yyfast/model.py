"""``yyfast.YYNet``: the reference network with each MBConv span and the stem fusion routed
through the fused ops. Parameters, buffers and state_dict keys are the reference's exactly."""
from __future__ import annotations

import warnings
from typing import Any, Union

import torch

from . import ops
from .config import BACKENDS, YYNetConfig, get_config, list_models
from .reference import DWBNActSE, ReferenceYYNet, YinYangFusion


def check_backend(backend: str) -> str:
    """Validate a backend name now; an explicit backend must run somewhere on this machine."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not valid; allowed values: {', '.join(map(repr, BACKENDS))}")
    if backend in ("triton", "cuda"):
        from .availability import backends

        info = backends()[backend]
        if not info["available"]:
            raise RuntimeError(f"backend={backend!r} is not available on this machine: {info['reason']} "
                               "Use backend='reference' or 'auto'; `python -m yyfast.info` shows what is built.")
    return backend


class FusedDWBNActSE(DWBNActSE):
    """``DWBNActSE`` whose forward is one ``yyfast.ops.dw_bn_act_se`` call.

    Dropout > 0 in training has no fused form: that block runs the reference span instead and
    says so once.
    """

    backend: str = "auto"
    _warned_dropout = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "reference":
            return super().forward(x)
        if self.training and self.drop.p > 0:
            if not FusedDWBNActSE._warned_dropout:
                FusedDWBNActSE._warned_dropout = True
                warnings.warn(f"mbconv_dropout={self.drop.p} has no fused kernel: MBConv spans run the reference "
                              "path in training (eval mode still uses the fused ops).", stacklevel=2)
            return super().forward(x)
        bn, se = self.bn, self.se
        return ops.dw_bn_act_se(x, self.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias, stride=self.stride,
                                eps=bn.eps, momentum=bn.momentum, training=self.training, act=self.act_name,
                                gate=self.gate_name, num_batches_tracked=bn.num_batches_tracked,
                                backend=self.backend)


class FusedYinYangFusion(YinYangFusion):
    """``YinYangFusion`` computed by ``yyfast.ops.yinyang_fuse``."""

    backend: str = "auto"

    def forward(self, a: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        if self.backend == "reference":
            return super().forward(a, i)
        return ops.yinyang_fuse(a, i, self.formula, backend=self.backend)


class YYNet(ReferenceYYNet):
    """Yin Yang ConvNet with fused kernels.

    ``YYNet("yynet_small_64", backend="auto", act="silu", ...)`` or ``YYNet(config)``.
    ``backend``: ``"reference"`` (pure PyTorch), ``"triton"``, ``"cuda"`` (the ``yyfast._C``
    extension: CUDA kernels on a GPU, C++ kernels on the CPU), or ``"auto"`` (per device, the
    fastest available according to the committed benchmarks). The state_dict is identical to
    ``yyfast.reference.ReferenceYYNet``'s, so checkpoints load both ways.
    """

    def __init__(self, config: Union[str, YYNetConfig] = "yynet_small_64", backend: str = "auto",
                 **overrides: Any):
        cfg = get_config(config, **overrides)
        super().__init__(cfg, span_cls=FusedDWBNActSE, fusion_cls=FusedYinYangFusion)
        self.set_backend(backend)

    def set_backend(self, backend: str) -> "YYNet":
        """Switch every fused span and the fusion to ``backend`` (validated now)."""
        self.backend = check_backend(backend)
        for m in self.modules():
            if isinstance(m, (FusedDWBNActSE, FusedYinYangFusion)):
                m.backend = backend
        return self

    def extra_repr(self) -> str:
        return f"name={self.config.name}, backend={self.backend}"


def create_model(name: Union[str, YYNetConfig], backend: str = "auto", **overrides: Any) -> YYNet:
    """timm-style factory: ``create_model("yynet_small_64", backend="cuda", act="silu")``."""
    return YYNet(name, backend=backend, **overrides)


__all__ = ["YYNet", "create_model", "list_models", "FusedDWBNActSE", "FusedYinYangFusion"]
