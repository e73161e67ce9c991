"""The fast graph of optimize_for_inference on float32 CPU tensors: which ops it runs (the ones the
speed work chose), and that every path still equals the float64 eval reference on awkward shapes."""
import pytest
import torch

from helpers import rel_err
from inference_helpers import float64_reference, one_thread, trained_like_
from yyfast import cpu_fusion
from yyfast.inference import optimize_for_inference
from yyfast.reference_model import ReferenceYYNet
import yyfast

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)
needs_onednn = pytest.mark.skipif(not cpu_fusion.available(), reason="oneDNN's fused convolutions are not usable here")


def _model(options, seed=0):
    return trained_like_(ReferenceYYNet(yyfast.get_config("yynet_small_16", **options)), seed).eval()


def _cpu_ops(fn) -> set:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@needs_onednn
@pytest.mark.parametrize("batch", [1, 3])
def test_every_convolution_goes_through_onednn(batch):
    """The 1x1 shortcuts (stems, stride-2 blocks) too: eager PyTorch runs those at batch < 16 as
    ``_slow_conv2d_forward`` (a bias copy, then a GEMM), slower than oneDNN here."""
    fast = optimize_for_inference(_model({}))
    x = torch.randn(batch, 3, 32, 32)
    ops = _cpu_ops(lambda: fast(x))
    # oneDNN from Python, or the whole forward in one call (its stems: yyfast::stem_conv_eval)
    assert {"mkldnn::_convolution_pointwise", "yyfast::yynet_eval"} & ops, sorted(ops)
    assert not {"aten::_slow_conv2d_forward", "aten::thnn_conv2d", "aten::mkldnn_convolution"} & ops, sorted(ops)


@pytest.mark.parametrize("options", [{}, {"act": "silu", "se_gate": "hardsigmoid", "fusion": "mul"}],
                         ids=["gelu-sigmoid", "silu-hardsigmoid"])
@pytest.mark.parametrize("batch,height,width,channels_last", [(1, 33, 31, True), (3, 17, 9, False),
                                                             (17, 12, 15, True)])
def test_fast_graph_awkward_shapes_match_float64(options, batch, height, width, channels_last):
    model = _model(options)
    fast = optimize_for_inference(model)
    x = torch.randn(batch, 3, height, width)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    ref = float64_reference(model, x)
    for _ in range(2):  # a second call reuses whatever the first one cached
        assert rel_err(fast(x), ref) < 1e-5


def test_block_hooks_still_fire_and_blocks_with_hooks_agree():
    """The fast graph calls the blocks' oneDNN paths directly (no nn.Module call machinery); a block
    with a forward hook goes through its module call instead, with the same result."""
    fast = optimize_for_inference(_model({}))
    x = torch.randn(2, 3, 32, 32)
    plain = fast(x)
    seen = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append(type(m).__name__)) for b in fast.yin]
    try:
        hooked = fast(x)
    finally:
        for h in hooks:
            h.remove()
    assert seen == [type(b).__name__ for b in fast.yin]
    assert rel_err(hooked, plain) < 1e-6


@pytest.mark.parametrize("seed", range(4))
def test_weight_edits_after_a_forward_are_seen(seed):
    """The fast graph prepares weights once (the block op's packing, Winograd's transform, the bound
    per-block calls); any edit of any parameter afterwards (in place, through ``.data``, or a new
    tensor) must show in the next output. Random parameters and edit kinds, each checked against the
    plain graph (standard ops reading the parameters directly, nothing cached)."""
    import random

    rng = random.Random(seed)
    fast = optimize_for_inference(_model({}, seed=seed))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    params = list(fast.named_parameters())
    for step in range(6):
        fast(x)  # whatever is prepared, is prepared now
        name, p = rng.choice(params)
        how = rng.choice(["mul_", "data_copy_", "data_assign", "add_"])
        with torch.no_grad():
            if how == "mul_":
                p.mul_(-1.5)
            elif how == "data_copy_":
                p.data.copy_(torch.randn_like(p) * 0.1)
            elif how == "data_assign":
                p.data = p.data * 0.5 + 0.01
            else:
                p.add_(0.05)
        got = fast(x)
        fast.graph = "plain"
        want = fast(x)
        fast.graph = "fast"
        assert rel_err(got, want) < 1e-5, f"seed {seed} step {step}: {how} on {name} not seen"
