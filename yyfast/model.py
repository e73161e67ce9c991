"""``yyfast.YYNet``: the reference network with each MBConv span and the stem fusion routed
through the fused ops. Parameters, buffers and state_dict keys are the reference's exactly."""
from __future__ import annotations

import warnings
from typing import Any, Union

import torch
import torch.nn.functional as F

from . import activations, cpu_fusion, ops
from .bn_fold import fold_conv_bn, fold_expand
from .cpu_eval import arena, mbconv_op, stem_conv, winograd
from .config import BACKENDS, YYNetConfig, get_config, list_models
from .eval_fold import FoldCache, bn_tensors, in_dtype
from .reference_model import DWBNActSE, MBConv, ReferenceYYNet, Residual, YinYangFusion
from .sync_bn import SyncBatchNorm2d
from .timm_interface import YYNetFeatures, translate_timm_kwargs


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
        if self.training and isinstance(self.bn, SyncBatchNorm2d):
            # Synchronised statistics need an all-reduce between the statistics and their use, which
            # the one-call fused kernels have no place for: the composed span runs (yyfast.sync_bn).
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


class _FoldsInEval:
    """Mixin for the blocks outside the span: in eval mode, unless the backend is ``"reference"``,
    their BatchNorms are folded into the convolutions (``yyfast.eval_fold``, cached in ``_fold``)."""

    backend: str = "auto"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._fold = FoldCache()

    def _folds(self) -> bool:
        return not self.training and self.backend != "reference"

    @staticmethod
    def _cpu_fused(x: torch.Tensor) -> bool:
        """Without autograd, on float32 CPU tensors: the folded convolutions also take their activation
        or residual add as a oneDNN post-op (``yyfast.cpu_fusion``, self-tested once)."""
        return not torch.is_grad_enabled() and cpu_fusion.usable(x)


class FusedResidual(_FoldsInEval, Residual):
    """``Residual`` whose eval forward folds both BatchNorms into their convolutions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._folds():
            return super().forward(x)
        c1, c2 = self.conv1, self.conv2
        w1, b1, w2, b2 = self._fold.get(
            (c1.weight, c1.bias, c2.weight, c2.bias, *bn_tensors(self.bn1), *bn_tensors(self.bn2)),
            lambda: in_dtype(c1.weight.dtype, *fold_conv_bn(c1, self.bn1), *fold_conv_bn(c2, self.bn2)))
        if self._cpu_fused(x):
            if x.shape[1] == 1:
                x = cpu_fusion.one_channel_last(x)  # else oneDNN writes the 1x1 shortcut in NCHW (slow)
            wino2 = winograd.available() and winograd.applies(c2)
            if wino2 and self._stem_applies():
                # conv1 + act and the 1x1 shortcut in one pass (cpu_eval.stem_conv), then the 3x3 conv
                # by Winograd with the shortcut add and the activation, as optimize_for_inference's stems.
                sc = self.shortcut
                ws = self.__dict__.setdefault("_stem_fold", FoldCache()).get(
                    (w1, b1, sc.weight, sc.bias), lambda: stem_conv.pack(w1, b1, sc.weight, sc.bias))
                h, shortcut = stem_conv.run(x, ws, c1.stride[0], self.act_name)
                return winograd.conv_with(self._winograd_weights(w2), b2, h, self.act_name, shortcut)
            h = cpu_fusion.conv_act(c1, x, self.act_name, weight=w1, bias=b1)
            if wino2:
                # The 3x3 conv by Winograd with the shortcut add and the activation (cpu_eval.winograd).
                return winograd.conv_with(self._winograd_weights(w2), b2, h, self.act_name, self.shortcut(x))
            out = cpu_fusion.conv_add(c2, h, self.shortcut(x), weight=w2, bias=b2)
            return activations.act(self.act_name, inplace=True)(out)
        h = self.act1(F.conv2d(x, w1, b1, c1.stride, c1.padding))
        return self.act(self.shortcut(x) + F.conv2d(h, w2, b2, c2.stride, c2.padding))

    def _stem_applies(self) -> bool:
        return stem_conv.available() and stem_conv.applies(self.conv1, self.shortcut)

    def _winograd_weights(self, w2: torch.Tensor) -> torch.Tensor:
        """conv2's Winograd weights for the folded ``w2``, kept while the fold cache returns that tensor."""
        cached = self.__dict__.get("_winograd_u")
        if cached is None or cached[0] is not w2:
            cached = (w2, winograd.transform_weights(w2))
            self.__dict__["_winograd_u"] = cached
        return cached[1]


