"""yyfast::conv3x3_winograd_eval (Winograd F(2x2, 3x3) and F(4x4, 3x3), float32 CPU, eval): against the float64
convolution on awkward shapes, every epilogue, both work splits; its argument checks; and that the
optimized model's stems use it."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inference_helpers import float64_reference, trained_like_
from yyfast.cpu_eval import winograd
from yyfast.inference import optimize_for_inference
from yyfast.reference_model import ReferenceYYNet
import yyfast

pytestmark = pytest.mark.skipif(not winograd.available(), reason="the yyfast extension (Winograd op) is not built")

ACTS = {"none": lambda t: t, "gelu": F.gelu, "silu": F.silu}


def _conv(cin, cout, seed):
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, 3, 1, 1).eval()


def _expected(conv, x, act, residual):
    ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    if residual is not None:
        ref = ref + residual.double()
    return ACTS[act](ref)


# (output tile, tolerance on error / max): F(4x4, 3x3)'s transforms round (measured up to 1.2e-6).
TILES = [(2, 2e-6), (4, 5e-6)]


@pytest.mark.parametrize("tile,tol", TILES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n,cin,cout,h,w", [(1, 64, 64, 32, 32), (3, 16, 32, 7, 9), (2, 32, 16, 1, 1),
                                            (1, 48, 64, 5, 2), (5, 16, 16, 2, 13), (4, 64, 16, 17, 3)])
@pytest.mark.parametrize("act,with_residual", [("none", False), ("gelu", True), ("silu", False), ("silu", True)])
def test_matches_the_float64_convolution(tile, tol, threads, n, cin, cout, h, w, act, with_residual):
    conv = _conv(cin, cout, seed=n * 100 + h)
    x = torch.randn(n, cin, h, w).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(n, cout, h, w) if with_residual else None  # NCHW: the op takes any layout
    u = winograd.transform_weights(conv.weight, tile)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            out = winograd.conv_with(u, conv.bias.detach(), x, act, residual)
    finally:
        torch.set_num_threads(before)
    ref = _expected(conv, x, act, residual)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(out).all()
    assert ((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item() < tol


def test_the_model_uses_the_larger_tile():
    conv = _conv(16, 16, seed=3)
    assert winograd.packed(conv)[0].shape == ((winograd.TILE + 2) ** 2, 16, 16) and winograd.TILE == 4


@pytest.mark.parametrize("tile,g", [(2, winograd._G), (4, winograd._G4)])
def test_transformed_weights_reproduce_the_filter(tile, g):
    """U = G g G^T, and g is recovered from U by the left inverse of G: nothing lost in the transform."""
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    a = tile + 2
    u = winograd.transform_weights(w, tile).reshape(a, a, 3, 5)
    g = torch.tensor(g, dtype=torch.float64)
    g_inv = torch.linalg.pinv(g)
    back = torch.einsum("ax,xnco,bn->ocab", g_inv, u, g_inv)
    assert torch.allclose(back, w, atol=1e-12)


def test_weights_are_retransformed_after_an_in_place_edit():
    conv = _conv(16, 16, seed=1)
    x = torch.randn(1, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        winograd.conv(conv, x)
        conv.weight.mul_(-2.0)
        out = winograd.conv(conv, x)
    assert ((out.double() - _expected(conv, x, "none", None)).abs().max()).item() < 1e-5


@pytest.mark.parametrize("args,match", [
    (lambda x, u, b: (x.double(), u, b, None, "none"), "x must be a 4-d float32 CPU tensor"),
    (lambda x, u, b: (x, u[:, :8], b, None, "none"), "u must be a contiguous float32 CPU tensor of shape"),
    (lambda x, u, b: (x, u, b[:8], None, "none"), "bias must be a contiguous float32 CPU tensor"),
    (lambda x, u, b: (x, u, b, torch.zeros(1, 16, 3, 3), "none"), "residual must be a float32 CPU tensor"),
    (lambda x, u, b: (x, u, b, None, "relu"), "act must be 'none', 'gelu' or 'silu'"),
    (lambda x, u, b: (x[:, :8].contiguous(), u[:, :8].contiguous(), b, None, "none"),
     "channel counts must be positive multiples of 16"),
    (lambda x, u, b: (x[:0], u, b, None, "none"), "x must have no empty dimension"),
])
def test_bad_arguments_are_clear_errors(args, match):
    conv = _conv(16, 16, seed=2)
    x = torch.randn(2, 16, 4, 4)
    u, b = winograd.packed(conv)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.yyfast.conv3x3_winograd_eval(*args(x, u, b))


def test_applies_only_to_the_geometry_it_computes():
    assert winograd.applies(nn.Conv2d(16, 32, 3, 1, 1))
    assert not winograd.applies(nn.Conv2d(16, 32, 3, 2, 1))            # stride 2
    assert not winograd.applies(nn.Conv2d(3, 16, 3, 1, 1))             # Cin not a multiple of 16
    assert not winograd.applies(nn.Conv2d(16, 16, 3, 1, 1, groups=16))  # depthwise
    assert not winograd.applies(nn.Conv2d(16, 16, 1))                  # 1x1
    assert not winograd.applies(nn.Conv2d(16, 16, 3, 1, 1).double())   # float64


def test_the_optimized_stems_use_it_and_still_match_float64():
    from torch.profiler import ProfilerActivity, profile

    model = trained_like_(ReferenceYYNet(yyfast.get_config("yynet_small_16")), 0).eval()
    fast = optimize_for_inference(model)
    x = torch.randn(3, 3, 19, 14)
    ref = float64_reference(model, x)
    out = fast(x)  # the whole forward in one call: its stems' steps carry the F(4x4, 3x3) transform
    whole = fast._bound()["whole"]
    if whole is not None:  # each Residual step's weights: conv1's two, then conv2's transform and bias
        w0, conv2 = 0, []
        for kind in whole.plan[4::4]:
            if kind == 0:
                conv2.append(whole.weights[w0 + 2])
            w0 += 6 if kind == 0 else 11
        assert len(conv2) >= 2 and all(u.shape[0] == 36 for u in conv2)
    assert ((out.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5
    hook = fast.yin[0].register_forward_pre_hook(lambda m, i: None)  # a hook: block by block, from Python
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = fast(x)
    finally:
        hook.remove()
    names = {e.key for e in prof.key_averages()}
    assert "yyfast::conv3x3_winograd_eval" in names
    assert ((out.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


def _cpu_isas():
    return __import__("yyfast._C")._C.cpu_isas()


@pytest.mark.parametrize("isa", _cpu_isas())
@pytest.mark.parametrize("tile,tol", TILES)
def test_each_isa_build(isa, tile, tol):
    """The transforms are compiled once per instruction set (baseline, AVX2, AVX-512): each build's."""
    ext = __import__("yyfast._C")._C
    conv = _conv(32, 48, seed=7)
    u = winograd.transform_weights(conv.weight, tile)
    prev = ext.cpu_isa()
    ext.set_cpu_isa(isa)
    try:
        for n, h, w in ((1, 32, 32), (3, 7, 9), (2, 5, 1)):
            x = torch.randn(n, 32, h, w).contiguous(memory_format=torch.channels_last)
            residual = torch.randn(n, 48, h, w)
            with torch.no_grad():
                out = winograd.conv_with(u, conv.bias.detach(), x, "gelu", residual)
            ref = _expected(conv, x, "gelu", residual)
            err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
            assert err < tol, (isa, tile, n, h, w, err)
    finally:
        ext.set_cpu_isa(prev)
