"""The public fused ops: ``yyfast.ops.dw_bn_act_se`` and ``yyfast.ops.yinyang_fuse``.

One place validates arguments (naming the bad one), picks the backend, and updates the
BatchNorm running statistics. The backends live beside this file:

* ``reference``  (``composed.py``): composed ``torch.nn.functional`` calls, the numerical truth;
* ``triton``     (``triton_ops.py``): Triton kernels registered with ``torch.library.custom_op``;
* ``cuda``       (``cuda_ops.py``): the ``yyfast._C`` extension's ``TORCH_LIBRARY`` ops (CUDA
  kernels, and C++ CPU twins that run on CPU tensors).

Both register each op under one schema (``schemas.py``: ``yyfast::<op>_triton``,
``yyfast::<op>_cuda``) with the same fake and autograd formula (``registration.py``).

Each backend module exposes the same two functional entry points, differentiable through their
registered autograd formulas::

    dw_bn_act_se(x, dw_weight, bn_weight, bn_bias, running_mean, running_var,
                 se_w1, se_b1, se_w2, se_b2, stride, eps, training, act, gate) -> (y, mean, var)
    yinyang_fuse(a, i, c1, c2, c3) -> out

where ``mean``/``var`` are the float32 per-channel batch mean and *biased* variance of the
depthwise output in training (the running statistics themselves in eval), and ``se_w1``/``se_w2``
are 2-D. The running-statistic update (momentum, unbiased variance, ``num_batches_tracked``) is
done here, once, for every backend, exactly as ``nn.BatchNorm2d`` does it.
"""
from __future__ import annotations

from typing import Optional

import torch

from yyfast.kernels.output_spec import span_output_size

from ..config import ACTIVATIONS, FUSIONS, SE_GATES
from .composed import dw_bn_act_se_reference, yinyang_fuse_reference

__all__ = ["dw_bn_act_se", "yinyang_fuse", "resolve_backend", "dw_bn_act_se_reference",
           "yinyang_fuse_reference"]

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _backend_module(name: str):
    if name == "triton":
        from . import triton_ops as module
    elif name == "cuda":
        from . import cuda_ops as module
    else:
        raise ValueError(f"backend={name!r} is not valid; allowed values: 'reference', 'triton', 'cuda', 'auto'")
    return module


def _constant_for_compile(fn):
    """``torch._dynamo.assume_constant_result`` without importing ``torch._dynamo`` at ``import yyfast``
    (about 1 s of every CLI start and of the package import, 2-core EPYC): that decorator only sets
    this attribute, which Dynamo reads when it traces a call (torch 2.11 to 2.15;
    ``tests/test_backends.py`` checks that the marker is still the one Dynamo's decorator sets)."""
    fn._dynamo_marked_constant = True
    return fn


def resolve_backend(backend: str, device: torch.device, training: bool = True) -> str:
    """The concrete backend for ``backend`` on ``device``; raises ``RuntimeError`` if unavailable."""
    return _resolve_backend(backend, device.type, bool(training))


@_constant_for_compile
def _resolve_backend(backend: str, device_type: str, training: bool) -> str:
    # A constant for torch.compile: the answer depends only on the machine, and tracing the
    # availability probe (imports, lru_cache) would break fullgraph compilation.
    from ..availability import auto_backend, backends

    if backend == "auto":
        return auto_backend(torch.device(device_type), training)
    if backend == "reference":
        return backend
    if backend not in ("triton", "cuda"):
        raise ValueError(f"backend={backend!r} is not valid; allowed values: 'reference', 'triton', 'cuda', 'auto'")
    info = backends()[backend]
    if device_type not in info["devices"]:
        why = info["reason"] or f"it does not run on {device_type} tensors here"
        raise RuntimeError(f"backend={backend!r} is not available for {device_type} tensors: {why}")
    return backend


def _self_checked(backend: str, name: str, op: str, device: torch.device, dtype: torch.dtype, training: bool,
                  variant: tuple) -> str:
    """Under ``auto``, the backend that passed its self-check on this device (``yyfast.self_check``:
    GPU devices only by default, so CPU calls return at once)."""
    if backend != "auto" or name == "reference":
        return name
    return _self_checked_const(name, op, str(device), str(dtype), bool(training), variant)


