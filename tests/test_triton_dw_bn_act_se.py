"""The Triton dw_bn_act_se op (backend "triton"): Triton's interpreter on CPU tensors, kernels on a GPU.

Held to the shared proofs of ``op_checks`` against the float64 reference (output, all eight
gradients, running statistics, poisoned allocations, memory format). On the CPU a covering set of
cases (every awkward shape, both strides, acts, gates, modes and memory formats, plus small tiles
that force the multi-tile and multi-channel-block reductions); on a GPU the full product. Plus
``opcheck`` on both custom ops and ``torch.compile(fullgraph=True)`` of the public op.
"""
import itertools

import pytest
import torch

import yyfast
from conftest import DEVICES
from op_checks import AWKWARD_SHAPES, SpanCase, check_compiled_matches_eager, check_dw_bn_act_se, span_inputs

pytest.importorskip("triton", reason="Triton is not installed: the Triton backend does not exist here")
from yyfast.kernels import dw_bn_act_se as span_kernels  # noqa: E402  (after the skip: needs Triton)
from yyfast.ops import triton_ops  # noqa: E402

CUDA = [d for d in DEVICES if getattr(d, "values", [d])[0] == "cuda"]


def _out_hw(shape, stride):
    _, _, h, w = shape
    return (h - 1) // stride + 1, (w - 1) // stride + 1


def _fp32_ill_conditioned(case: SpanCase):
    """Training cases whose exact gradient is itself O(eps/var) of its terms, so no float32 kernel can
    meet a relative tolerance on it: with two values per channel BN's output is +-gamma*sqrt(var/(var+eps))
    whatever x is (grad_x ~ 0); with a 1x1 input only the centre tap sees x and BN is invariant to its
    scale (grad_dw_weight ~ 0). The reference backend in float32 fails these the same way."""
    if not case.training:
        return None
    n, _, h, w = case.shape
    ho, wo = _out_hw(case.shape, case.stride)
    if n * ho * wo == 2:
        return "two values per channel: the exact grad_x is O(eps), below float32 resolution"
    if h == 1 and w == 1:
        return "1x1 input: the exact grad_dw_weight is O(eps), below float32 resolution"
    return None


def _id(case: SpanCase) -> str:
    return (f"{'x'.join(map(str, case.shape))}-s{case.stride}-{case.act}-{case.gate}-"
            f"{'train' if case.training else 'eval'}-{'cl' if case.channels_last else 'nchw'}")


# A covering set for the interpreter: every awkward shape, both strides, both acts and gates, train
# and eval, NCHW and channels_last each appear several times (the full product runs on a GPU).
CPU_CASES = [
    SpanCase((1, 3, 7, 9), 1, "gelu", "sigmoid", True, False),
    SpanCase((1, 3, 7, 9), 2, "silu", "hardsigmoid", True, True),
    SpanCase((1, 3, 7, 9), 2, "gelu", "hardsigmoid", False, False),
    SpanCase((2, 37, 33, 33), 1, "gelu", "hardsigmoid", True, True),
    SpanCase((2, 37, 33, 33), 2, "silu", "sigmoid", False, False),
    SpanCase((1, 5, 1, 1), 1, "gelu", "sigmoid", False, True),
    SpanCase((1, 5, 1, 1), 2, "silu", "hardsigmoid", False, False),
    SpanCase((3, 16, 1, 1), 1, "silu", "sigmoid", False, True),
    SpanCase((2, 8, 4, 6), 2, "gelu", "sigmoid", True, True),
    SpanCase((2, 8, 4, 6), 1, "silu", "hardsigmoid", False, True),
    SpanCase((2, 8, 4, 6), 1, "gelu", "sigmoid", True, False, momentum=None),
    SpanCase((1, 12, 2, 3), 1, "silu", "sigmoid", True, True),
    SpanCase((1, 12, 2, 3), 2, "gelu", "hardsigmoid", False, False),
]
assert {c.shape for c in CPU_CASES} == set(AWKWARD_SHAPES)
assert not any(_fp32_ill_conditioned(c) for c in CPU_CASES)

CPU_HALF_CASES = [
    SpanCase((2, 37, 33, 33), 2, "gelu", "sigmoid", True, True),
    SpanCase((1, 3, 7, 9), 1, "silu", "hardsigmoid", False, False),
    SpanCase((2, 8, 4, 6), 1, "silu", "sigmoid", True, False),
]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5)])
@pytest.mark.parametrize("case", CPU_CASES, ids=_id)
def test_cpu_float32(case, dtype, tol):
    check_dw_bn_act_se("triton", "cpu", dtype, case, tol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2)])
