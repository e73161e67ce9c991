"""Backend-agnostic proofs of the fused ops against the float64 reference.

Every test of a kernel backend (Triton, CUDA/C++) calls these, with its backend name and a
device, so both backends are held to exactly the same checks:

* fresh random inputs on every call (never zeros or ones), awkward shapes;
* the reference is ``yyfast.ops`` with ``backend="reference"`` run in float64 on the CPU;
* ``||out - ref|| / ||ref||`` under the dtype's tolerance for the output, the gradient of every
  input, and the running statistics after the call; NaN never passes;
* every allocation made during the call is poisoned with NaN (``poisoned_allocations``), so an
  output element the kernel forgets to write fails the comparison;
* the output keeps the input's memory format.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

import yyfast
from helpers import rel_err

#: (dtype, tolerance on ||out-ref||/||ref||) per docs/kernels.md: float32 well under 1e-5, half types 1e-2.
TOLERANCES = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float64: 1e-10}

#: Shapes (N, C, H, W) with nothing a power of two where it can be avoided. (1, 5, 1, 1) is eval-only
#: (one value per channel: training raises, like nn.BatchNorm2d). In float32 training two are
#: ill-conditioned by nature and proven in float64 or eval instead: with two values per channel
#: ((1, 12, 2, 3) at stride 2) BN's output is +-1 whatever the input, so the exact grad_x is O(eps);
#: with a 1x1 input BN undoes the scale of the only tap that matters, so grad_dw_weight is O(eps).
AWKWARD_SHAPES = [(1, 3, 7, 9), (2, 37, 33, 33), (1, 5, 1, 1), (3, 16, 1, 1), (2, 8, 4, 6), (1, 12, 2, 3)]


@contextlib.contextmanager
def poisoned_allocations():
    """Make every ``torch.empty`` (Python or C++) inside the block return NaN-filled memory."""
    from torch.utils import deterministic

    prev_enabled = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        deterministic.fill_uninitialized_memory = prev_fill
        torch.use_deterministic_algorithms(prev_enabled, warn_only=prev_warn)


def _rand(*shape, lo=-1.0, hi=1.0, gen=None):
    return torch.rand(*shape, dtype=torch.float64, generator=gen) * (hi - lo) + lo


@dataclass
class SpanCase:
    shape: Tuple[int, int, int, int]
    stride: int = 1
    act: str = "gelu"
    gate: str = "sigmoid"
    training: bool = True
    channels_last: bool = False
    momentum: Optional[float] = 0.1


def span_inputs(n: int, c: int, h: int, w: int) -> Dict[str, torch.Tensor]:
    """Fresh float64 CPU inputs for dw_bn_act_se: random weights and plausible BN statistics."""
    hidden = max(1, c // 4)
    return {
        "x": torch.randn(n, c, h, w, dtype=torch.float64) * 1.5 + 0.3,
        "dw_weight": _rand(c, 1, 3, 3, lo=-0.6, hi=0.6),
        "bn_weight": _rand(c, lo=0.5, hi=1.5),
        "bn_bias": _rand(c, lo=-0.5, hi=0.5),
        "running_mean": _rand(c, lo=-0.3, hi=0.3),
        "running_var": _rand(c, lo=0.5, hi=2.0),
        "se_w1": _rand(hidden, c, lo=-0.8, hi=0.8),
        "se_b1": _rand(hidden, lo=-0.3, hi=0.3),
        "se_w2": _rand(c, hidden, lo=-0.8, hi=0.8),
        "se_b2": _rand(c, lo=-0.3, hi=0.3),
    }


DIFFERENTIABLE = ("x", "dw_weight", "bn_weight", "bn_bias", "se_w1", "se_b1", "se_w2", "se_b2")


def _run_span(inputs, case: SpanCase, backend: str, grad_out: torch.Tensor):
    leaves = {k: (v.detach().clone().requires_grad_(True) if k in DIFFERENTIABLE else v.detach().clone())
              for k, v in inputs.items()}
    x = leaves["x"]
    nbt = torch.zeros((), dtype=torch.long, device=x.device)
    y = yyfast.ops.dw_bn_act_se(
        x, leaves["dw_weight"], leaves["bn_weight"], leaves["bn_bias"], leaves["running_mean"], leaves["running_var"],
        leaves["se_w1"], leaves["se_b1"], leaves["se_w2"], leaves["se_b2"], stride=case.stride, eps=1e-5,
        momentum=case.momentum, training=case.training, act=case.act, gate=case.gate, num_batches_tracked=nbt,
        backend=backend)
    y.backward(grad_out.to(y.dtype))
    grads = {k: leaves[k].grad for k in DIFFERENTIABLE}
    return y, grads, leaves["running_mean"], leaves["running_var"], nbt


def check_dw_bn_act_se(backend: str, device: str, dtype: torch.dtype, case: SpanCase,
                       param_dtype: Optional[torch.dtype] = None, tol: Optional[float] = None) -> Dict[str, float]:
    """Prove ``dw_bn_act_se`` on ``backend``/``device`` against the float64 reference.

    ``x`` (and the output gradient) are cast to ``dtype``; the parameters to ``param_dtype``
    (default: ``dtype``; pass ``torch.float32`` to model mixed precision, where a bf16 activation
    meets fp32 weights). Returns the relative errors it measured.
    """
    tol = tol if tol is not None else TOLERANCES[dtype]
    param_dtype = param_dtype or dtype
    n, c, h, w = case.shape
    ref_in = span_inputs(n, c, h, w)
    # Round the inputs to the test dtype first, so the reference sees exactly what the kernel sees.
    ref_in["x"] = ref_in["x"].to(dtype).double()
    for k in ref_in:
        if k != "x":
            ref_in[k] = ref_in[k].to(param_dtype).double()
    ho, wo = (h - 1) // case.stride + 1, (w - 1) // case.stride + 1
    grad_out = torch.randn(n, c, ho, wo, dtype=torch.float64).to(dtype).double()

    y_ref, g_ref, rm_ref, rv_ref, nbt_ref = _run_span(ref_in, case, "reference", grad_out)

    dev_in = {k: v.to(device=device, dtype=(dtype if k == "x" else param_dtype)) for k, v in ref_in.items()}
    # Running statistics stay float32 on the device, as in nn.BatchNorm2d under mixed precision.
    for k in ("running_mean", "running_var"):
        dev_in[k] = ref_in[k].to(device=device, dtype=torch.float32 if param_dtype != torch.float64 else torch.float64)
    if case.channels_last:
        dev_in["x"] = dev_in["x"].contiguous(memory_format=torch.channels_last)
    g_dev = grad_out.to(device=device, dtype=dtype)
    if case.channels_last:
        g_dev = g_dev.contiguous(memory_format=torch.channels_last)
    with poisoned_allocations():
        y, grads, rm, rv, nbt = _run_span(dev_in, case, backend, g_dev)

    errors = {"y": rel_err(y, y_ref)}
    assert y.dtype == dtype, f"output dtype {y.dtype} != input dtype {dtype}"
    assert y.shape == y_ref.shape, f"output shape {tuple(y.shape)} != {tuple(y_ref.shape)}"
    if case.channels_last and min(c, ho * wo) > 1:
        assert y.is_contiguous(memory_format=torch.channels_last), "output lost the channels_last format"
    for k in DIFFERENTIABLE:
        assert grads[k] is not None, f"no gradient for {k}"
        assert grads[k].shape == dev_in[k].shape, f"grad {k} shape {tuple(grads[k].shape)}"
        errors[f"grad_{k}"] = rel_err(grads[k], g_ref[k])
    errors["running_mean"] = rel_err(rm, rm_ref)
    errors["running_var"] = rel_err(rv, rv_ref)
    assert int(nbt) == int(nbt_ref), f"num_batches_tracked {int(nbt)} != {int(nbt_ref)}"
    for k, err in errors.items():
        assert err < tol, f"{backend}/{device}/{dtype} {case}: {k} relative error {err:.3e} >= {tol:.1e}"
    return errors


def check_yinyang_fuse(backend: str, device: str, dtype: torch.dtype, shape, formula: str,
                       channels_last: bool = False, tol: Optional[float] = None) -> Dict[str, float]:
    """Prove ``yinyang_fuse`` (output and both gradients) against the float64 reference."""
    tol = tol if tol is not None else TOLERANCES[dtype]
    a64 = (torch.randn(*shape, dtype=torch.float64) + 0.2).to(dtype).double()
    i64 = (torch.rand(*shape, dtype=torch.float64) * 2 - 0.5).to(dtype).double()
    g64 = torch.randn(*shape, dtype=torch.float64).to(dtype).double()

    def run(a, i, g, be):
        a = a.detach().clone().requires_grad_(True)
        i = i.detach().clone().requires_grad_(True)
        out = yyfast.ops.yinyang_fuse(a, i, formula, backend=be)
        out.backward(g)
        return out, a.grad, i.grad

    ref = run(a64, i64, g64, "reference")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    a, i, g = (t.to(device=device, dtype=dtype).contiguous(memory_format=fmt) for t in (a64, i64, g64))
    with poisoned_allocations():
        got = run(a, i, g, backend)
    assert got[0].dtype == dtype and got[0].shape == a.shape
    if channels_last and len(shape) == 4:
        assert got[0].is_contiguous(memory_format=torch.channels_last), "output lost the channels_last format"
    errors = {name: rel_err(x, r) for name, x, r in zip(("out", "grad_a", "grad_i"), got, ref)}
    for k, err in errors.items():
        assert err < tol, f"{backend}/{device}/{dtype} {formula} {shape}: {k} relative error {err:.3e} >= {tol:.1e}"
    return errors


def check_compiled_matches_eager(step, inputs: Dict[str, torch.Tensor], compile_backend: str) -> None:
    """``torch.compile(step, fullgraph=True)`` runs as one graph and matches eager ``step``.

    ``step(x, dw_weight, ..., se_b2)`` returns a scalar loss; compares the loss, every input
    gradient and the running statistics (updated in place inside ``step``) after one backward.
    """
    def run(fn):
        leaves = {k: (v.clone().requires_grad_(True) if k not in ("running_mean", "running_var") else v.clone())
                  for k, v in inputs.items()}
        loss = fn(*leaves.values())
        loss.backward()
        return loss.detach(), leaves

    torch._dynamo.reset()
    loss_c, got = run(torch.compile(step, fullgraph=True, backend=compile_backend))
    loss_e, want = run(step)
    torch.testing.assert_close(loss_c, loss_e)
    for k in want:
        if want[k].grad is not None:
            torch.testing.assert_close(got[k].grad, want[k].grad)
    torch.testing.assert_close(got["running_mean"], want["running_mean"])
    torch.testing.assert_close(got["running_var"], want["running_var"])


def check_model_step(backend: str, device: str = "cpu", tol: float = 1e-4, batch: int = 4, **options) -> None:
    """One training step of ``yynet_small_16`` on ``backend`` matches the reference step.

    Same weights and input; compares the logits, the loss, every parameter's gradient, every
    BatchNorm running statistic, and the parameters after one optimizer step, then the eval logits.
    The reference runs in float64 on the CPU; the backend in float32 on ``device``.

    Two things make a naive comparison ill-posed, for every float32 backend (the reference too):
    the biases of convolutions that feed a BatchNorm (``conv1.bias``, ``conv2.bias``, ``bn_in.bias``)
    have an exact gradient of 0 (float64 gives ~1e-16, float32 ~1e-9), so their gradients are held
    to an absolute bound relative to the whole gradient instead; and AdamW's first step is
    ``lr * sign(grad)`` per element, which flips at random where a gradient is ~0, so the step is SGD
    with momentum and weight decay.
    """
    ref = yyfast.create_model("yynet_small_16", backend="reference", **options).double()
    with torch.no_grad():  # trained-like BN statistics instead of the (0, 1) defaults
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    net = yyfast.create_model("yynet_small_16", backend=backend, **options)
    net.load_state_dict(ref.state_dict())
    net = net.to(device=device, dtype=torch.float32)
    x = torch.randn(batch, 3, 32, 32, dtype=torch.float64)
    target = torch.randint(0, 10, (batch,))
    ref.train()
    net.train()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    opt_net = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    out_ref = ref(x)
    loss_ref = torch.nn.functional.cross_entropy(out_ref, target)
    loss_ref.backward()
    out = net(x.to(device=device, dtype=torch.float32))
    loss = torch.nn.functional.cross_entropy(out, target.to(device))
    loss.backward()
    assert rel_err(out, out_ref) < tol, f"logits differ: {rel_err(out, out_ref):.3e}"
    assert abs(loss.item() - loss_ref.item()) < tol * max(1.0, abs(loss_ref.item()))
    ref_params = dict(ref.named_parameters())
    total = torch.sqrt(sum(p.grad.norm() ** 2 for p in ref.parameters())).item()
    zero_grad = {n for n, p in ref_params.items() if p.grad.norm().item() < 1e-8 * total}
    for name, p in net.named_parameters():
        if name in zero_grad:
            assert p.grad.norm().item() < 1e-5 * total, f"grad {name} should be ~0, got {p.grad.norm().item():.3e}"
            continue
        err = rel_err(p.grad, ref_params[name].grad)
        assert err < 10 * tol, f"grad {name}: relative error {err:.3e}"
    ref_buffers = dict(ref.named_buffers())
    for name, b in net.named_buffers():
        if b.is_floating_point():
            assert rel_err(b, ref_buffers[name]) < tol, f"buffer {name}: {rel_err(b, ref_buffers[name]):.3e}"
        else:
            assert torch.equal(b.cpu(), ref_buffers[name]), f"buffer {name} differs"
    opt_ref.step()
    opt_net.step()
    for name, p in net.named_parameters():
        if name in zero_grad:  # moved by lr * (gradient noise) only: the same absolute bound, times lr
            diff = (p.detach().double().cpu() - ref_params[name].detach()).norm().item()
            assert diff < 0.1 * 1e-5 * total, f"param {name} after step moved {diff:.3e}"
            continue
        assert rel_err(p, ref_params[name]) < tol, f"param {name} after step: {rel_err(p, ref_params[name]):.3e}"
    ref.eval()
    net.eval()
    with torch.no_grad():
        xe = torch.randn(batch, 3, 32, 32, dtype=torch.float64)
        err = rel_err(net(xe.to(device=device, dtype=torch.float32)), ref(xe))
    assert err < tol, f"eval logits differ after the step: {err:.3e}"
