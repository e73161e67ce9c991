"""Eval-mode BatchNorm folding in ``yyfast.YYNet`` (``yyfast.eval_fold``) and the layout of the
Yin branch: the folded blocks give the float64 reference's outputs and gradients, see every
parameter or statistic change, compile as one graph, and the reference network never sees them."""
import copy

import pytest
import torch
import torch.nn.functional as F

import yyfast
from conftest import DEVICES
from helpers import rel_err
from inference_helpers import trained_like_
from yyfast.bn_fold import fold_bn_into_1x1, fold_weight_bn
from yyfast.model import FusedMBConv, FusedResidual
from yyfast.reference_model import ReferenceYYNet

pytest.importorskip("yyfast._C", reason="the yyfast._C extension is not built (pip install -e . --no-build-isolation)")

MODEL = "yynet_small_16"


def _pair(device="cpu", **overrides):
    """(float64 CPU reference, fused YYNet on ``device``) with the same trained-like weights."""
    ref = trained_like_(ReferenceYYNet(yyfast.get_config(MODEL, **overrides))).eval()
    net = yyfast.create_model(MODEL, backend="cuda", **overrides).eval()
    net.load_state_dict(ref.state_dict())
    return ref.double(), net.to(device)


def _x(n=3, device="cpu", channels_last=True):
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(5)).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_bn_before", [True, False])
def test_fold_conv_bn_algebra(bias, with_bn_before):
    """conv(x, w, b) == bn(conv(bn_before(x))) in float64, for a 1x1 conv with and without a BN before
    (the algebra both the eval folding and optimize_for_inference use)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 1, bias=bias).double()
    bn, bn_before = torch.nn.BatchNorm2d(5).double().eval(), torch.nn.BatchNorm2d(6).double().eval()
    trained_like_(torch.nn.Sequential(conv, bn, bn_before))
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    w, b = conv.weight, conv.bias
    if with_bn_before:
        w, b = fold_bn_into_1x1(bn_before, w, b)
    w, b = fold_weight_bn(w, b, bn)
    want = bn(conv(bn_before(x) if with_bn_before else x))
    torch.testing.assert_close(F.conv2d(x, w, b), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("discard", [False, True])
def test_folded_eval_matches_float64_reference(device, channels_last, discard):
    ref, net = _pair(device, discard_mbconv_input_bn=discard)
    x = _x(device=device, channels_last=channels_last)
    with torch.no_grad():
        got = net(x)
        want = ref(x.double().cpu())
    assert rel_err(got, want) < 2e-5, f"folded eval logits differ: {rel_err(got, want):.3e}"
    assert any(isinstance(m, FusedMBConv) for m in net.modules())
    assert any(isinstance(m, FusedResidual) for m in net.modules())


def test_cpu_eval_takes_onednn_post_ops(monkeypatch):
    """Without autograd on float32 CPU tensors, the folded convolutions carry their activation and
    residual add as oneDNN post-ops, a Residual's 3x3 conv2 goes through the Winograd op (with its add
    and activation) where it applies, and an MBConv is one block op (``cpu_eval``) where the extension
    is built; every block takes exactly its path, and the result is still the float64 reference's."""
    from yyfast import cpu_fusion
    from yyfast.cpu_eval import mbconv_op, stem_conv, winograd

    if not cpu_fusion.available():
        pytest.skip(f"oneDNN fused convolutions unavailable here: {cpu_fusion._STATE['reason']}")
    calls = {"act": 0, "add": 0, "block": 0, "winograd": 0, "stem": 0}
    for module, name, key in ((cpu_fusion, "conv_act_onednn", "act"), (cpu_fusion, "conv_add_onednn", "add"),
                              (mbconv_op, "run", "block"), (winograd, "conv_with", "winograd"),
                              (stem_conv, "run", "stem")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _key=key, **k: (
            calls.__setitem__(_key, calls[_key] + 1), _real(*a, **k))[1])
    ref, net = _pair()
    x = _x()
    with torch.no_grad():
        err = rel_err(net(x), ref(x.double()))
    residuals = [m for m in net.modules() if isinstance(m, FusedResidual)]
    n_mb = sum(isinstance(m, FusedMBConv) for m in net.modules())
    n_block = n_mb if mbconv_op.available() else 0
    n_wino = sum(winograd.applies(m.conv2) for m in residuals) if winograd.available() else 0
    # a stem (few input channels) or the strided single-path Residual, with Winograd's conv2: conv1 and the
    # shortcut in one stem_conv call
    n_stem = sum(winograd.applies(m.conv2) and m._stem_applies() for m in residuals) if winograd.available() else 0
    assert calls == {"act": len(residuals) - n_stem + n_mb - n_block, "add": len(residuals) - n_wino + n_mb - n_block,
                     "block": n_block, "winograd": n_wino, "stem": n_stem}, calls
    assert n_stem == (3 if stem_conv.available() and winograd.available() else 0)
    assert err < 2e-5, f"fused eval logits differ: {err:.3e}"