@pytest.mark.parametrize("case", CPU_HALF_CASES, ids=_id)
def test_cpu_float16(case, dtype, tol):
    check_dw_bn_act_se("triton", "cpu", dtype, case, tol=tol)


@pytest.mark.parametrize("case", CPU_HALF_CASES[:2], ids=_id)
def test_cpu_mixed_precision(case):
    """float16 activations meet float32 parameters (autocast-style); each grad in its tensor's dtype."""
    check_dw_bn_act_se("triton", "cpu", torch.float16, case, param_dtype=torch.float32, tol=1e-2)


@pytest.mark.parametrize("case", [SpanCase((2, 37, 9, 11), 1, "gelu", "sigmoid", True, True),
                                  SpanCase((3, 37, 7, 9), 2, "silu", "hardsigmoid", True, False)], ids=_id)
def test_cpu_small_tiles(case):
    """Tiles of 32 pixels x 32 channels: several tiles per image and two channel blocks, so the
    two-stage reductions (Chan's combination, SE pool rows, weight-gradient rows) really combine."""
    with span_kernels.forced_blocks(32, 32):
        check_dw_bn_act_se("triton", "cpu", torch.float32, case, tol=1e-5)


# ------------------------------------------------------------------------------------- GPU

def _gpu_cases():
    out = []
    for shape, stride, (act, gate), training, cl in itertools.product(
            AWKWARD_SHAPES + [(4, 300, 17, 130)], (1, 2), [("gelu", "sigmoid"), ("silu", "hardsigmoid"),
                                                          ("gelu", "hardsigmoid"), ("silu", "sigmoid")],
            (True, False), (False, True)):
        ho, wo = _out_hw(shape, stride)
        if training and shape[0] * ho * wo < 2:
            continue  # the public op rejects it (one value per channel), like nn.BatchNorm2d
        out.append(SpanCase(shape, stride, act, gate, training, cl))
    return out


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 1e-2), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("case", _gpu_cases(), ids=_id)
def test_gpu(device, dtype, tol, case):
    # float32 allows 1e-4: docs/kernels.md's bound when the reference may use TF32 (the SE matmuls).
    if dtype == torch.float32 and _fp32_ill_conditioned(case):
        pytest.skip(_fp32_ill_conditioned(case))
    param_dtype = torch.float32 if dtype != torch.float32 else None
    check_dw_bn_act_se("triton", device, dtype, case, param_dtype=param_dtype, tol=tol)


# ------------------------------------------------------------------------------------- contract

def _op_args(n=2, c=6, h=5, w=7, stride=2, training=True, channels_last=False, device="cpu"):
    t = {k: v.float().to(device) for k, v in span_inputs(n, c, h, w).items()}
    if channels_last:
        t["x"] = t["x"].contiguous(memory_format=torch.channels_last)
    for k in ("x", "dw_weight", "bn_weight", "bn_bias", "se_w1", "se_b1", "se_w2", "se_b2"):
        t[k].requires_grad_(True)
    return (*t.values(), stride, 1e-5, training, "gelu", "sigmoid")


@pytest.mark.parametrize("device,training,channels_last,stride",
                         [("cpu", True, True, 2)] + [pytest.param(*d.values, *m, marks=d.marks) for d in CUDA
                                                     for m in ((True, False, 2), (False, True, 1))])
