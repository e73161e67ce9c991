"""The ``yyfast._C`` dw_bn_act_se op (backend "cuda"): C++ CPU twin on every run, CUDA kernels on a GPU.

Held to the shared proofs of ``op_checks`` against the float64 reference; plus ``opcheck`` on both
ops (schema, fake, autograd registration, AOT dispatch), ``torch.compile(fullgraph=True)`` of the
public op, and the argument checks.
"""
import itertools

import pytest
import torch

import yyfast
from conftest import DEVICES
from op_checks import AWKWARD_SHAPES, SpanCase, check_compiled_matches_eager, check_dw_bn_act_se, span_inputs

pytest.importorskip("yyfast._C", reason="the yyfast._C extension is not built (pip install -e . --no-build-isolation)")
import yyfast._C  # noqa: E402
from yyfast.ops import cuda_ops  # noqa: E402  (after the skip: needs the extension)

COMBOS = [("gelu", "sigmoid"), ("silu", "hardsigmoid"), ("gelu", "hardsigmoid"), ("silu", "sigmoid")]


def _out_hw(shape, stride):
    n, c, h, w = shape
    return (h - 1) // stride + 1, (w - 1) // stride + 1


def _trainable(shape, stride):
    ho, wo = _out_hw(shape, stride)
    return shape[0] * ho * wo > 1


def _fp32_ill_conditioned(case: SpanCase):
    """Training cases whose exact gradient is itself O(eps/var) of its terms, so a float32 kernel
    cannot meet a relative tolerance on it (float64 covers them): with only two values per channel
    BN's output is +-gamma*sqrt(var/(var+eps)) whatever x is (grad_x ~ 0); with a 1x1 input only the
    centre tap sees x and BN is invariant to its scale (grad_dw_weight ~ 0)."""
    if not case.training:
        return None
    n, c, h, w = case.shape
    ho, wo = _out_hw(case.shape, case.stride)
    if n * ho * wo == 2:
        return "two values per channel: the exact grad_x is O(eps) (float64 proves this case)"
    if h == 1 and w == 1:
        return "1x1 input: the exact grad_dw_weight is O(eps) (float64 proves this case)"
    return None


def _cases(dtype_tag):
    """Every awkward shape x train/eval x stride x memory format; act/gate rotate over the four combos."""
    out = []
    for k, (shape, training, stride, cl) in enumerate(itertools.product(AWKWARD_SHAPES, (True, False), (1, 2),
                                                                         (False, True))):
        if training and not _trainable(shape, stride):
            continue  # covered by test_training_needs_two_values
        if dtype_tag == "f64" and cl and not training:
            continue  # keeps the float64 sweep (the slow reference twice) within the test budget
        act, gate = COMBOS[(k + (dtype_tag == "f64")) % len(COMBOS)]
        case = SpanCase(shape, stride, act, gate, training, cl)
        out.append(pytest.param(case, id=f"{shape}-s{stride}-{'train' if training else 'eval'}-"
                                         f"{'cl' if cl else 'nchw'}-{act}-{gate}"))
    return out


@pytest.mark.parametrize("case", _cases("f32"))
def test_cpu_float32(case):
    reason = _fp32_ill_conditioned(case)
    if reason:
        pytest.skip(reason)
    check_dw_bn_act_se("cuda", "cpu", torch.float32, case)


@pytest.mark.parametrize("case", _cases("f64"))
def test_cpu_float64(case):
    check_dw_bn_act_se("cuda", "cpu", torch.float64, case)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", [SpanCase((2, 37, 33, 33), 1, "gelu", "sigmoid", True, True),
                                  SpanCase((2, 8, 4, 6), 2, "silu", "hardsigmoid", False, False)],
                         ids=["train-cl", "eval-nchw"])
def test_cpu_half_types(case, dtype):
    """Half-precision activations with float32 parameters (mixed precision), float32 accumulation."""
    check_dw_bn_act_se("cuda", "cpu", dtype, case, param_dtype=torch.float32)