@_constant_for_compile
def _self_checked_const(name: str, op: str, device: str, dtype: str, training: bool, variant: tuple) -> str:
    # A constant for torch.compile, like _resolve_backend: the check runs eagerly, once, at trace
    # time, and the graph holds its answer.
    from .. import self_check
    from ..availability import auto_candidates

    dev = torch.device(device)
    if not self_check.applies(dev):
        return name
    return self_check.checked_backend(name, auto_candidates(dev, training), op, device, dtype, training, variant)


def _check_tensor(name: str, t, *, dim=None, shape=None, device=None, float_only=True) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if float_only and t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be a floating tensor (float32, float16, bfloat16, float64), got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but x is on {device}")


def _se_2d(name: str, w: torch.Tensor, rows: int, cols: int, device) -> torch.Tensor:
    _check_tensor(name, w, device=device)
    if tuple(w.shape) not in ((rows, cols), (rows, cols, 1, 1)):
        raise ValueError(f"{name} must have shape ({rows}, {cols}) or ({rows}, {cols}, 1, 1), got {tuple(w.shape)}")
    return w.reshape(rows, cols)


_HALF = (torch.float16, torch.bfloat16)


def _check_dtypes(x: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Every parameter and statistic has x's dtype, or float32 with a float16/bfloat16 x (mixed
    precision, as under autocast); the same rule for every backend."""
    for name, t in tensors.items():
        if t.dtype != x.dtype and not (t.dtype == torch.float32 and x.dtype in _HALF):
            raise ValueError(f"{name} has dtype {t.dtype} but x has {x.dtype}; allowed: x's dtype, or float32 "
                             "when x is float16/bfloat16 (mixed precision)")


def _reference_span(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, w1, b1, w2, b2, **kwargs):
    """The reference span; in mixed precision computed in float32 (as the fused kernels accumulate),
    the output in x's dtype and the running statistics updated in their own dtype."""
    params = (dw_weight, bn_weight, bn_bias, w1, b1, w2, b2)
    if all(t.dtype == x.dtype for t in (*params, running_mean, running_var)):
        return dw_bn_act_se_reference(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, w1, b1, w2, b2,
                                      **kwargs)
    stats = [t if t.dtype == torch.float32 else t.float() for t in (running_mean, running_var)]
    f32 = [t.float() for t in params]
    y = dw_bn_act_se_reference(x.float(), *f32[:3], *stats, *f32[3:], **kwargs)
    with torch.no_grad():
        for own, used in zip((running_mean, running_var), stats):
            if own is not used:
                own.copy_(used)
    return y.to(x.dtype)


