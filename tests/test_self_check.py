"""``backend="auto"``'s self-check (yyfast/self_check.py), proven on the CPU by injecting faults.

On a GPU the check runs by default; on the CPU only with ``YYFAST_SELF_CHECK=all``, which these
tests set, then break the C++ backend (``auto``'s first choice on the CPU) by monkeypatching its
op to return wrong numbers or to raise, and check the warning and the fallback result.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import yyfast.ops as ops
from yyfast import self_check
from yyfast.availability import backends
from yyfast.ops import cuda_ops

pytestmark = pytest.mark.skipif("cpu" not in backends()["cuda"]["devices"],
                                reason="needs the yyfast._C extension (auto's first choice on the CPU)")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setenv("YYFAST_SELF_CHECK", "all")
    self_check.reset()
    yield
    self_check.reset()


def _span_args(training=True):
    g = torch.Generator().manual_seed(1)
    c, hidden = 8, 2
    r = lambda *s: torch.randn(s, generator=g)  # noqa: E731
    return (r(2, c, 6, 6), r(c, 1, 3, 3), r(c) * 0.1 + 1, r(c) * 0.1, torch.zeros(c), torch.ones(c),
            r(hidden, c), r(hidden), r(c, hidden), r(c))


def _call_span(backend, args, training=True):
    args = [a.clone() for a in args]  # the running statistics are updated in place
    return ops.dw_bn_act_se(*args, training=training, backend=backend)


def _wrong_numbers(monkeypatch):
    real = cuda_ops.dw_bn_act_se

    def broken(*args):
        y, mean, var = real(*args)
        return y * 1.5, mean, var
    monkeypatch.setattr(cuda_ops, "dw_bn_act_se", broken)


@pytest.mark.parametrize("training", [True, False])
def test_wrong_numbers_warn_once_and_fall_back_to_reference(monkeypatch, training):
    _wrong_numbers(monkeypatch)
    args = _span_args()
    with pytest.warns(RuntimeWarning) as caught:
        y = _call_span("auto", args, training)
    (w,) = [w for w in caught if "self-check" in str(w.message)]
    text = str(w.message)
    assert "backend 'cuda' failed its self-check on cpu for dw_bn_act_se" in text
    assert "differs from the reference" in text and "falls back to 'reference'" in text
    torch.testing.assert_close(y, _call_span("reference", args, training))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the answer is cached
        _call_span("auto", args, training)


def test_launch_error_is_named_and_falls_back(monkeypatch):
    def raises(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(cuda_ops, "yinyang_fuse", raises)
    a, i = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    with pytest.warns(RuntimeWarning, match=r"backend 'cuda' failed its self-check on cpu for yinyang_fuse .*"
                                            r"RuntimeError: CUDA error: an illegal memory access"):
        out = ops.yinyang_fuse(a, i, "mul", backend="auto")
    torch.testing.assert_close(out, ops.yinyang_fuse(a, i, "mul", backend="reference"))


def test_wrong_gradient_is_caught(monkeypatch):
    real = cuda_ops.yinyang_fuse

    class Halve(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * 0.5
    monkeypatch.setattr(cuda_ops, "yinyang_fuse", lambda a, i, *c: Halve.apply(real(a, i, *c)))
    a, i = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    with pytest.warns(RuntimeWarning, match="grad_a differs from the reference"):
        ops.yinyang_fuse(a, i, "add", backend="auto")


def test_a_correct_backend_passes_silently():
    args = _span_args()
    calls = []
    real = self_check._run_check
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        self_check._run_check = lambda *a: calls.append(a) or real(*a)
        try:
            for dtype in (torch.float32, torch.bfloat16):
                _call_span("auto", [t.to(dtype) for t in args])
        finally:
            self_check._run_check = real
    assert [c[0] for c in calls] == ["cuda", "cuda"]  # checked (once per dtype), and kept


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_check_runs_backward_under_no_grad_and_inference_mode(context):
    args = _span_args(training=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with context():
            y = _call_span("auto", args, training=False)
    torch.testing.assert_close(y, _call_span("reference", args, training=False), rtol=1e-4, atol=1e-5)
    assert self_check._RESULTS and all(v is None for v in self_check._RESULTS.values())


def test_explicit_backend_is_never_replaced(monkeypatch):
    _wrong_numbers(monkeypatch)
    args = _span_args()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = _call_span("cuda", args)
    torch.testing.assert_close(y, _call_span("reference", args) * 1.5)


@pytest.mark.parametrize("setting", ["0", None])
def test_off_and_cpu_default_skip_the_check(monkeypatch, setting):
    if setting is None:
        monkeypatch.delenv("YYFAST_SELF_CHECK")  # default: GPU devices only
    else:
        monkeypatch.setenv("YYFAST_SELF_CHECK", setting)
    _wrong_numbers(monkeypatch)
    monkeypatch.setattr(self_check, "_run_check", lambda *a: pytest.fail("the check ran"))
    args = _span_args()
    torch.testing.assert_close(_call_span("auto", args), _call_span("reference", args) * 1.5)


def test_fullgraph_compile_uses_the_checked_backend(monkeypatch):
    """The check runs outside the traced code (an assume_constant_result): fullgraph still traces,
    and the compiled function runs the fallback."""
    _wrong_numbers(monkeypatch)
    args = _span_args(training=False)
    fn = torch.compile(lambda *t: ops.dw_bn_act_se(*t, training=False, backend="auto"), fullgraph=True,
                       backend="eager")
    with pytest.warns(RuntimeWarning, match="failed its self-check"):
        y = fn(*args)
    torch.testing.assert_close(y, _call_span("reference", args, training=False))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("training,stride", [(True, 1), (False, 2)])
def test_no_false_alarm_on_a_correct_backend(dtype, training, stride):
    """The tolerances pass correct kernels in every dtype (here the C++ twins of the CUDA kernels)."""
    cpu = torch.device("cpu")
    assert self_check._run_check("cuda", "dw_bn_act_se", cpu, dtype, training, (stride, "silu", "hardsigmoid")) is None
    assert self_check._run_check("cuda", "yinyang_fuse", cpu, dtype, True, (1.0, 1.0, 0.5)) is None


def test_triton_backend_runs_through_the_check():
    """The same check drives the Triton ops (here in the interpreter, as on a GPU)."""
    if "cpu" not in backends()["triton"]["devices"]:
        pytest.skip("Triton cannot run on CPU tensors here (needs TRITON_INTERPRET=1)")
    cpu = torch.device("cpu")
    assert self_check._run_check("triton", "dw_bn_act_se", cpu, torch.float32, True, (2, "gelu", "sigmoid")) is None
    assert self_check._run_check("triton", "yinyang_fuse", cpu, torch.float32, True, (1.0, 0.0, 0.0)) is None


def test_optimize_for_inference_auto_goes_through_the_self_check(monkeypatch):
    """``optimize_for_inference(backend="auto")`` resolves the span backend itself; its op calls still
    ask for ``auto``, so a broken kernel is caught and replaced there too (float64: the C++ block op,
    which bypasses the span op, runs only in float32)."""
    import yyfast

    _wrong_numbers(monkeypatch)
    model = yyfast.create_model("yynet_small_16", backend="reference").eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        want = model.double()(x)
    fast = yyfast.optimize_for_inference(model, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="self-check"):
        got = fast(x)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
