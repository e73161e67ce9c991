"""The eval-only, BatchNorm-folded YYNet that ``optimize_for_inference`` returns.

Every block computes exactly what the eval-mode reference block computes (up to rounding):

* ``FoldedResidual``: ``act(shortcut(x) + conv2'(act(conv1'(x))))`` with ``bn1``/``bn2`` folded.
* ``FoldedMBConv``: ``project'(span'(act(expand'(x)))) + shortcut(x)`` where ``expand'`` carries
  the input BN (unless the config discards it) and ``bn_expand``, ``project'`` carries
  ``bn_project``, and the span's depthwise weights carry ``span.bn``.
* ``FoldedSpan``: ``DWConv3x3' -> act -> SE``, either one fused ``yyfast.ops.dw_bn_act_se`` call
  (eval mode, with an identity BatchNorm since the real one is already in the weights) or plain
  PyTorch ops.

Three ways to run (``InferenceYYNet.graph``):

* ``"fast"`` (default): plain PyTorch span where no fused kernel runs on the device, with the
  activations applied in place (on float32 CPU tensors: inside oneDNN's convolution, see
  ``cpu_fusion``) and the SE scale folded into the projection (a batched matmul with
  per-sample weights ``W_project * s_n``), which saves a full pass over the widest tensor;
* the same with the fused op as the span on devices where a fused backend runs;
* ``"plain"``: only standard operators, no in-place ops, no custom ops: the graph ONNX export
  and ``torch.export`` see.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import activations, cpu_fusion, ops
from ..config import YYNetConfig
from ..timm_interface import TimmInfo
from ..cpu_eval import arena, mbconv_op, stem_conv, winograd
from . import block_plan, whole_forward

#: An identity BatchNorm for the fused op: with running_var 1 and this eps, var + eps rounds to
#: exactly 1 in float32 and float64, so the op's normalisation is an exact no-op.
IDENTITY_BN_EPS = 1e-30

GRAPHS = ("fast", "plain")


def _conv(weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int = 1, padding: int = 0,
          groups: int = 1) -> nn.Conv2d:
    """An ``nn.Conv2d`` holding the given (float64) weights; cast later with the whole model."""
    out_ch, in_per_group, kh, kw = weight.shape
    conv = nn.Conv2d(in_per_group * groups, out_ch, (kh, kw), stride, padding, groups=groups,
                     bias=bias is not None, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def shortcut_fast(shortcut: nn.Module, x: torch.Tensor, run_conv=cpu_fusion.run_conv) -> torch.Tensor:
    """A block's shortcut in the fast graph: its 1x1 convolution (after the stride-2 max pool) through
    ``run_conv``; ``Identity`` returns ``x`` itself (the caller adds it, never writes it)."""
    if isinstance(shortcut, nn.Identity):
        return x
    if isinstance(shortcut, nn.Sequential):  # MaxPool2d(3, 2, 1) -> Conv2d 1x1
        pool, conv = shortcut
        return run_conv(conv, F.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding))
    return run_conv(shortcut, x)


class FoldedResidual(nn.Module):
    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, shortcut: nn.Module, act: str):
        super().__init__()
        self.conv1, self.conv2, self.shortcut, self.act = conv1, conv2, shortcut, act

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if inplace:  # the fast graph: oneDNN post-ops on the CPU, in-place ops elsewhere
            return self._fast(x, cpu_fusion.conv_act, cpu_fusion.conv_add, cpu_fusion.run_conv)
        main = self.conv2(activations.act(self.act)(self.conv1(x)))
        return activations.act(self.act)(main + self.shortcut(x))

    def bind_onednn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """This block's fast-graph forward for float32 CPU tensors (``cpu_fusion.usable`` and
        ``block_plan.usable`` checked by the caller) with every weight prepared now: a 3x3 convolution
        Winograd's op computes goes through it (``conv2`` with the shortcut's add and the activation in
        the same call), the others through oneDNN. ``InferenceYYNet`` binds again when a weight changes."""
        conv1, conv2, shortcut, act = self.conv1, self.conv2, self.shortcut, self.act
        if not winograd.available():
            return lambda x: self._fast(x, cpu_fusion.conv_act_onednn, cpu_fusion.conv_add_onednn,
                                        cpu_fusion.conv_onednn)
        if winograd.applies(conv2) and stem_conv.available() and stem_conv.applies(conv1, shortcut):
            # a stem: conv1 and the shortcut in one pass over its few input channels, then Winograd
            ws, stride, (u2, b2) = stem_conv.packed(conv1, shortcut), conv1.stride[0], winograd.packed(conv2)
            def stem(x: torch.Tensor) -> torch.Tensor:
                t, sc = stem_conv.run(x, ws, stride, act)
                return winograd.conv_with(u2, b2, t, act, sc)
            return stem
        if winograd.applies(conv1):
            u1, b1 = winograd.packed(conv1)
            first = lambda x: winograd.conv_with(u1, b1, x, act)  # noqa: E731
        else:
            first = lambda x: cpu_fusion.conv_act_onednn(conv1, x, act)  # noqa: E731
        if winograd.applies(conv2):
            u2, b2 = winograd.packed(conv2)
            return lambda x: winograd.conv_with(u2, b2, first(x), act,
                                                shortcut_fast(shortcut, x, cpu_fusion.conv_onednn))
        return lambda x: activations.act(act, inplace=True)(
            cpu_fusion.conv_add_onednn(conv2, first(x), shortcut_fast(shortcut, x, cpu_fusion.conv_onednn)))

    def whole_step(self, act: str, gate: str) -> Optional[whole_forward.Step]:
        """This block as a step of ``yyfast::yynet_features_eval`` (weights prepared now), or None."""
        return whole_forward.residual_step(self.conv1, self.conv2, self.shortcut) if self.act == act else None

    def _fast(self, x: torch.Tensor, conv_act, conv_add, run_conv) -> torch.Tensor:
        """act(conv2(conv_act(conv1, x)) + shortcut(x)), the add and the last activation in place."""
        main = conv_act(self.conv1, x, self.act)
        shortcut = shortcut_fast(self.shortcut, x, run_conv)
        return activations.act(self.act, inplace=True)(conv_add(self.conv2, main, shortcut))


class FoldedSpan(nn.Module):
    """``DWConv3x3(stride)+BN (folded) -> act -> SE``; the SE keeps the reference's parameters."""

    def __init__(self, conv: nn.Conv2d, fc1: nn.Linear, fc2: nn.Linear, act: str, gate: str):
        super().__init__()
        self.conv, self.fc1, self.fc2, self.act, self.gate = conv, fc1, fc2, act, gate
        self.stride = conv.stride[0]
        channels = conv.out_channels
        # The fused op takes a BatchNorm; the real one is folded into conv, so give it the identity.
        self.register_buffer("bn_one", torch.ones(channels, dtype=torch.float64), persistent=False)
        self.register_buffer("bn_zero", torch.zeros(channels, dtype=torch.float64), persistent=False)

    def activated(self, h: torch.Tensor, inplace: bool) -> torch.Tensor:
        """``d = act(DWConv'(h))``: the tensor the SE scales."""
        if inplace:
            return cpu_fusion.conv_act(self.conv, h, self.act)
        return activations.act(self.act)(self.conv(h))

    def se_scale(self, d: torch.Tensor) -> torch.Tensor:
        """``s = gate(W2 act(W1 mean_hw(d) + b1) + b2)``, shape (N, C)."""
        hidden = activations.act(self.act)(self.fc1(d.mean(dim=(2, 3))))
        return activations.gate(self.gate)(self.fc2(hidden))

    def forward(self, h: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        d = self.activated(h, inplace)
        return d * self.se_scale(d)[:, :, None, None]

    def fused(self, h: torch.Tensor, backend: str) -> torch.Tensor:
        """The same span as one ``yyfast.ops.dw_bn_act_se`` call in eval mode."""
        return ops.dw_bn_act_se(h, self.conv.weight, self.bn_one, self.conv.bias, self.bn_zero, self.bn_one,
                                self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                                stride=self.stride, eps=IDENTITY_BN_EPS, training=False, act=self.act,
                                gate=self.gate, backend=backend)


class FoldedMBConv(nn.Module):
    def __init__(self, expand: nn.Conv2d, span: FoldedSpan, project: nn.Conv2d, shortcut: nn.Module, act: str):
        super().__init__()
        self.expand, self.span, self.project, self.shortcut, self.act = expand, span, project, shortcut, act

    def _project_scaled(self, d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``project(d * s)`` without writing ``d * s``: one batched matmul with per-sample weights."""
        n, c, height, width = d.shape
        weight = self.project.weight.view(-1, c)                      # (Cout, C)
        bias = self.project.bias
        if d.is_contiguous(memory_format=torch.channels_last):
            rows = d.permute(0, 2, 3, 1).reshape(n, height * width, c)  # a view: (N, HW, C)
            scaled = s[:, :, None] * weight.t()[None]                 # (N, C, Cout)
            out = torch.baddbmm(bias.view(1, 1, -1), rows, scaled)    # (N, HW, Cout)
            return out.view(n, height, width, -1).permute(0, 3, 1, 2)  # channels_last (N, Cout, H, W)
        scaled = weight[None] * s[:, None, :]                         # (N, Cout, C)
        out = torch.baddbmm(bias.view(1, -1, 1), scaled, d.reshape(n, c, height * width))
        return out.view(n, -1, height, width)

    def forward(self, x: torch.Tensor, span_backend: str = "plain", inplace: bool = False,
                fold_se: bool = False, op_backend: Optional[str] = None) -> torch.Tensor:
        """``op_backend``: what the fused op is asked for (``"auto"`` keeps its self-check on a GPU);
        ``span_backend`` the concrete backend it resolves to, which picks the code path here."""
        if inplace and span_backend == "cuda" and block_plan.usable(x):
            # the whole block in one C++ call (the C++ backend on a float32 CPU tensor): no expanded tensors
            return block_plan.run_block(self, x, lambda t: shortcut_fast(self.shortcut, t))
        h = cpu_fusion.conv_act(self.expand, x, self.act) if inplace else activations.act(self.act)(self.expand(x))
        if span_backend != "plain":
            out = self.project(self.span.fused(h, op_backend or span_backend))
        elif fold_se:
            d = self.span.activated(h, inplace)
            out = self._project_scaled(d, self.span.se_scale(d))
        else:
            out = self.project(self.span(h, inplace))
        return out.add_(shortcut_fast(self.shortcut, x)) if inplace else out + self.shortcut(x)

    def bind_onednn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The block op with its weights packed now (``block_plan.usable`` and ``cpu_fusion.usable`` are the
        caller's to check; ``InferenceYYNet`` binds again when a weight changes)."""
        packed, shortcut = block_plan.packed_weights(self), self.shortcut
        stride, act, gate = self.span.stride, self.act, self.span.gate
        if mbconv_op.owns_shortcut(packed):
            return lambda x: mbconv_op.run(x, None, packed, stride, act, gate)
        return lambda x: mbconv_op.run(x, shortcut_fast(shortcut, x, cpu_fusion.conv_onednn), packed, stride, act, gate)

    def whole_step(self, act: str, gate: str) -> Optional[whole_forward.Step]:
        """This block as a step of ``yyfast::yynet_features_eval`` (weights packed now), or None."""
        if self.act != act or self.span.gate != gate:
            return None
        return whole_forward.mbconv_step(block_plan.packed_weights(self), self.span.stride, self.shortcut)


def _module_tree(root: nn.Module):
    """Every module below ``root`` (itself included) and their parameters, in one walk: what ``modules()``
    and a pass over ``_parameters`` give, in 43 us instead of 62 for the folded yynet_small_64."""
    modules: List[nn.Module] = []
    params: List[torch.Tensor] = []
    stack = [root]
    while stack:
        m = stack.pop()
        modules.append(m)
        params += [p for p in m._parameters.values() if p is not None]
        stack += [c for c in m._modules.values() if c is not None]
    return modules, params


def _span(t: torch.Tensor):
    """The memory a dense tensor covers, (first address, element count, dtype), whatever the order of its
    dimensions: a view that permutes or reshapes a dense tensor covers the same. None if not dense."""
    dims = sorted((st, n) for n, st in zip(t.shape, t.stride()) if n != 1)
    expected = 1
    for stride, n in dims:
        if stride != expected:
            return None
        expected *= n
    return (t.data_ptr(), t.numel(), t.dtype)


def _plain_linear(module: nn.Module) -> bool:
    """A biased ``nn.Linear`` without hooks: a head layer the one-call forward computes itself (not the
    ``Identity`` of ``num_classes=0``)."""
    return type(module) is nn.Linear and module.bias is not None and not _has_hooks(module)


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks)


class _FastRecord:
    """``InferenceYYNet``'s record for ``yyfast._C.fast_forward``. A copy of the model gets none (the capsule
    inside cannot be copied; the copy binds its own at its first forward)."""
    __slots__ = ("record", "plan", "compared")

    def __init__(self, record: tuple, plan: whole_forward.Plan, compared: int):
        # plan: what the capsule holds; compared: how many parameters it compares by value (the others the
        # op reads itself); both for introspection
        self.record, self.plan, self.compared = record, plan, compared

    def __deepcopy__(self, memo) -> None:
        return None

    def __reduce__(self):
        return (type(None), ())


class InferenceYYNet(TimmInfo, nn.Module):
    """A YYNet with every BatchNorm folded, for inference only.

    Built by ``yyfast.optimize_for_inference``. It is permanently in eval mode: ``.train()``
    raises (there are no BatchNorms left to train), and its forward runs without autograd.
    Inputs are cast to the model's dtype and memory format; the logits come out in that dtype.
    timm's read-only interface applies: ``num_classes``, ``num_features``, ``pretrained_cfg``,
    ``feature_info``, ``forward_features``, ``forward_head(x, pre_logits)``, ``get_classifier``.
    """

    def __init__(self, config: YYNetConfig, yin: nn.ModuleList, yang: nn.ModuleList, single_path: nn.ModuleList,
                 fc: nn.Linear, classifier: nn.Linear, backend: str = "auto", channels_last: bool = True):
        super().__init__()
        self.config = config
        self.yin, self.yang, self.single_path = yin, yang, single_path
        self.fc, self.classifier = fc, classifier
        self.backend = backend
        self.channels_last = channels_last
        self.graph = "fast"
        self.c1, self.c2, self.c3 = config.fusion_coefficients
        super().train(False)

    # -- eval-only guard -------------------------------------------------------------------------
    def __getstate__(self) -> Dict[str, Any]:
        # The forward's caches (bound closures, the fast record's capsule) are rebuilt at the next forward;
        # they cannot be pickled, so torch.save(model) leaves them out.
        state = dict(super().__getstate__())
        for key in ("_bound_blocks", "_fast_forward"):
            state.pop(key, None)
        return state

    def train(self, mode: bool = True) -> "InferenceYYNet":
        if mode:
            raise RuntimeError("InferenceYYNet is eval-only: its BatchNorms are folded into the convolutions. "
                               "Train the original YYNet and call yyfast.optimize_for_inference again.")
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.fc.weight.dtype

    def extra_repr(self) -> str:
        return (f"name={self.config.name}, backend={self.backend}, dtype={self.dtype}, "
                f"channels_last={self.channels_last}, graph={self.graph}")

    # -- forward -----------------------------------------------------------------------------------
    def span_backend(self, device: torch.device) -> str:
        """``"plain"`` or the fused backend the MBConv spans use for tensors on ``device``."""
        if self.graph == "plain" or self.backend == "reference":
            return "plain"
        if self.backend == "auto":
            # On the CPU the C++ fused span beat the folded plain span (oneDNN conv+act, SE scale folded
            # into the projection) once vectorised: yynet_small_64, batch 256, 2-core CPU, 8 interleaved
            # runs each, median 2.76 s vs 3.09 s per batch (1.47 s vs 1.55 s with glibc keeping freed
            # memory), 2026-11-27. Without the extension, auto resolves to the plain span.
            cache = self.__dict__.setdefault("_auto_span_backend", {})
            if device.type not in cache:  # resolved once per device type: it reads the backends report
                name = ops.resolve_backend("auto", device, training=False)
                cache[device.type] = "plain" if name == "reference" else name
            return cache[device.type]
        return self.backend

    def _op_backend(self, span_backend: str) -> str:
        # "auto" reaches the ops as "auto", so a GPU kernel that fails its first-use self-check
        # (yyfast.self_check) falls back there too; it resolves to span_backend when it passes.
        return "auto" if self.backend == "auto" else span_backend

    def _blocks(self, blocks: nn.ModuleList, x: torch.Tensor, span_backend: str, fast: bool,
                bound: Optional[List[Callable[[torch.Tensor], torch.Tensor]]] = None) -> torch.Tensor:
        for k, block in enumerate(blocks):
            if bound is not None and not _has_hooks(block):
                # Batch-1 overhead: the block's ops with every argument bound (``_bound``), without
                # nn.Module's call machinery or a weight check per block and convolution (a block with
                # hooks still goes through its module call). The one check left (``_bound``: the module
                # walk and same_values) cost 0.25-0.3 ms of a ~4 ms forward from Python (yynet_small_64
                # fp32 batch 1, 2 threads, 2-core EPYC, 2026-11-28); the one-call forward makes it in C
                # (``_fast_record``).
                x = bound[k](x)
            elif isinstance(block, FoldedMBConv):
                x = block(x, span_backend, inplace=fast, fold_se=fast, op_backend=self._op_backend(span_backend))
            else:
                x = block(x, inplace=fast)
        return x

    def _bound(self) -> Dict[str, Any]:
        """Every block's ``bind_onednn()`` (and, under ``"whole"``, the one-call plan of ``_whole_plan``),
        kept while the module tree and every parameter's values are the same as when they were bound (one
        ``yyfast::same_values`` call over a snapshot of the parameters: version counters miss writes
        through ``.data``). On any change every block's prepared weights (the block op's packing,
        Winograd's transform, the stem convolution's layout) are dropped and bound again."""
        modules, params = _module_tree(self)
        ids = tuple(map(id, modules))
        cached = self.__dict__.get("_bound_blocks")
        if cached is not None and cached[0] == ids and torch.ops.yyfast.same_values(params, cached[1]):
            return cached[2]
        for m in modules:  # version-keyed caches can miss a .data write: prepare everything again
            block_plan.forget(m)
            winograd.forget(m)
            stem_conv.forget(m)
        bound = {name: [b.bind_onednn() for b in getattr(self, name)] for name in ("yang", "yin", "single_path")}
        bound["whole"] = self._whole_plan()
        snapshot = [p.detach().clone() for p in params]
        self.__dict__["_bound_blocks"] = (ids, snapshot, bound)
        self.__dict__["_fast_forward"] = self._fast_record(modules, params, snapshot, bound["whole"])
        return bound

    def _fast_record(self, modules: List[nn.Module], params: List[torch.Tensor], snapshot: List[torch.Tensor],
                     whole: Optional[whole_forward.Plan]) -> Optional["_FastRecord"]:
        """What ``yyfast._C.fast_forward`` needs to run the one-call forward with every check of the Python
        route made in C (``csrc/fast_forward.cpp``): None where that route would not end in the one call."""
        if (whole is None or self.dtype != torch.float32
                or not all(_plain_linear(m) for m in (self.fc, self.classifier))
                or not hasattr(whole_forward.extension(), "fast_forward")):
            return None
        hooks = nn.modules.module
        # A parameter the op reads itself (its weight argument is a view of it: mbconv_op.pack, the head)
        # needs no snapshot, only to stay where it is; the others (Winograd's transform, a packed layout, a
        # sum of biases) are compared with theirs.
        read = {_span(t) for t in (*whole.weights, self.fc.weight, self.fc.bias, self.classifier.weight,
                                   self.classifier.bias) if t is not None}
        read.discard(None)
        snapshots = [None if _span(p) in read else snap for p, snap in zip(params, snapshot)]
        capsule = whole_forward.extension().fast_record(
            whole.weights, whole.plan, whole.fusion, whole.act, whole.gate, self.fc.weight, self.fc.bias,
            self.classifier.weight, self.classifier.bias, params, snapshots, self.config.in_chans)
        state = (("graph", self.graph), ("backend", self.backend))
        return _FastRecord((tuple(modules), tuple(params), capsule, state,
                            (hooks._global_forward_hooks, hooks._global_forward_pre_hooks)), whole,
                           sum(snap is not None for snap in snapshots))

    def _whole_plan(self) -> Optional[whole_forward.Plan]:
        """The blocks' prepared weights as ``yyfast::yynet_features_eval``'s arguments (see
        ``whole_forward``), or None where the op is not built or does not run every block."""
        if not whole_forward.available():
            return None
        cfg = self.config
        steps = [[b.whole_step(cfg.act, cfg.se_gate) for b in getattr(self, name)]
                 for name in ("yang", "yin", "single_path")]
        return whole_forward.build(*steps, cfg.yin_input, cfg.fusion_coefficients, cfg.act, cfg.se_gate)

    def _fuse(self, a: torch.Tensor, i: torch.Tensor, span_backend: str) -> torch.Tensor:
        if span_backend != "plain":
            return ops.yinyang_fuse(a, i, self.config.fusion, backend=self._op_backend(span_backend))
        out = None
        for c, term in ((self.c1, lambda: a * i), (self.c2, lambda: a), (self.c3, lambda: i)):
            if c:
                t = term() if c == 1.0 else term() * c
                out = t if out is None else out + t
        return out if out is not None else torch.zeros_like(a)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` checked, cast to the model's dtype and (if set) made channels_last."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.config.in_chans:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (N, {self.config.in_chans}, H, W), got {shape}")
        x = x.to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _onednn(self, x: torch.Tensor, span_backend: str) -> bool:
        """Whether the blocks run as their prepared C++/oneDNN calls (``_bound``) for this input."""
        return (self.graph == "fast" and span_backend == "cuda" and block_plan.usable(x) and cpu_fusion.usable(x))

    def _whole(self, bound: Dict[str, Any]) -> Optional[whole_forward.Plan]:
        """The one-call plan (``whole_forward``) when there is one and no block has hooks (which only the
        per-block path calls)."""
        whole = bound.get("whole")
        if whole is None or any(_has_hooks(b) for name in ("yang", "yin", "single_path") for b in getattr(self, name)):
            return None
        return whole

    def _route(self, x: torch.Tensor):
        """``x`` prepared (``_prepare``), its span backend, the bound blocks (``_bound``; empty where they do
        not run) and the one-call plan (``_whole``; None where it does not run): worked out once a forward."""
        x = self._prepare(x)
        span_backend = self.span_backend(x.device)
        bound = self._bound() if self._onednn(x, span_backend) else {}
        return x, span_backend, bound, self._whole(bound)

    def _features(self, x: torch.Tensor, span_backend: str, bound: Dict[str, Any],
                  whole: Optional[whole_forward.Plan]) -> torch.Tensor:
        if whole is not None:
            # Every block in one C++ call: the same ops and results, no Python between them.
            return whole_forward.run(whole, x)
        fast = self.graph == "fast"
        yin_in = x.mean(dim=1, keepdim=True) if self.config.yin_input == "mean" else x[:, :1]
        if self.channels_last:
            yin_in = cpu_fusion.one_channel_last(yin_in)
        a = self._blocks(self.yang, x, span_backend, fast, bound.get("yang"))
        i = self._blocks(self.yin, yin_in, span_backend, fast, bound.get("yin"))
        return self._blocks(self.single_path, self._fuse(a, i, span_backend), span_backend, fast,
                            bound.get("single_path"))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._features(*self._route(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool -> fc -> act (``pre_logits=True`` stops here) -> classifier (dropout is off in eval)."""
        with torch.no_grad():
            # tracing first: under torch.onnx's tracer even x.dim() records a node (an internal assert then)
            if (not torch.jit.is_tracing() and not torch.compiler.is_compiling() and x.device.type == "cpu"
                    and x.dtype == torch.float32 and x.dim() == 4 and whole_forward.available()
                    and all(_plain_linear(m) for m in (self.fc, self.classifier))):
                # one C++ call (yyfast::head_eval, what the one-call forward runs too: the same bits)
                return torch.ops.yyfast.head_eval(x, self.fc.weight, self.fc.bias, self.classifier.weight,
                                                  self.classifier.bias, self.config.act, pre_logits)
            h = activations.act(self.config.act)(self.fc(x.mean(dim=(2, 3))))
            return h if pre_logits else self.classifier(h)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def _memory_scope(self, x: torch.Tensor):
        """``arena.scope()`` for the fast graph on the CPU (intermediates reused across calls, see
        ``cpu_eval/arena.py``); otherwise nothing."""
        if (self.graph == "fast" and isinstance(x, torch.Tensor) and x.device.type == "cpu"
                and not torch.jit.is_tracing() and not torch.compiler.is_compiling()):
            return arena.scope()
        return contextlib.nullcontext()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.__dict__.get("_fast_forward")
        if (fast is not None and not torch.compiler.is_compiling() and type(x) is torch.Tensor
                and not torch.jit.is_tracing() and not torch._C._is_torch_function_mode_enabled()):
            # The one-call forward with the checks below made in C (csrc/fast_forward.cpp): 4.1 -> 3.5 ms
            # at batch 1 (yynet_small_64, 2 threads, 2-core EPYC). None: something changed since the
            # record (a weight, a module, a hook, the graph) or the input is another kind; the route below
            # then decides, and binds again where a weight changed.
            logits = whole_forward.extension().fast_forward(self, fast.record, x)
            if logits is not None:
                return logits
        with self._memory_scope(x):
            # The no-grad region ends before forward_head (which has its own), as when forward called
            # forward_features: torch.export failed to save a program with the head inside it.
            with torch.no_grad():
                x, span_backend, bound, whole = self._route(x)  # once: the weight check is ~0.3 ms at batch 1
                if whole is not None and all(_plain_linear(m) for m in (self.fc, self.classifier)):
                    # the head in the same call as the blocks (whole_forward.run_logits)
                    return whole_forward.run_logits(whole, x, self.fc, self.classifier)
                features = self._features(x, span_backend, bound, whole)
            return self.forward_head(features)
