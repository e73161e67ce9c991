"""``backend="auto"`` checks a fused backend on a tiny problem before trusting it on a device.

The CUDA kernels and the Triton GPU code paths cannot run in CI (no GPU there), so the first time
``auto`` would run a fused backend on a GPU device for one (op, dtype, mode, act/gate/stride or
fusion formula), the op runs once on a tiny problem -- forward and backward -- on that device and
is compared with the reference functional on the same device, computed in float64. On a mismatch
or an error it warns once, naming the backend, the device and the error, and ``auto`` falls back
to the next available backend in ``yyfast.availability.AUTO_PREFERENCE`` (cuda -> triton ->
reference), itself checked the same way. The answer is cached per process.

Where it runs (``YYFAST_SELF_CHECK``):

* unset or ``1`` (default): GPU devices only. CPU tensors skip it at no cost: the C++ CPU twins
  (and the interpreted Triton kernels) are the code every CI run proves with ``tests/op_checks.py``,
  compiled by the same kind of host compiler a user's install uses, so a CPU check would only
  repeat CI at every process start;
* ``0``: never (e.g. for timing the first call, or once a GPU run has proven the kernels);
* ``all``: also CPU devices (how the tests prove the fallback, by injecting a fault).

The check runs eagerly outside any traced code: ``yyfast.ops`` calls it through a
``torch._dynamo.assume_constant_result`` function, so under ``torch.compile(fullgraph=True)`` it
runs once at trace time and the graph holds the chosen backend as a constant.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Dict, Optional, Tuple

import torch

from yyfast.kernels.output_spec import span_output_size

#: (backend, op, device, dtype, training, variant) -> the error text, or None when the check passed.
_RESULTS: Dict[Tuple, Optional[str]] = {}

#: Allowed |fused - reference| <= ATOL + RTOL * max|reference|, per dtype: a bug (a wrong tile,
#: a missed tap, a swapped stride) is O(1) relative; rounding is ~1e-6 (fp32), ~1e-3 (fp16),
#: ~1e-2 (bf16) relative, amplified a few times by BatchNorm's normalisation.
_TOL = {torch.float64: 1e-8, torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 8e-2}


def mode() -> str:
    """``"gpu"`` (default), ``"off"`` or ``"all"`` from ``YYFAST_SELF_CHECK``."""
    value = os.environ.get("YYFAST_SELF_CHECK", "1").strip().lower()
    if value in ("0", "off", "false", "no"):
        return "off"
    if value == "all":
        return "all"
    return "gpu"


def applies(device: torch.device) -> bool:
    m = mode()
    return m == "all" or (m == "gpu" and device.type != "cpu")


def reset() -> None:
    """Forget every cached result (tests)."""
    _RESULTS.clear()


@contextlib.contextmanager
def _eager():
    """Real tensors and autograd even when called from inside a torch.compile trace."""
    try:
        from torch._subclasses.fake_tensor import unset_fake_temporarily
    except ImportError:  # pragma: no cover - older torch
        unset_fake_temporarily = contextlib.nullcontext
    # inference_mode(False): under inference mode, enable_grad alone still makes inference tensors,
    # which autograd refuses, and the check would fail a correct backend.
    with unset_fake_temporarily(), torch.inference_mode(False), torch.enable_grad():
        yield


def _close(name: str, got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    got = got.detach().to(torch.float64)
    want = want.detach().to(torch.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    tol = _TOL[dtype]
    err = (got - want).abs().max().item() if got.numel() else 0.0
    scale = want.abs().max().item() if want.numel() else 0.0
    if not (err <= tol * (1.0 + scale)):  # also catches NaN
        raise AssertionError(f"{name} differs from the reference by {err:.3g} (allowed {tol * (1.0 + scale):.3g})")


def _span_problem(device, dtype, stride, act, gate, training, module):
    """Run one backend's span op and the float64 reference on the same tiny inputs (rounded to
    ``dtype``); compare y and every gradient. 2 images, 24 channels, 9x9, channels_last: odd sizes
    give partial tiles and every border case."""
    from .ops.composed import dw_bn_act_se_reference

    g = torch.Generator(device="cpu").manual_seed(0)
    n, c, h, w, hidden = 2, 24, 9, 9, 6

    def rnd(*shape, scale=1.0, offset=0.0):
        return torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset

    base = [rnd(n, c, h, w), rnd(c, 1, 3, 3, scale=0.3), rnd(c, scale=0.2, offset=1.0), rnd(c, scale=0.2),
            rnd(c, scale=0.1), rnd(c, scale=0.1).abs() + 0.5, rnd(hidden, c, scale=0.3), rnd(hidden, scale=0.1),
            rnd(c, hidden, scale=0.3), rnd(c, scale=0.1)]
    ho, wo = span_output_size(h, w, stride)
    gy = rnd(n, c, ho, wo).to(dtype).contiguous(memory_format=torch.channels_last)
    grads = (0, 1, 2, 3, 6, 7, 8, 9)  # x, dw, gamma, beta, SE weights and biases

    def inputs(dt, dev):
        t = [b.to(dtype).to(dev, dt) for b in base]
        t[0] = t[0].contiguous(memory_format=torch.channels_last)
        return t, [t[k].requires_grad_() for k in grads]

    t, leaves = inputs(dtype, device)
    y = module.dw_bn_act_se(*t, stride, 1e-5, training, act, gate)[0]
    gs = torch.autograd.grad(y, leaves, gy.to(device))
    t, leaves = inputs(torch.float64, device)
    ry = dw_bn_act_se_reference(*t, stride=stride, eps=1e-5, momentum=0.0, training=training, act=act, gate=gate)
    rgs = torch.autograd.grad(ry, leaves, gy.to(device, torch.float64))
    _close("y", y, ry, dtype)
    for k, a, b in zip(grads, gs, rgs):
        _close(f"grad of input {k}", a, b, dtype)


def _fuse_problem(device, dtype, c1, c2, c3, module):
    from .ops.composed import yinyang_fuse_reference

    g = torch.Generator(device="cpu").manual_seed(0)
    a64, i64, g64 = (torch.randn((2, 5, 7, 9), generator=g, dtype=torch.float64).to(device) for _ in range(3))
    a, i = (t.to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_() for t in (a64, i64))
    out = module.yinyang_fuse(a, i, c1, c2, c3)
    ga, gi = torch.autograd.grad(out, (a, i), g64.to(dtype))
    ra, ri = (t.detach().to(torch.float64).requires_grad_() for t in (a, i))
    rout = yinyang_fuse_reference(ra, ri, c1, c2, c3)
    rga, rgi = torch.autograd.grad(rout, (ra, ri), g64.to(dtype).to(torch.float64))
    for name, got, want in (("out", out, rout), ("grad_a", ga, rga), ("grad_i", gi, rgi)):
        _close(name, got, want, dtype)


def _run_check(backend: str, op: str, device: torch.device, dtype: torch.dtype, training: bool,
               variant: Tuple) -> Optional[str]:
    """None when ``backend`` matches the reference on the tiny problem, else the error text."""
    from . import ops

    module = ops._backend_module(backend)
    try:
        with _eager():
            if op == "dw_bn_act_se":
                stride, act, gate = variant
                _span_problem(device, dtype, stride, act, gate, training, module)
            else:
                _fuse_problem(device, dtype, *variant, module)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # an asynchronous launch error surfaces here
    except Exception as exc:  # a launch error, a compile error, a mismatch: all mean "do not use"
        return f"{type(exc).__name__}: {exc}".strip()[:500]
    return None


def checked_backend(first: str, candidates, op: str, device: str, dtype: str, training: bool,
                    variant: Tuple) -> str:
    """``first`` if it passes its check on ``device``, else the next candidate that does, else
    ``"reference"``; warns once for each backend that fails."""
    dev = torch.device(device)
    if not applies(dev):
        return first
    dt = getattr(torch, dtype.replace("torch.", ""))
    order = list(candidates)
    for name in order[order.index(first):] if first in order else [first]:
        if name == "reference":
            return name
        key = (name, op, str(dev), dtype, bool(training), tuple(variant))
        if key not in _RESULTS and dev.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return name  # cannot synchronise inside a CUDA-graph capture (the warm-up runs checked it)
        if key not in _RESULTS:
            error = _run_check(name, op, dev, dt, training, tuple(variant))
            _RESULTS[key] = error
            if error is not None:
                rest = [b for b in order[order.index(name) + 1:]] or ["reference"]
                warnings.warn(
                    f"yyfast: backend {name!r} failed its self-check on {dev} for {op} ({dtype}, "
                    f"{'train' if training else 'eval'}, {variant}): {error}; backend='auto' falls back to "
                    f"{rest[0]!r}. Set YYFAST_SELF_CHECK=0 to skip the check.", RuntimeWarning, stacklevel=2)
        if _RESULTS[key] is None:
            return name
    return "reference"