class FusedMBConv(_FoldsInEval, MBConv):
    """``MBConv`` whose eval forward folds ``bn_in`` and ``bn_expand`` into the expand convolution and
    ``bn_project`` into the project convolution; the span is the fused op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._folds():
            return super().forward(x)
        if self._block_op(x):
            packed = self._packed()
            residual = None if mbconv_op.owns_shortcut(packed) else self.shortcut(x)
            return mbconv_op.run(x, residual, packed, self.span.stride, self.act_name, self.span.gate_name)
        bn_in = None if self.discard_input_bn else self.bn_in
        sources = (self.expand.weight, self.project.weight, *bn_tensors(self.bn_expand), *bn_tensors(self.bn_project),
                   *(bn_tensors(bn_in) if bn_in is not None else ()))
        we, be, wp, bp = self._fold.get(
            sources, lambda: in_dtype(self.expand.weight.dtype, *fold_expand(self),
                                      *fold_conv_bn(self.project, self.bn_project)))
        if self._cpu_fused(x):
            h = cpu_fusion.conv_act(self.expand, x, self.act_name, weight=we, bias=be)
            return cpu_fusion.conv_add(self.project, self.span(h), self.shortcut(x), weight=wp, bias=bp)
        h = self.span(self.act(F.conv2d(x, we, be)))
        return F.conv2d(h, wp, bp) + self.shortcut(x)

    def _block_op(self, x: torch.Tensor) -> bool:
        """The whole block as one ``yyfast::mbconv_eval`` call (``cpu_eval.mbconv_op``, what the folded model
        runs): float32 CPU without autograd, where the span's backend resolves to the C++ one."""
        return (self._cpu_fused(x) and mbconv_op.usable(x) and self.backend in ("auto", "cuda")
                and ops.resolve_backend(self.backend, x.device, training=False) == "cuda")

    def _packed(self):
        """The block op's weights: every BatchNorm folded (``bn_in``, ``bn_expand``, the span's, ``bn_project``),
        packed once and kept until a source tensor's values change (``FoldCache``, as for the other folds)."""
        span, bn_in = self.span, (None if self.discard_input_bn else self.bn_in)
        se = span.se
        shortcut = mbconv_op.shortcut_weights(self.shortcut, span.stride) or ()
        sources = (self.expand.weight, self.project.weight, span.conv.weight, *bn_tensors(self.bn_expand),
                   *bn_tensors(self.bn_project), *bn_tensors(span.bn), se.fc1.weight, se.fc1.bias, se.fc2.weight,
                   se.fc2.bias, *(bn_tensors(bn_in) if bn_in is not None else ()),
                   *(t for t in shortcut if t is not None))
        cache = self.__dict__.get("_block_fold")
        if cache is None:
            cache = self.__dict__["_block_fold"] = FoldCache()

        def fold():
            dtype = self.expand.weight.dtype
            we, be = fold_expand(self)
            wd, bd = fold_conv_bn(span.conv, span.bn)
            wp, bp = fold_conv_bn(self.project, self.bn_project)
            we, be, wd, bd, wp, bp = in_dtype(dtype, we, be, wd, bd, wp, bp)
            # the folded 1x1 weights laid out as the op's GEMMs read them (no transpose a call)
            return mbconv_op.pack(mbconv_op.gemm_b(we), be, wd, bd, se.fc1.weight, se.fc1.bias, se.fc2.weight,
                                  se.fc2.bias, mbconv_op.gemm_b(wp), bp, *shortcut)
        return cache.get(sources, fold)


