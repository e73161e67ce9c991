"""The folded model's whole forward in one C++ call (yyfast::yynet_eval / yynet_features_eval, float32 CPU):
bit for bit the block-by-block path it replaces, within 1e-5 of the float64 eval reference, on the
presets' geometries (stride-1 and stride-2 stems, every Yin input, act, gate and fusion); hooks still
route through the modules; the op's own argument checks."""
import pytest
import torch

from helpers import rel_err
from inference_helpers import float64_reference, trained_like_
from yyfast.inference import optimize_for_inference, whole_forward
from yyfast.reference_model import ReferenceYYNet
import yyfast

pytestmark = pytest.mark.skipif(not whole_forward.available(), reason="the yyfast extension (yynet_eval) is not built")

CONFIGS = [("yynet_small_16", {}),
           ("yynet_small_16", {"act": "silu", "se_gate": "hardsigmoid", "fusion": "mul", "yin_input": "red"}),
           ("yynet_imagenet", {"num_classes": 7})]  # stride-2 stems, red Yin, gate_sub fusion, hardsigmoid


def _model(name, options, seed=0):
    return trained_like_(ReferenceYYNet(yyfast.get_config(name, **options)), seed).eval()


def _block_by_block(fast, fn):
    """``fn()`` with the one-call plan withheld: the forward then calls each block's prepared ops from
    Python (the path a hook on a block also takes)."""
    fast._whole = lambda bound: None
    try:
        return fn()
    finally:
        del fast._whole


def _ops(fn) -> set:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("name,options", CONFIGS, ids=["small", "small-silu-red-mul", "imagenet"])
@pytest.mark.parametrize("threads", [1, 2])
def test_equals_the_block_by_block_path_and_float64(name, options, threads):
    model = _model(name, options)
    fast = optimize_for_inference(model)
    size = 48 if name == "yynet_imagenet" else 20
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for batch, height, width, cl in ((1, size, size, True), (3, size - 3, size + 5, False)):
            x = torch.randn(batch, 3, height, width)
            x = x.contiguous(memory_format=torch.channels_last) if cl else x
            assert "yyfast::yynet_eval" in _ops(lambda x=x: fast(x))
            logits = fast(x)
            features = fast.forward_features(x)
            assert torch.equal(logits, _block_by_block(fast, lambda x=x: fast(x)))
            assert torch.equal(features, _block_by_block(fast, lambda x=x: fast.forward_features(x)))
            assert rel_err(logits, float64_reference(model, x)) < 1e-5, (batch, height, width)
    finally:
        torch.set_num_threads(before)


def test_hooks_on_a_block_or_the_head_fire_and_agree():
    fast = optimize_for_inference(_model("yynet_small_16", {}))
    x = torch.randn(2, 3, 16, 16)
    plain = fast(x)
    seen = []
    for module in (fast.fc, fast.yin[1]):  # the head in Python; the blocks one by one, that one by its module
        hook = module.register_forward_hook(lambda m, i, o: seen.append(type(m).__name__))
        try:
            hooked = fast(x)
        finally:
            hook.remove()
        assert rel_err(hooked, plain) < 1e-6
    assert seen == ["Linear", "FoldedMBConv"]


def test_a_replaced_block_is_seen():
    """The plan holds the blocks' prepared weights: swapping a block for another (other weights) must
    rebuild it, not reuse the old one's."""
    model_a, model_b = _model("yynet_small_16", {}, seed=0), _model("yynet_small_16", {}, seed=1)
    fast_a, fast_b = optimize_for_inference(model_a), optimize_for_inference(model_b)
    x = torch.randn(1, 3, 16, 16)
    fast_a(x)
    fast_a.yin[2] = fast_b.yin[2]
    fast_a.yin[3].span.fc1 = fast_b.yin[3].span.fc1
    expected = _block_by_block(fast_a, lambda: fast_a(x))
    assert torch.equal(fast_a(x), expected)


@pytest.mark.parametrize("change,match", [
    (lambda p: p._replace(plan=p.plan[:-1]), "does not match its block counts"),
    (lambda p: p._replace(weights=p.weights[:-1]), "the plan's blocks take"),
    (lambda p: p._replace(plan=[5] + p.plan[1:]), r"plan\[0\] \(the Yin input\) must be 0"),
    (lambda p: p._replace(plan=p.plan[:4] + [7] + p.plan[5:]), "is not a Residual \\(0\\) or MBConv \\(1\\)"),
    (lambda p: p._replace(weights=[None] + p.weights[1:]), r"weights\[0\] must be a tensor, got None"),
    (lambda p: p._replace(fusion=p.fusion[:2]), "fusion must hold \\(c1, c2, c3\\)"),
    (lambda p: p._replace(act="relu"), "act must be 'gelu' or 'silu'"),
])
def test_bad_plans_are_clear_errors(change, match):
    fast = optimize_for_inference(_model("yynet_small_16", {}))
    x = torch.randn(1, 3, 16, 16)
    fast(x)
    plan = fast._bound()["whole"]
    with pytest.raises(RuntimeError, match=match):
        whole_forward.run(change(plan), x)