ISA_CASES = [SpanCase((2, 37, 33, 33), 1, "gelu", "sigmoid", True, True),      # 4 vectors + a 5-channel tail
             SpanCase((2, 37, 33, 33), 2, "silu", "hardsigmoid", False, False),
             SpanCase((1, 12, 2, 3), 1, "silu", "sigmoid", True, False),          # border taps only
             SpanCase((3, 16, 1, 1), 2, "gelu", "hardsigmoid", False, True)]


@pytest.fixture(params=yyfast._C.cpu_isas())
def cpu_isa(request):
    """Each instruction set the C++ CPU span kernels were built for and this CPU runs (the dispatcher
    picks the best one; the others are proved too, as a CPU without AVX2 would run them)."""
    prev = yyfast._C.cpu_isa()
    yyfast._C.set_cpu_isa(request.param)
    yield request.param
    yyfast._C.set_cpu_isa(prev)


@pytest.mark.parametrize("case", ISA_CASES, ids=lambda c: f"{c.shape}-s{c.stride}-{c.act}-"
                                                         f"{'train' if c.training else 'eval'}")
def test_cpu_float32_each_isa(cpu_isa, case):
    assert yyfast._C.cpu_isa() == cpu_isa
    check_dw_bn_act_se("cuda", "cpu", torch.float32, case)


def test_cpu_isa_switch_rejects_unknown():
    with pytest.raises(ValueError, match="isa='sse9' is not available"):
        yyfast._C.set_cpu_isa("sse9")
    assert "baseline" in yyfast._C.cpu_isas()


@pytest.mark.parametrize("isa", [i for i in yyfast._C.cpu_isas() if i in ("baseline", "avx2+fma")])
def test_cpu_isa_forced_by_environment(isa):
    """YYFAST_CPU_ISA=baseline or avx2+fma picks that build at load instead of the best one."""
    import subprocess
    import sys

    code = "import yyfast._C as c; print(c.cpu_isa())"
    env = {**__import__("os").environ, "YYFAST_CPU_ISA": isa}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == isa


# ------------------------------------------------------------------------------------- GPU

GPU_CASES = [SpanCase(s, st, a, g, tr, cl) for (s, st, (a, g), tr, cl) in [
    ((2, 37, 33, 33), 1, ("gelu", "sigmoid"), True, True),
    ((2, 37, 33, 33), 2, ("silu", "hardsigmoid"), True, False),
    ((1, 3, 7, 9), 1, ("gelu", "hardsigmoid"), False, True),
    ((3, 16, 1, 1), 2, ("silu", "sigmoid"), False, False),
    ((4, 300, 17, 130), 1, ("gelu", "sigmoid"), True, True),  # several tiles per sample, 10 channel blocks
]]