class YYNet(ReferenceYYNet):
    """Yin Yang ConvNet with fused kernels.

    ``YYNet("yynet_small_64", backend="auto", act="silu", ...)`` or ``YYNet(config)``.
    ``backend``: ``"reference"`` (pure PyTorch), ``"triton"``, ``"cuda"`` (the ``yyfast._C``
    extension: CUDA kernels on a GPU, C++ kernels on the CPU), or ``"auto"`` (per device, the
    fastest available according to the committed benchmarks). The state_dict is identical to
    ``yyfast.reference_model.ReferenceYYNet``'s, so checkpoints load both ways. In eval mode, every
    backend but ``"reference"`` also folds the BatchNorms outside the spans into their
    convolutions on the fly (``yyfast.eval_fold``); training is unchanged. timm's spelling
    ``drop_rate`` is accepted for ``head_dropout``.
    """

    def __init__(self, config: Union[str, YYNetConfig] = "yynet_small_64", backend: str = "auto",
                 **overrides: Any):
        cfg = get_config(config, **translate_timm_kwargs(overrides))
        super().__init__(cfg, span_cls=FusedDWBNActSE, fusion_cls=FusedYinYangFusion, residual_cls=FusedResidual,
                         mbconv_cls=FusedMBConv)
        self.set_backend(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reference forward through the fused blocks; a CPU eval forward without autograd allocates
        from the shared CPU arena (``cpu_eval.arena``: intermediates reused across calls)."""
        if (not self.training and not torch.is_grad_enabled() and self.backend != "reference"
                and isinstance(x, torch.Tensor) and x.device.type == "cpu" and not torch.jit.is_tracing()
                and not torch.compiler.is_compiling()):
            with arena.scope():
                return super().forward(x)
        return super().forward(x)

    def set_backend(self, backend: str) -> "YYNet":
        """Switch every fused span and the fusion to ``backend`` (validated now)."""
        self.backend = check_backend(backend)
        for m in self.modules():
            if isinstance(m, (FusedDWBNActSE, FusedYinYangFusion, FusedResidual, FusedMBConv)):
                m.backend = backend
        return self

    def extra_repr(self) -> str:
        return f"name={self.config.name}, backend={self.backend}"


def create_model(name: Union[str, YYNetConfig], backend: str = "auto", pretrained: Any = None,
                 features_only: bool = False, out_indices: Any = None, **overrides: Any) -> torch.nn.Module:
    """timm-style factory: ``create_model("yynet_small_64", backend="cuda", act="silu")``.

    ``pretrained``: a ``save_pretrained`` folder or a Hugging Face Hub repo id whose weights fit
    ``name`` with ``overrides`` (``ValueError`` names the first option that differs; a different
    ``num_classes`` gets a new classifier). ``features_only=True`` returns ``YYNetFeatures``: the
    feature maps at ``out_indices`` (default all; ``feature_info`` lists them).
    """
    if pretrained is True:
        raise ValueError("pretrained=True: yyfast publishes no weights of its own; pass a folder written by "
                         "save_pretrained or a Hugging Face Hub repo id")
    if pretrained:
        from .hub import load_pretrained

        wanted = get_config(name, **translate_timm_kwargs(overrides))
        model = load_pretrained(lambda config: YYNet(config, backend=backend), pretrained, wanted=wanted)
    else:
        model = YYNet(name, backend=backend, **overrides)
    if features_only:
        return YYNetFeatures(model, out_indices)
    if out_indices is not None:
        raise ValueError("out_indices is only valid with features_only=True")
    return model


__all__ = ["YYNet", "create_model", "list_models", "FusedDWBNActSE", "FusedYinYangFusion", "FusedResidual",
           "FusedMBConv"]