def test_bad_inputs_and_head_weights_are_clear_errors():
    fast = optimize_for_inference(_model("yynet_small_16", {}))
    x = torch.randn(1, 3, 16, 16)
    fast(x)
    plan = fast._bound()["whole"]
    with pytest.raises(RuntimeError, match="x must be a 4-d float32 CPU tensor"):
        whole_forward.run(plan, x.double())
    with pytest.raises(RuntimeError, match="fc_weight must be"):
        whole_forward.run_logits(plan, x, fast.classifier, fast.classifier)


def test_the_weight_check_runs_once_a_forward_on_every_path():
    """The content check of the parameters (~0.3 ms at batch 1) once a forward, also where the one call
    does not run (a hooked block, a head of ``num_classes=0``) and the forward falls back."""
    fast = optimize_for_inference(_model("yynet_small_16", {}))
    x = torch.randn(1, 3, 16, 16)
    real, calls = fast._bound, []
    fast._bound = lambda: calls.append(1) or real()
    try:
        fast(x)
        hook = fast.yin[1].register_forward_hook(lambda m, i, o: None)
        fast(x)
        hook.remove()
        fast.classifier = torch.nn.Identity()
        fast(x)
    finally:
        del fast._bound
    assert calls == [1, 1, 1]


def _head_float64(f, w1, b1, w2, b2, act, pre_logits):
    actf = {"gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu}[act]
    h = actf(f.double().mean((2, 3)) @ w1.double().t() + b1.double())
    return h if pre_logits else h @ w2.double().t() + b2.double()


@pytest.mark.parametrize("act", ["gelu", "silu"])
@pytest.mark.parametrize("pre_logits", [False, True])
def test_head_op_matches_float64_any_layout_and_batch(act, pre_logits):
    """yyfast::head_eval (the head of the one-call forward and of forward_head on float32 CPU): mean over
    the image, fc, act, classifier, on features in either layout, weights in any strides (a transposed
    view, a column slice), batches on both sides of its parallel grain."""
    gen = torch.Generator().manual_seed(5)
    for batch, c, height, width, feats, classes in ((1, 64, 4, 4, 40, 10), (37, 19, 3, 5, 7, 3), (2, 8, 1, 1, 5, 2)):
        f = torch.randn(batch, c, height, width, generator=gen)
        w1 = torch.randn(c, feats, generator=gen).t()                 # transposed view (F, C)
        b1 = torch.randn(feats * 2, generator=gen)[::2]                # strided
        w2 = torch.randn(classes, feats + 3, generator=gen)[:, 1:feats + 1]  # a column slice
        b2 = torch.randn(classes, generator=gen)
        ref = _head_float64(f, w1, b1, w2, b2, act, pre_logits)
        for layout in (torch.contiguous_format, torch.channels_last):
            out = torch.ops.yyfast.head_eval(f.contiguous(memory_format=layout), w1, b1, w2, b2, act, pre_logits)
            assert out.shape == ref.shape and out.dtype == torch.float32
            assert rel_err(out, ref) < 1e-6, (batch, c, layout)


def test_head_op_and_forward_head_agree_and_hooks_still_fire():
    """forward_head takes the op on float32 CPU (the block-by-block path's logits are the one-call
    forward's bit for bit: test above); with a hook on fc it runs the modules and the hook fires."""
    fast = optimize_for_inference(_model("yynet_small_16", {}))
    f = torch.randn(3, fast.fc.in_features, 2, 2)
    out = fast.forward_head(f)
    assert torch.equal(out, torch.ops.yyfast.head_eval(f, fast.fc.weight, fast.fc.bias, fast.classifier.weight,
                                                       fast.classifier.bias, fast.config.act, False))
    assert torch.equal(fast.forward_head(f, pre_logits=True),
                       torch.ops.yyfast.head_eval(f, fast.fc.weight, fast.fc.bias, fast.classifier.weight,
                                                  fast.classifier.bias, fast.config.act, True))
    seen = []
    hook = fast.fc.register_forward_hook(lambda m, i, o: seen.append(1))
    try:
        hooked = fast.forward_head(f)
    finally:
        hook.remove()
    assert seen == [1] and rel_err(hooked, out) < 1e-6


@pytest.mark.parametrize("change,match", [
    (lambda a: [a[0][0]] + a[1:], "features must be a 4-d float32 CPU tensor"),
    (lambda a: [a[0].double()] + a[1:], "features must be a 4-d float32 CPU tensor"),
    (lambda a: [a[0][:, :, :0]] + a[1:], "non-empty image"),
    (lambda a: a[:1] + [a[1].double()] + a[2:], "must be float32 CPU tensors"),
    (lambda a: a[:1] + [a[1][:, :-1]] + a[2:], "fc_weight must be"),
    (lambda a: a[:3] + [a[3][:, :-1]] + a[4:], "cls_weight must be"),
    (lambda a: a[:5] + ["relu"] + a[6:], "act must be 'gelu' or 'silu'"),
])
def test_head_op_rejects_bad_arguments(change, match):
    args = [torch.randn(2, 8, 3, 3), torch.randn(5, 8), torch.randn(5), torch.randn(3, 5), torch.randn(3), "gelu",
            False]
    with pytest.raises(RuntimeError, match=match):
        torch.ops.yyfast.head_eval(*change(args))
