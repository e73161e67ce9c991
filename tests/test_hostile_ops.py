"""Hostile-input regression tests for the ops and the model (issue 12, the model/op half): every
backend agrees on what is valid, double backward is exact or refused, TorchScript is refused
clearly. One test per scenario, named for what it guards."""
import pytest
import torch
from torch.autograd import gradgradcheck

import yyfast
from helpers import rel_err
from yyfast.availability import backends

FUSED = ("cuda", "triton")
ALL = ("reference",) + FUSED
C, HIDDEN = 4, 2


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead (~10x on the shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _need(backend: str) -> None:
    if backend != "reference" and not backends()[backend]["available"]:
        pytest.skip(f"backend={backend!r} cannot run here: {backends()[backend]['reason']}")


def _span_args(dtype=torch.float32, param_dtype=None, seed=0):
    """x, dw_weight, bn_weight, bn_bias, running_mean, running_var, se_w1, se_b1, se_w2, se_b2."""
    g = torch.Generator().manual_seed(seed)
    p = param_dtype or dtype

    def r(*shape, scale=1.0, dt=p):
        return (torch.randn(*shape, generator=g) * scale).to(dt)

    return [r(2, C, 5, 4, dt=dtype), r(C, 1, 3, 3, scale=0.5), 1 + r(C, scale=0.2), r(C, scale=0.2),
            r(C, scale=0.3), 0.5 + torch.rand(C, generator=g).to(p), r(HIDDEN, C, scale=0.5), r(HIDDEN, scale=0.1),
            r(C, HIDDEN, scale=0.5), r(C, scale=0.1)]


def _span(args, backend, **kw):
    return yyfast.ops.dw_bn_act_se(*args, backend=backend, **kw)


# ------------------------------------------------------------------ every backend agrees on validity

@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("stride", [2.0, 1.0, True])
def test_non_int_stride_is_rejected_by_every_backend(backend, stride):
    """stride=2.0 used to pass validation, run on the fused backends and fail in F.conv2d on the reference."""
    _need(backend)
    with pytest.raises(ValueError, match=r"stride=.*allowed values: 1, 2"):
        _span(_span_args(), backend, stride=stride)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("training", [True, False])
def test_running_stats_requiring_grad_are_rejected_by_every_backend(backend, training):
    """The fused backends used to accept them silently, the reference failed inside native_batch_norm."""
    _need(backend)
    args = _span_args()
    args[4].requires_grad_(True)
    with pytest.raises(ValueError, match="running_mean must not require grad"):
        _span(args, backend, training=training)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("index,name", [(1, "dw_weight"), (4, "running_mean"), (8, "se_w2")])
def test_parameter_dtype_unlike_x_is_rejected_by_every_backend(backend, index, name):
    """A float64 parameter with a float32 x: the fused backends used to cast silently, the reference failed."""
    _need(backend)
    args = _span_args()
    args[index] = args[index].double()
    with pytest.raises(ValueError, match=f"{name} has dtype torch.float64 but x has torch.float32"):
        _span(args, backend)


@pytest.mark.parametrize("training", [True, False])
def test_reference_runs_mixed_precision_like_the_fused_backend(training):
    """float16 x with float32 parameters and statistics (autocast-style) is valid on every backend:
    the reference used to fail; now it gives the C++ backend's output and statistics."""
    _need("cuda")
    outs, stats = [], []
    for backend in ("reference", "cuda"):
        args = _span_args(torch.float16, param_dtype=torch.float32)
        outs.append(_span(args, backend, training=training))
        stats.append(torch.cat([args[4], args[5]]))
    assert outs[0].dtype == outs[1].dtype == torch.float16
    assert rel_err(outs[1], outs[0]) < 1e-2
    assert rel_err(stats[1], stats[0]) < 1e-5


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("backend", ["reference", "cuda"])
def test_torch_jit_script_says_torchscript_is_unsupported(backend):
    _need(backend)
    with pytest.raises(RuntimeError, match=r"TorchScript.*not supported.*torch\.compile.*export_onnx"):
        torch.jit.script(yyfast.create_model("yynet_small_16", backend=backend))


# ------------------------------------------------------------------ double backward

@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_span_is_twice_differentiable_on_cpp_backend(training, stride):
    """gradgradcheck in float64: the C++ backward used to give gradients with no graph (second
    derivatives zero or missing, only a UserWarning)."""
    _need("cuda")
    args = _span_args(torch.float64)
    rm, rv = args[4], args[5]
    diff = [t.requires_grad_() for i, t in enumerate(args) if i not in (4, 5)]

    def f(x, dw, gamma, beta, w1, b1, w2, b2):
        return _span([x, dw, gamma, beta, rm.clone(), rv.clone(), w1, b1, w2, b2], "cuda", stride=stride,
                     training=training)

    assert gradgradcheck(f, diff, eps=1e-6, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("backend", FUSED)
def test_fuse_is_twice_differentiable(backend):
    _need(backend)
    g = torch.Generator().manual_seed(1)
    a, i = (torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    assert gradgradcheck(lambda a, i: yyfast.ops.yinyang_fuse(a, i, "gate_add", backend=backend), (a, i))


def _span_penalty_grads(backend, training, stride):
    """Gradients of a gradient penalty ||d(sum(w*y))/d(inputs)||^2 with respect to every input."""
    args = _span_args(torch.float32, seed=3)
    diff = [t.requires_grad_() for i, t in enumerate(args) if i not in (4, 5)]
    y = _span(args, backend, stride=stride, training=training)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(4))
    first = torch.autograd.grad((w * y).sum(), diff, create_graph=True)
    penalty = sum(g.square().sum() for g in first)
    return torch.autograd.grad(penalty, diff)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("training", [True, False])
def test_span_gradient_penalty_matches_reference(backend, training):
    """Second derivatives of the span on every fused backend (the Triton interpreter has no float64
    gradgradcheck budget: one float32 penalty against the reference's)."""
    _need(backend)
    want = _span_penalty_grads("reference", training, 2)
    got = _span_penalty_grads(backend, training, 2)
    for k, (g, r) in enumerate(zip(got, want)):
        assert rel_err(g, r) < 1e-4, f"input {k}: {rel_err(g, r):.3e}"


def test_model_gradient_penalty_matches_reference():
    """A gradient penalty through yynet_small_16 (float64) on the C++ backend gives every parameter
    the reference model's gradient (it used to leave some with none and others wrong)."""
    _need("cuda")
    ref = yyfast.create_model("yynet_small_16", backend="reference").double()
    net = yyfast.create_model("yynet_small_16", backend="cuda").double()
    net.load_state_dict(ref.state_dict())
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = []
    for model in (ref, net):
        x = x0.clone().requires_grad_()
        (gx,) = torch.autograd.grad(model(x).logsumexp(1).sum(), x, create_graph=True)
        gx.square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    scale = torch.cat([g.flatten() for g in grads[0].values() if g is not None]).norm()
    for name, g_ref in grads[0].items():
        g = grads[1][name]
        assert (g is None) == (g_ref is None), f"{name}: gradient presence differs"
        if g_ref is not None:  # relative to the whole gradient: some are analytically ~0 (BN before BN)
            assert (g - g_ref).norm() <= 1e-8 * scale, f"{name}: {(g - g_ref).norm() / scale:.3e}"


def test_optimized_model_sees_a_write_through_data_after_a_forward():
    """Found 2026-11-28: optimize_for_inference's prepared weights (the MBConv block op's packing) were
    keyed on version counters, which ``p.data.copy_()`` does not bump: the next forward used the old SE
    weights, a silent wrong output. Now keyed on the values (yyfast::same_values)."""
    fast = yyfast.optimize_for_inference(yyfast.create_model("yynet_small_16").eval())
    x = torch.randn(2, 3, 16, 16)
    fast(x)
    weight = fast.yin[3].span.fc1.weight
    weight.data.copy_(torch.randn_like(weight))
    got = fast(x)
    fast.graph = "plain"
    assert rel_err(got, fast(x)) < 1e-5


def test_model_eval_sees_a_write_through_data_to_a_stem_shortcut():
    """yyfast.YYNet's CPU eval packs each stem's conv1 and shortcut for one pass (cpu_eval.stem_conv,
    2026-11-28); the packing is content-keyed, so a ``.data`` write to the shortcut (no version bump) is
    seen by the next forward, as by the reference network."""
    model = yyfast.create_model("yynet_small_16").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
        weight = model.yang[0].shortcut.weight
        weight.data.copy_(torch.randn_like(weight))
        got = model(x)
        expected = model.set_backend("reference")(x)
    assert rel_err(got, expected) < 1e-5 and rel_err(before, expected) > 1e-3


@pytest.mark.parametrize("how", ["copy through .data", "p.data = another tensor"])
def test_optimized_models_one_call_route_sees_a_write_to_a_packed_strided_conv(how):
    """2026-11-28: InferenceYYNet's forward checks its record in C (yyfast._C.fast_forward) and the
    single-path Residual's strided conv1 is packed for stem_conv_eval's im2col pass; neither a write
    through ``.data`` nor a swapped ``.data`` tensor bumps a version counter. The next forward must use
    the new weights, as the plain graph does."""
    fast = yyfast.optimize_for_inference(yyfast.create_model("yynet_small_16").eval())
    x = torch.randn(1, 3, 16, 16)
    before = fast(x)
    fast(x)  # the record now exists: this call took the C route
    weight = fast.single_path[0].conv1.weight
    if how == "copy through .data":
        weight.data.copy_(torch.randn_like(weight))
    else:
        weight.data = torch.randn_like(weight)
    got = fast(x)
    fast.graph = "plain"
    expected = fast(x)
    assert rel_err(got, expected) < 1e-5 and rel_err(before, expected) > 1e-3