def test_fold_cache_sees_every_change():
    """The cached folded weights follow in-place updates (optimiser steps, running statistics,
    load_state_dict): each eval after a change matches a reference given the same change."""
    ref, net = _pair()
    x = _x()
    with torch.no_grad():
        net(x)  # fills the cache
        for t in list(net.state_dict().values())[::7]:
            if t.is_floating_point():
                t.mul_(1.1).add_(0.01)  # the state_dict tensors alias the model's
        ref.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
        err = rel_err(net(x), ref(x.double()))
        assert err < 2e-5, f"after in-place changes: {err:.3e}"
        other = trained_like_(ReferenceYYNet(yyfast.get_config(MODEL)), seed=3).eval()
        net.load_state_dict(other.state_dict())
        err = rel_err(net(x), other.double()(x.double()))
        assert err < 2e-5, f"after load_state_dict: {err:.3e}"


def test_eval_with_autograd_gives_reference_gradients():
    """Eval mode with autograd on (saliency maps, adversarial inputs): the fold is differentiated
    through, so the input and every parameter get the reference's gradients."""
    ref, net = _pair()
    ref = ref.float()
    x = _x(n=2)
    xs = [x.clone().requires_grad_(True), x.clone().requires_grad_(True)]
    for model, xi in zip((ref, net), xs):
        model.zero_grad(set_to_none=True)
        (model(xi) ** 2).sum().backward()
    assert rel_err(xs[1].grad, xs[0].grad) < 1e-4
    ref_grads = dict(ref.named_parameters())
    for name, p in net.named_parameters():
        g_ref = ref_grads[name].grad
        if g_ref is None:
            assert p.grad is None or p.grad.abs().max() == 0, name
            continue
        assert rel_err(p.grad, g_ref) < 1e-4, f"{name}: {rel_err(p.grad, g_ref):.3e}"


def test_training_mode_is_unchanged():
    """Training uses the blocks' own BatchNorms (batch statistics, running-stat updates)."""
    ref, net = _pair()
    ref, net = ref.float().train(), net.train()
    x = _x(n=4)
    out_ref, out = ref(x), net(x)
    assert rel_err(out, out_ref) < 1e-4
    for (name, b), b_ref in zip(net.named_buffers(), ref.buffers()):
        if b.is_floating_point():
            assert rel_err(b, b_ref) < 1e-4, name


def test_reference_backend_does_not_fold():
    ref, net = _pair()
    net.set_backend("reference")
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: calls.append(m) if isinstance(m, torch.nn.BatchNorm2d) else None)
    try:
        with torch.no_grad():
            net(_x(n=1))
    finally:
        handle.remove()
    assert len(calls) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_compiled_eval_matches_eager():
    """The eval model (fold + fused ops) compiles as one graph and matches eager."""
    _, net = _pair()
    x = _x(n=2)
    compiled = torch.compile(copy.deepcopy(net), fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("yin_input", ["mean", "red"])
def test_yin_branch_keeps_channels_last(yin_input):
    """A channels_last input keeps every 4-D activation of both branches in channels_last (the
    one-channel Yin input has ambiguous strides that would otherwise read as NCHW); NCHW stays NCHW.
    (The SE convolutions see 1x1 maps, whose layout is ambiguous, so they are not counted.)"""
    net = ReferenceYYNet(yyfast.get_config(MODEL, yin_input=yin_input)).eval()
    for channels_last in (True, False):
        seen = []
        hooks = [m.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o)) for m in net.yin.modules()
                 if isinstance(m, torch.nn.Conv2d)]
        with torch.no_grad():
            net(_x(n=2, channels_last=channels_last))
        for h in hooks:
            h.remove()
        want = torch.channels_last if channels_last else torch.contiguous_format
        formats = {torch._prims_common.suggest_memory_format(o) for o in seen if o.shape[2] * o.shape[3] > 1}
        assert formats == {want}, (channels_last, formats)
