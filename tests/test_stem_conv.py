"""yyfast::stem_conv_eval (a Residual stem's first 3x3 convolution + act and its 1x1 shortcut in one pass,
float32 CPU, eval; wider strided inputs by im2col + GEMM with the shortcut from the centre tap): against
the float64 convolutions on awkward shapes, every activation, both work splits and every ISA build; its
argument checks; where it applies."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yyfast.cpu_eval import stem_conv

pytestmark = pytest.mark.skipif(not stem_conv.available(), reason="the yyfast extension (stem_conv_eval) is not built")

ACTS = {"none": lambda t: t, "gelu": F.gelu, "silu": F.silu}


def _convs(cin, cout, stride, seed):
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, 3, stride, 1), nn.Conv2d(cin, cout, 1, stride, 0)


def _check(conv1, shortcut, x, stride, act, tol=1e-6):
    with torch.no_grad():
        y, sc = stem_conv.run(x, stem_conv.packed(conv1, shortcut), stride, act)
    ref_y = ACTS[act](F.conv2d(x.double(), conv1.weight.double(), conv1.bias.double(), stride, 1))
    ref_sc = F.conv2d(x.double(), shortcut.weight.double(), shortcut.bias.double(), stride)
    for out, ref in ((y, ref_y), (sc, ref_sc)):
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert out.is_contiguous(memory_format=torch.channels_last)
        err = ((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
        assert err < tol, err


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n,cin,cout,h,w,stride", [(1, 3, 64, 32, 32, 1), (3, 1, 64, 7, 9, 1), (2, 3, 32, 5, 6, 2),
                                                   (5, 4, 16, 1, 1, 1), (1, 8, 48, 9, 4, 2), (4, 2, 80, 3, 17, 2),
                                                   # im2col + GEMM: single-path Residuals, odd sizes, stride 3,
                                                   # a 1x1 input, a sample of more than 256 output positions
                                                   (1, 64, 64, 16, 16, 2), (3, 20, 32, 9, 7, 2), (2, 9, 16, 11, 5, 3),
                                                   (1, 16, 48, 1, 1, 2), (1, 24, 16, 40, 38, 2)])
@pytest.mark.parametrize("act", ["none", "gelu", "silu"])
def test_matches_the_float64_convolutions(threads, n, cin, cout, h, w, stride, act):
    conv1, shortcut = _convs(cin, cout, stride, seed=n * 10 + h)
    x = torch.randn(n, cin, h, w)  # NCHW: the op reads any dense layout
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check(conv1, shortcut, x, stride, act)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("isa", __import__("yyfast._C")._C.cpu_isas() if stem_conv.available() else [])
def test_each_isa_build(isa):
    """The kernel is compiled once per instruction set (8 or 16 lanes; 4-vector and 1-vector blocks)."""
    ext = __import__("yyfast._C")._C
    prev = ext.cpu_isa()
    ext.set_cpu_isa(isa)
    try:
        for cin, cout, h, w, stride in ((3, 64, 11, 8, 1), (1, 48, 6, 5, 2), (4, 16, 2, 3, 1), (40, 32, 7, 6, 2)):
            conv1, shortcut = _convs(cin, cout, stride, seed=cout)
            _check(conv1, shortcut, torch.randn(2, cin, h, w).contiguous(memory_format=torch.channels_last),
                   stride, "gelu")
    finally:
        ext.set_cpu_isa(prev)


def test_weights_are_repacked_after_an_in_place_edit():
    conv1, shortcut = _convs(3, 16, 1, seed=1)
    x = torch.randn(1, 3, 6, 6)
    _check(conv1, shortcut, x, 1, "gelu")
    with torch.no_grad():
        conv1.weight.mul_(-2.0)
        shortcut.bias.add_(1.0)
    _check(conv1, shortcut, x, 1, "gelu")


@pytest.mark.parametrize("args,match", [
    (lambda x, p: (x.double(), *p, 1, 1, "gelu"), "x must be a 4-d float32 CPU tensor"),
    (lambda x, p: (x[:0], *p, 1, 1, "gelu"), "x must have no empty dimension"),
    (lambda x, p: (torch.randn(1, 9, 4, 4), *p, 1, 0, "gelu"), "with more than 8 input channels the padding must be 1"),
    (lambda x, p: (torch.randn(1, 9, 4, 4), *p, 2, 1, "gelu"), r"weight must be a contiguous .* \[9, 9, 16\]"),
    (lambda x, p: (x, *p, 0, 1, "gelu"), "stride must be >= 1"),
    (lambda x, p: (x, *p, 1, 1, "relu"), "act must be 'none', 'gelu' or 'silu'"),
    (lambda x, p: (x, p[0][:, :, :8].contiguous(), *p[1:], 1, 1, "gelu"), "Cout must be a positive multiple of 16"),
    (lambda x, p: (x, p[0][:, :2].contiguous(), *p[1:], 1, 1, "gelu"), "weight must be a contiguous float32"),
    (lambda x, p: (x, p[0], p[1][:8], p[2], p[3], 1, 1, "gelu"), "bias must be a contiguous float32"),
    (lambda x, p: (x, p[0], p[1], p[2].t(), p[3], 1, 1, "gelu"), "shortcut_weight must be a contiguous float32"),
    (lambda x, p: (x, *p[:3], p[3].double(), 1, 1, "gelu"), "shortcut_bias must be a contiguous float32"),
    (lambda x, p: (x, *p, 1, 0, "gelu"), "must give the same output size"),
])
def test_bad_arguments_are_clear_errors(args, match):
    conv1, shortcut = _convs(3, 16, 1, seed=2)
    packed = stem_conv.packed(conv1, shortcut)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.yyfast.stem_conv_eval(*args(torch.randn(2, 3, 4, 4), packed))


def test_applies_only_to_the_geometry_it_computes():
    conv1, shortcut = _convs(3, 32, 2, seed=3)
    assert stem_conv.applies(conv1, shortcut)
    assert not stem_conv.applies(conv1, nn.Conv2d(3, 32, 1, 1))                       # other stride
    assert not stem_conv.applies(conv1, nn.Identity())                                # no shortcut conv
    assert not stem_conv.applies(nn.Conv2d(3, 32, 3, 2, 0), shortcut)                  # padding 0
    assert stem_conv.applies(nn.Conv2d(64, 32, 3, 2, 1), nn.Conv2d(64, 32, 1, 2))      # wide, strided: im2col
    assert not stem_conv.applies(nn.Conv2d(9, 32, 3, 1, 1), nn.Conv2d(9, 32, 1, 1))    # wide, stride 1
    assert not stem_conv.applies(nn.Conv2d(3, 24, 3, 2, 1), nn.Conv2d(3, 24, 1, 2))    # Cout % 16
    assert not stem_conv.applies(nn.Conv2d(3, 32, 3, 2, 1, bias=False), shortcut)      # no bias
    assert not stem_conv.applies(conv1.double(), shortcut)                            # float64