def test_opcheck_forward(device, training, channels_last, stride):
    torch.library.opcheck(torch.ops.yyfast.dw_bn_act_se_triton.default,
                          _op_args(stride=stride, training=training, channels_last=channels_last, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_backward(device):
    args = _op_args(training=True, channels_last=True, device=device)
    with torch.no_grad():
        y, mean, var, pooled = torch.ops.yyfast.dw_bn_act_se_triton(*args)
    x, w, g, b, _rm, _rv, w1, b1, w2, b2, stride, eps, training, act, gate = args
    params = [t.detach() for t in (x, w, g, b)] + [mean, var, pooled] + [t.detach() for t in (w1, b1, w2, b2)]
    torch.library.opcheck(torch.ops.yyfast.dw_bn_act_se_triton_backward.default,
                          (torch.randn_like(y), *params, stride, eps, training, act, gate))


def test_eval_stats_are_float32_copies():
    """mean/var are float32; in eval they are the running statistics, copied (never aliased)."""
    args = list(_op_args(training=False))
    args[0] = args[0].detach().half()
    y, mean, var = triton_ops.dw_bn_act_se(*args)
    assert y.dtype == torch.float16 and mean.dtype == torch.float32 and var.dtype == torch.float32
    torch.testing.assert_close(mean, args[4])
    torch.testing.assert_close(var, args[5])
    assert mean.data_ptr() != args[4].data_ptr(), "eval mean must be a copy, never an alias of running_mean"


def test_training_stats_are_batch_mean_and_biased_var():
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in _op_args(training=True)]
    _, mean, var = triton_ops.dw_bn_act_se(*args)
    z = torch.nn.functional.conv2d(args[0].double(), args[1].double(), None, args[10], 1, 1, args[0].shape[1])
    torch.testing.assert_close(mean.double(), z.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var.double(), z.var(dim=(0, 2, 3), unbiased=False), rtol=1e-5, atol=1e-6)


def test_variance_keeps_precision_with_a_large_mean():
    """|mean| = 1000 std: E[z^2]-E[z]^2 in float32 would lose every digit; Chan's combination keeps them."""
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in _op_args(n=3, c=5, h=9, w=8, stride=1)]
    args[0] = args[0] * 0.01 + 10.0  # mean ~10, std ~0.015
    args[1] = torch.zeros_like(args[1])
    args[1][:, :, 1, 1] = 1.0  # centre tap only: z = x exactly
    with span_kernels.forced_blocks(32, 8):
        _, _, var = triton_ops.dw_bn_act_se(*args)
    z = torch.nn.functional.conv2d(args[0].double(), args[1].double(), None, 1, 1, 1, 5)
    torch.testing.assert_close(var.double(), z.var(dim=(0, 2, 3), unbiased=False), rtol=1e-3, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    """The public op, with its running-stat update, compiles as one graph and matches eager."""
    inputs = {k: v.float().to(device) for k, v in span_inputs(2, 6, 5, 7).items()}

    def step(x, w, g, b, rm, rv, w1, b1, w2, b2):
        y = yyfast.ops.dw_bn_act_se(x, w, g, b, rm, rv, w1, b1, w2, b2, stride=2, training=True, act="silu",
                                    gate="hardsigmoid", backend="triton")
        return (y * y).sum()

    # aot_eager on the CPU: the point is one graph through the custom op and its autograd, and
    # Inductor's C++ compile would cost CI tens of seconds without adding to that.
    check_compiled_matches_eager(step, inputs, "aot_eager" if device == "cpu" else "inductor")


def test_torch_compile_fullgraph_custom_op():
    """The backend entry point alone (custom op + autograd, no running-stat update) in one graph."""
    inputs = {k: v.float() for k, v in span_inputs(2, 6, 5, 7).items()}

    def step(*t):
        y, mean, var = triton_ops.dw_bn_act_se(*t, 1, 1e-5, True, "gelu", "sigmoid")
        return (y * y).sum() + mean.sum() + var.sum()

    def run(fn):
        leaves = [v.clone().requires_grad_(k not in ("running_mean", "running_var")) for k, v in inputs.items()]
        loss = fn(*leaves)
        loss.backward()
        return loss.detach(), [t.grad for t in leaves]

    torch._dynamo.reset()
    loss_c, got = run(torch.compile(step, fullgraph=True, backend="aot_eager"))
    loss_e, want = run(step)
    torch.testing.assert_close(loss_c, loss_e)
    for g, w in zip(got, want):
        if w is not None:
            torch.testing.assert_close(g, w)


def test_strided_input_view():
    """A non-dense view (every other column) is read through its strides, not copied or misread."""
    inputs = {k: v.float() for k, v in span_inputs(2, 5, 6, 14).items()}
    x = inputs.pop("x")[..., ::2]
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    rm, rv = inputs["running_mean"], inputs["running_var"]
    args = [inputs[k] for k in ("dw_weight", "bn_weight", "bn_bias")] + [rm, rv] + \
        [inputs[k] for k in ("se_w1", "se_b1", "se_w2", "se_b2")]
    y, _, _ = triton_ops.dw_bn_act_se(x, *args, 2, 1e-5, True, "silu", "sigmoid")
    want = yyfast.ops.dw_bn_act_se_reference(x.double(), *[a.double() for a in args], stride=2, training=True,
                                             act="silu", gate="sigmoid")
    assert ((y.double() - want).norm() / want.norm()).item() < 1e-5
