"""The reference network: shapes, fusion formulas, initialisation, state_dict round trips."""
import io
import math

import pytest
import torch

import yyfast
from yyfast.reference_model import DWBNActSE, MBConv, Residual, TRUNC_STD_CORRECTION, YinYangFusion

#: The six formulas exactly as the paper's Table 1 writes them (A = Yang, I = Yin).
WRITTEN = {
    "add": lambda A, I: A + I,
    "mul": lambda A, I: A * I,
    "gate": lambda A, I: A * (1 - I),
    "mul_add": lambda A, I: A * I + A + I,
    "gate_sub": lambda A, I: A * (1 - I) + A - I,
    "gate_add": lambda A, I: A * (1 - I) + A + I,
}


@pytest.mark.parametrize("formula", sorted(WRITTEN))
def test_fusion_matches_written_formula(formula):
    a, i = torch.randn(2, 5, 7, 9, dtype=torch.float64), torch.randn(2, 5, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(YinYangFusion(formula)(a, i), WRITTEN[formula](a, i), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(yyfast.ops.yinyang_fuse(a, i, formula, backend="reference"), WRITTEN[formula](a, i),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, size, classes", [("yynet_small_16", 32, 10), ("yynet_small_32", 32, 10),
                                                 ("yynet_small_64", 32, 10), ("yynet_imagenet", 32, 1000)])
def test_output_shapes(name, size, classes):
    model = yyfast.create_model(name, backend="reference").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, classes)


def test_cifar_feature_shapes_follow_the_spec():
    model = yyfast.create_model("yynet_small_16", backend="reference").eval()
    x = torch.randn(2, 3, 32, 32)
    shapes = {}
    hooks = [getattr(model, part).register_forward_hook(lambda m, i, o, part=part: shapes.__setitem__(part, o.shape))
             for part in ("yin", "yang", "single_path")]
    # Yin: late stride, Yang: early stride; both end at (N, C, 16, 16); the single path at 4x4.
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert shapes["yin"] == shapes["yang"] == (2, 16, 16, 16)
    assert shapes["single_path"] == (2, 16, 4, 4)
    assert [b.span.stride for b in model.yin[1:]] == [1, 1, 2]
    assert [b.span.stride for b in model.yang[1:]] == [2, 1, 1]
    assert [b.span.stride for b in model.single_path[1:]] == [2, 1]


def test_yin_input_modes():
    x = torch.randn(2, 3, 8, 8)
    red = yyfast.create_model("yynet_small_16", backend="reference", yin_input="red").yin_input(x)
    mean = yyfast.create_model("yynet_small_16", backend="reference").yin_input(x)
    torch.testing.assert_close(red, x[:, :1])
    torch.testing.assert_close(mean, x.mean(1, keepdim=True))


def test_span_is_dw_bn_act_dropout_se():
    span = DWBNActSE(12, stride=2, act="silu", gate="hardsigmoid").eval()
    with torch.no_grad():
        span.bn.running_mean.uniform_(-1, 1)
        span.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 12, 9, 7)
    d = torch.nn.functional.silu(span.bn(span.conv(x)))
    s = torch.nn.functional.hardsigmoid(span.se.fc2(torch.nn.functional.silu(span.se.fc1(d.mean((2, 3), True)))))
    torch.testing.assert_close(span(x), d * s)
    assert span(x).shape == (3, 12, 5, 4)


def test_authors_initialisation():
    model = yyfast.create_model("yynet_small_64", backend="reference")
    res, mb = model.yang[0], model.yang[1]
    assert isinstance(res, Residual) and isinstance(mb, MBConv)
    # Shortcuts are identity (dirac) with zero bias.
    w = res.shortcut.weight
    assert torch.equal(w[:, :, 0, 0], torch.eye(64, 3))
    assert torch.equal(res.shortcut.bias, torch.zeros(64))
    assert torch.equal(mb.shortcut[1].weight[:, :, 0, 0], torch.eye(64))
    # Main-path convs: truncated normal with std sqrt(1/mean(fan_in, fan_out))/0.8796, cut at 2 std.
    conv = res.conv2.weight  # 64 -> 64, 3x3: fan_in = fan_out = 576
    std = math.sqrt(1 / 576) / TRUNC_STD_CORRECTION
    assert conv.abs().max() <= 2 * std + 1e-7
    assert abs(conv.std().item() - std * TRUNC_STD_CORRECTION) < 0.05 * std
    assert torch.equal(res.conv2.bias, torch.zeros(64))
    fc = model.head.fc.weight  # 64 -> 40
    assert fc.abs().max() <= 2 * math.sqrt(1 / 52) / TRUNC_STD_CORRECTION + 1e-7
    assert torch.equal(model.head.classifier.bias, torch.zeros(10))


def test_state_dict_round_trip():
    src = yyfast.create_model("yynet_small_16", backend="reference", fusion="gate_add")
    with torch.no_grad():
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst = yyfast.create_model("yynet_small_16", backend="reference", fusion="gate_add")
    dst.load_state_dict(torch.load(buf, weights_only=True))
    src.eval(), dst.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    assert list(dst.state_dict()) == list(src.state_dict())


def test_discard_mbconv_input_bn_reproduces_authors_script():
    model = yyfast.create_model("yynet_small_16", backend="reference", discard_mbconv_input_bn=True).eval()
    block = model.yin[1]
    with torch.no_grad():
        block.bn_in.weight.fill_(3.0)  # would change the output if applied
        x = torch.randn(2, 16, 8, 8)
        ref = block.bn_project(block.project(block.span(block.act(block.bn_expand(block.expand(x)))))) + x
        torch.testing.assert_close(block(x), ref)


def test_bad_input_shape_is_named():
    model = yyfast.create_model("yynet_small_16", backend="reference")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, H, W\)"):
        model(torch.randn(2, 1, 32, 32))