def dw_bn_act_se(x: torch.Tensor, dw_weight: torch.Tensor, bn_weight: torch.Tensor, bn_bias: torch.Tensor,
                 running_mean: torch.Tensor, running_var: torch.Tensor, se_w1: torch.Tensor,
                 se_b1: torch.Tensor, se_w2: torch.Tensor, se_b2: torch.Tensor, *, stride: int = 1,
                 eps: float = 1e-5, momentum: Optional[float] = 0.1, training: bool = True,
                 act: str = "gelu", gate: str = "sigmoid", num_batches_tracked: Optional[torch.Tensor] = None,
                 backend: str = "auto") -> torch.Tensor:
    """The MBConv span ``DWConv3x3(stride, pad 1) -> BatchNorm -> act -> SE``, fused.

    ``x`` is (N, Ch, H, W), NCHW or channels_last, float32/float16/bfloat16 (float64 on the
    reference backend); the output has shape (N, Ch, ceil(H/s), ceil(W/s)), x's dtype and memory
    format. In training the running statistics (and ``num_batches_tracked`` if given) are
    updated in place exactly like ``nn.BatchNorm2d``; ``momentum=None`` is the cumulative average.
    """
    _check_tensor("x", x, dim=4)
    n, channels, height, width = x.shape
    dev = x.device
    # An int, exactly: 2.0 == 2 would pass a membership test and then fail in F.conv2d on the
    # reference backend only, while the fused backends silently int() it.
    if isinstance(stride, bool) or not isinstance(stride, int) or stride not in (1, 2):
        raise ValueError(f"stride={stride!r} is not valid; allowed values: 1, 2 (an int)")
    if act not in ACTIVATIONS:
        raise ValueError(f"act={act!r} is not valid; allowed values: {', '.join(map(repr, ACTIVATIONS))}")
    if gate not in SE_GATES:
        raise ValueError(f"gate={gate!r} is not valid; allowed values: {', '.join(map(repr, SE_GATES))}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps={eps!r} is not valid; it must be a positive float")
    if momentum is not None and not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum={momentum!r} is not valid; it must be None or a float in [0, 1]")
    if n == 0 or channels == 0 or height == 0 or width == 0:
        raise ValueError(f"x must have no empty dimension, got shape {tuple(x.shape)}")
    _check_tensor("dw_weight", dw_weight, shape=(channels, 1, 3, 3), device=dev)
    for name, t in (("bn_weight", bn_weight), ("bn_bias", bn_bias), ("running_mean", running_mean),
                    ("running_var", running_var), ("se_b2", se_b2)):
        _check_tensor(name, t, shape=(channels,), device=dev)
    hidden = se_b1.shape[0] if isinstance(se_b1, torch.Tensor) and se_b1.dim() == 1 else None
    _check_tensor("se_b1", se_b1, dim=1, device=dev)
    w1 = _se_2d("se_w1", se_w1, hidden, channels, dev)
    w2 = _se_2d("se_w2", se_w2, channels, hidden, dev)
    _check_dtypes(x, dw_weight=dw_weight, bn_weight=bn_weight, bn_bias=bn_bias, running_mean=running_mean,
                  running_var=running_var, se_w1=se_w1, se_b1=se_b1, se_w2=se_w2, se_b2=se_b2)
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t.requires_grad:
            raise ValueError(f"{name} must not require grad: running statistics are updated in place and get no "
                             "gradient (register them as buffers, or pass a tensor with requires_grad=False)")
    out_h, out_w = span_output_size(height, width, stride)
    if training and n * out_h * out_w < 2:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)} "
                         f"(depthwise output {n}x{out_h}x{out_w} per channel)")
    name = resolve_backend(backend, dev, training)
    name = _self_checked(backend, name, "dw_bn_act_se", dev, x.dtype, training, (int(stride), act, gate))
    factor = momentum
    if training and num_batches_tracked is not None:
        with torch.no_grad():
            num_batches_tracked.add_(1)
        if momentum is None:
            factor = 1.0 / float(num_batches_tracked.item())
    elif momentum is None:
        factor = 0.0
    if name == "reference":
        return _reference_span(x, dw_weight, bn_weight, bn_bias, running_mean, running_var, w1, se_b1, w2, se_b2,
                               stride=stride, eps=eps, momentum=factor, training=training, act=act, gate=gate)
    y, mean, var = _backend_module(name).dw_bn_act_se(x, dw_weight, bn_weight, bn_bias, running_mean, running_var,
                                                      w1, se_b1, w2, se_b2, stride, float(eps), bool(training),
                                                      act, gate)
    if training:
        count = n * out_h * out_w
        with torch.no_grad():
            running_mean.lerp_(mean.detach().to(running_mean.dtype), factor)
            running_var.lerp_((var.detach() * (count / (count - 1))).to(running_var.dtype), factor)
    return y


def yinyang_fuse(a: torch.Tensor, i: torch.Tensor, formula: str = "add", *, backend: str = "auto") -> torch.Tensor:
    """The Yin/Yang fusion ``c1*A*I + c2*A + c3*I`` for one of the six named formulas.

    ``a`` is the Yang (colour) output, ``i`` the Yin (form) output: same shape, dtype, device.
    """
    if formula not in FUSIONS:
        raise ValueError(f"formula={formula!r} is not valid; allowed values: {', '.join(map(repr, FUSIONS))}")
    _check_tensor("a", a)
    _check_tensor("i", i, device=a.device)
    if a.shape != i.shape:
        raise ValueError(f"i must have the shape of a {tuple(a.shape)}, got {tuple(i.shape)}")
    if a.dtype != i.dtype:
        raise ValueError(f"i must have the dtype of a ({a.dtype}), got {i.dtype}")
    c1, c2, c3 = FUSIONS[formula]
    name = resolve_backend(backend, a.device)
    name = _self_checked(backend, name, "yinyang_fuse", a.device, a.dtype, True, (float(c1), float(c2), float(c3)))
    if name == "reference":
        return yinyang_fuse_reference(a, i, c1, c2, c3)
    return _backend_module(name).yinyang_fuse(a, i, c1, c2, c3)