@pytest.mark.parametrize("device", [d for d in DEVICES if getattr(d, "values", [d])[0] == "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: f"{c.shape}-s{c.stride}-{c.act}-{c.gate}-"
                                                         f"{'train' if c.training else 'eval'}-"
                                                         f"{'cl' if c.channels_last else 'nchw'}")
def test_gpu(device, dtype, case):
    if dtype == torch.float32 and _fp32_ill_conditioned(case):
        pytest.skip(_fp32_ill_conditioned(case))
    param_dtype = torch.float32 if dtype != torch.float32 else None
    check_dw_bn_act_se("cuda", device, dtype, case, param_dtype=param_dtype)


# ------------------------------------------------------------------------------------- contract

def test_training_needs_two_values():
    inputs = span_inputs(1, 5, 1, 1)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        yyfast.ops.dw_bn_act_se(*inputs.values(), training=True, backend="cuda")


def _op_args(n=2, c=6, h=5, w=7, stride=2, training=True, channels_last=False, dtype=torch.float32, device="cpu"):
    t = {k: v.to(device=device, dtype=dtype) for k, v in span_inputs(n, c, h, w).items()}
    if channels_last:
        t["x"] = t["x"].contiguous(memory_format=torch.channels_last)
    for k in ("x", "dw_weight", "bn_weight", "bn_bias", "se_w1", "se_b1", "se_w2", "se_b2"):
        t[k].requires_grad_(True)
    return (*t.values(), stride, 1e-5, training, "gelu", "sigmoid")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training,channels_last", [(True, False), (False, True)])
def test_opcheck_forward(device, training, channels_last):
    torch.library.opcheck(torch.ops.yyfast.dw_bn_act_se_cuda.default,
                          _op_args(training=training, channels_last=channels_last, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_backward(device):
    args = _op_args(training=True, channels_last=True, device=device)
    with torch.no_grad():
        y, mean, var, pooled = torch.ops.yyfast.dw_bn_act_se_cuda(*args)
    x, w, g, b, _rm, _rv, w1, b1, w2, b2, stride, eps, training, act, gate = args
    grad = torch.randn_like(y)
    torch.library.opcheck(torch.ops.yyfast.dw_bn_act_se_cuda_backward.default,
                          (grad, x.detach(), w.detach(), g.detach(), b.detach(), mean, var, pooled, w1.detach(),
                           b1.detach(), w2.detach(), b2.detach(), stride, eps, training, act, gate))


def test_outputs_and_stats_dtype():
    """mean/var are the accumulation dtype: float32 for half inputs; eval returns the running stats."""
    args = list(_op_args(training=False, dtype=torch.float32))
    args[0] = args[0].detach().to(torch.bfloat16)
    y, mean, var = cuda_ops.dw_bn_act_se(*args)
    assert y.dtype == torch.bfloat16 and mean.dtype == torch.float32 and var.dtype == torch.float32
    torch.testing.assert_close(mean, args[4])
    torch.testing.assert_close(var, args[5])
    assert mean.data_ptr() != args[4].data_ptr(), "eval mean must be a copy, never an alias of running_mean"


def test_torch_compile_fullgraph_backend_op():
    """The backend's functional op (registered op + autograd + fakes) compiles as one graph under
    Inductor, forward and backward, and matches eager."""
    inputs = {k: v.float() for k, v in span_inputs(2, 6, 5, 7).items()}

    def step(x, w, g, b, rm, rv, w1, b1, w2, b2):
        y, mean, var = cuda_ops.dw_bn_act_se(x, w, g, b, rm, rv, w1, b1, w2, b2, 2, 1e-5, True, "gelu", "sigmoid")
        with torch.no_grad():
            rm.lerp_(mean, 0.1)
            rv.lerp_(var, 0.1)
        return (y * y).sum()

    check_compiled_matches_eager(step, inputs, "inductor")


def test_torch_compile_fullgraph_public_op():
    """The public op, with its running-stat update, compiles as one graph and matches eager."""
    inputs = {k: v.float() for k, v in span_inputs(2, 6, 5, 7).items()}

    def step(x, w, g, b, rm, rv, w1, b1, w2, b2):
        y = yyfast.ops.dw_bn_act_se(x, w, g, b, rm, rv, w1, b1, w2, b2, stride=1, training=True, act="silu",
                                    gate="hardsigmoid", backend="cuda")
        return (y * y).sum()

    check_compiled_matches_eager(step, inputs, "aot_eager")


@pytest.mark.parametrize("bad,match", [
    (dict(stride=3), "stride"),
    (dict(act="relu"), "act"),
    (dict(gate="tanh"), "gate"),
    (dict(dw_weight=torch.randn(5, 1, 3, 3)), "dw_weight"),
    (dict(bn_bias=torch.randn(7)), "bn_bias"),
    (dict(se_w1=torch.randn(2, 5)), "se_w1"),
    (dict(se_w2=torch.randn(6, 3)), "se_w2"),
    (dict(x=torch.randn(2, 6, 5)), "x"),
])
def test_op_rejects_bad_arguments(bad, match):
    """The C++ op itself (not only the Python wrapper) names the bad argument."""
    names = ["x", "dw_weight", "bn_weight", "bn_bias", "running_mean", "running_var", "se_w1", "se_b1", "se_w2",
             "se_b2", "stride", "eps", "training", "act", "gate"]
    args = dict(zip(names, _op_args()))
    args = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.yyfast.dw_bn_act_se_cuda(*[args[k] for k in names])
