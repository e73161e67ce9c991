"""optimize_for_inference: every BatchNorm folded, outputs equal to the eval-mode reference."""
import copy

import pytest
import torch
from torch import nn

import yyfast
from helpers import rel_err
from inference_helpers import float64_reference, one_thread, trained_like_
from yyfast.config import YYNetConfig
from yyfast.inference import (CUDAGraphForward, FoldedMBConv, InferenceYYNet, fold_bn_into_1x1, fold_conv_bn,
                              optimize_for_inference)
from yyfast.reference_model import ReferenceYYNet

HAS_GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU; none is visible")

#: (preset, options, input size): every preset (ImageNet at 64x64 to stay fast) and every option.
CASES = [
    ("yynet_small_16", {}, 32),
    ("yynet_small_16", {"act": "silu", "fusion": "mul"}, 32),
    ("yynet_small_16", {"se_gate": "hardsigmoid", "yin_input": "red", "fusion": "gate"}, 32),
    ("yynet_small_16", {"fusion": "mul_add", "act": "silu", "se_gate": "hardsigmoid"}, 32),
    ("yynet_small_16", {"fusion": "gate_add"}, 32),
    ("yynet_small_32", {"fusion": "gate_sub", "yin_input": "red"}, 32),
    ("yynet_small_64", {}, 32),
    ("yynet_imagenet", {}, 64),
    ("yynet_imagenet", {"discard_mbconv_input_bn": False, "act": "silu"}, 64),
]


_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _model(name, options, seed=0, cls=ReferenceYYNet):
    cfg = yyfast.get_config(name, **options)
    model = cls(cfg) if cls is ReferenceYYNet else cls(cfg, backend="reference")
    return trained_like_(model, seed).eval()


# -- the folding algebra ------------------------------------------------------------------------------
def test_fold_conv_bn_matches_bn_of_conv():
    conv = nn.Conv2d(5, 7, 3, 2, 1, bias=True).double()
    bn = trained_like_(nn.Sequential(nn.BatchNorm2d(7))).double().eval()[0]
    x = torch.randn(2, 5, 9, 7, dtype=torch.float64)
    w, b = fold_conv_bn(conv, bn)
    assert rel_err(nn.functional.conv2d(x, w, b, 2, 1), bn(conv(x))) < 1e-12


def test_fold_input_bn_into_1x1_is_exact():
    bn = trained_like_(nn.Sequential(nn.BatchNorm2d(6))).double().eval()[0]
    w = torch.randn(11, 6, 1, 1, dtype=torch.float64)
    x = torch.randn(3, 6, 5, 4, dtype=torch.float64)
    w2, b2 = fold_bn_into_1x1(bn, w, None)
    assert rel_err(nn.functional.conv2d(x, w2, b2), nn.functional.conv2d(bn(x), w)) < 1e-12
    with pytest.raises(ValueError, match="1x1"):
        fold_bn_into_1x1(bn, torch.randn(11, 6, 3, 3), None)


# -- the whole network on the CPU --------------------------------------------------------------------
@pytest.mark.parametrize("name,options,size", CASES, ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}"
                                                         for c in CASES])
def test_folded_model_matches_reference_cpu(name, options, size):
    model = _model(name, options)
    x = torch.randn(2, 3, size, size)
    ref = float64_reference(model, x)
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()), "a BatchNorm was left unfolded"
    assert rel_err(fast(x), ref) < 1e-5, "fast graph (channels_last, in-place, SE folded into project)"
    fast.graph = "plain"
    assert rel_err(fast(x), ref) < 1e-5, "plain graph"
    nchw = optimize_for_inference(model, channels_last=False)
    assert rel_err(nchw(x), ref) < 1e-5, "fast graph, NCHW"


def test_yynet_train_mode_input_uses_running_statistics_and_is_not_modified():
    model = _model("yynet_small_16", {"act": "silu"}, cls=yyfast.YYNet).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, 32, 32)
    folded = optimize_for_inference(model, backend="reference")
    assert model.training, "optimize_for_inference changed the model's mode"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"optimize_for_inference changed {k}"
    assert rel_err(folded(x), float64_reference(model, x)) < 1e-5


def test_bfloat16_cpu():
    model = _model("yynet_small_16", {})
    x = torch.randn(2, 3, 32, 32)
    folded = optimize_for_inference(model, dtype=torch.bfloat16)
    out = folded(x)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, float64_reference(model, x)) < 1e-2


def test_eval_only_guard():
    folded = optimize_for_inference(_model("yynet_small_16", {}))
    assert not folded.training
    folded.eval()  # allowed: it is a no-op
    with pytest.raises(RuntimeError, match="eval-only"):
        folded.train()
    with pytest.raises(RuntimeError, match="eval-only"):
        nn.Sequential(folded).train()  # a parent module's train() reaches it too
    assert all(not p.requires_grad for p in folded.parameters())


def test_bad_arguments_raise_value_errors_naming_them():
    model = _model("yynet_small_16", {})
    with pytest.raises(ValueError, match="model"):
        optimize_for_inference(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="backend"):
        optimize_for_inference(model, backend="fast")
    with pytest.raises(ValueError, match="dtype"):
        optimize_for_inference(model, dtype=torch.int32)
    with pytest.raises(ValueError, match="batch_size"):
        optimize_for_inference(model, batch_size=0)
    with pytest.raises(ValueError, match="x must have shape"):
        optimize_for_inference(model)(torch.randn(2, 1, 32, 32))


# -- the fused-op span ---------------------------------------------------------------------------------
def test_fused_span_with_identity_batchnorm_equals_plain_span():
    """The fused path passes the folded weights with an identity BN; through the reference op it must
    give the plain folded span's result (float64, so only the plumbing is tested)."""
    folded = optimize_for_inference(_model("yynet_small_16", {"act": "silu", "se_gate": "hardsigmoid"}),
                                    dtype=torch.float64, channels_last=False)
    block = next(m for m in folded.modules() if isinstance(m, FoldedMBConv) and m.span.stride == 2)
    h = torch.randn(2, block.span.conv.in_channels, 9, 7, dtype=torch.float64)
    assert rel_err(block.span.fused(h, "reference"), block.span(h)) < 1e-12


def _cpu_fused_backends():
    report = yyfast.backends()
    params = []
    for name in ("triton", "cuda"):
        ok = "cpu" in report[name]["devices"]
        why = f"backend {name!r} does not run on CPU tensors here: {report[name]['reason']}"
        params.append(pytest.param(name, marks=pytest.mark.skipif(not ok, reason=why)))
    return params


@pytest.mark.parametrize("backend", _cpu_fused_backends())
def test_folded_model_through_fused_ops_cpu(backend):
    """The spans and the fusion run through yyfast.ops (Triton interpreter / C++ CPU kernels)."""
    cfg = YYNetConfig(name="tiny", yy_width=8, yy_mbconvs=1, sp_mbconvs=1, head_width=8, act="gelu",
                      se_gate="hardsigmoid", fusion="gate_sub")  # one stride-2 and one stride-1 span a branch
    model = trained_like_(ReferenceYYNet(cfg)).eval()
    x = torch.randn(2, 3, 8, 6)
    folded = optimize_for_inference(model, backend=backend)
    assert folded.span_backend(x.device) == backend
    try:
        out = folded(x)
    except NotImplementedError as exc:
        pytest.skip(f"the {backend} dw_bn_act_se kernels are not written yet ({exc})")
    assert rel_err(out, float64_reference(model, x)) < 1e-5


# -- the GPU ----------------------------------------------------------------------------------------------
@needs_gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 1e-2)])
@pytest.mark.parametrize("name,options,size", [CASES[0], CASES[2], CASES[7]])
def test_folded_model_matches_reference_cuda(name, options, size, dtype, tol):
    model = _model(name, options)
    x = torch.randn(4, 3, size, size)
    ref = float64_reference(model, x)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # a float32 check needs fp32
    try:
        for backend in ("auto", "reference"):
            folded = optimize_for_inference(copy.deepcopy(model).cuda(), dtype=dtype, backend=backend)
            out = folded(x.cuda())
            assert out.dtype == dtype and out.is_cuda
            assert rel_err(out, ref) < tol, f"backend {backend} ({folded.span_backend(out.device)})"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


@needs_gpu
def test_cuda_graph_replay_and_eager_fallback():
    model = _model("yynet_small_16", {}).cuda()
    graphed = optimize_for_inference(model, dtype=torch.bfloat16, cuda_graph=True, batch_size=4)
    assert isinstance(graphed, CUDAGraphForward)
    eager = graphed.model
    x4, x3 = torch.randn(4, 3, 32, 32, device="cuda"), torch.randn(3, 3, 32, 32, device="cuda")
    first = graphed(x4)                       # captures
    assert graphed.captured_shape == (4, 3, 32, 32)
    again = graphed(x4 * 2)                   # replays with new data
    assert rel_err(again, eager(x4 * 2)) < 1e-2 and rel_err(first, eager(x4)) < 1e-2
    assert again.data_ptr() != graphed(x4).data_ptr(), "outputs must be clones, not the static buffer"
    assert rel_err(graphed(x3), eager(x3)) < 1e-2  # other batch size: eager
    with pytest.raises(RuntimeError, match="eval-only"):
        graphed.train()
    assert isinstance(eager, InferenceYYNet)


# -- the whole MBConv block as one C++ call (yyfast::mbconv_eval, float32 CPU) --------------------------
needs_block_op = pytest.mark.skipif(not __import__("yyfast.inference.block_plan").inference.block_plan.available(),
                                    reason="the yyfast._C extension with mbconv_eval is not built")


def _block_calls(monkeypatch):
    """A list that grows by one for every MBConv block the block op computes: each call from Python, and
    each MBConv step of a whole-forward call (yyfast::yynet_eval calls the op from C++), from Python or
    through yyfast._C.fast_forward."""
    from yyfast.cpu_eval import mbconv_op
    from yyfast.inference import whole_forward

    calls = []
    real = mbconv_op.run
    monkeypatch.setattr(mbconv_op, "run", lambda *a: calls.append(1) or real(*a))
    def counted(real_whole):
        def run(plan, *args):
            calls.extend(1 for kind in plan.plan[4::4] if kind == 1)  # 4 header ints, then 4 per block
            return real_whole(plan, *args)
        return run
    for name in ("run", "run_logits"):
        monkeypatch.setattr(whole_forward, name, counted(getattr(whole_forward, name)))
    if whole_forward.available() and hasattr(whole_forward.extension(), "fast_forward"):
        real_fast = whole_forward.extension().fast_forward

        def fast_forward(model, record, x):
            out = real_fast(model, record, x)
            if out is not None:
                calls.extend(1 for kind in model.__dict__["_fast_forward"].plan.plan[4::4] if kind == 1)
            return out
        monkeypatch.setattr(whole_forward.extension(), "fast_forward", fast_forward)
    return calls


@needs_block_op
@pytest.mark.parametrize("channels_last", [True, False])
def test_block_op_matches_float64_blocks_awkward_shapes(channels_last):
    from yyfast.inference import block_plan

    model = _model("yynet_small_16", {"act": "silu", "se_gate": "hardsigmoid"})
    fast = optimize_for_inference(model)
    blocks = [b for b in fast.modules() if isinstance(b, FoldedMBConv)]
    assert {b.span.stride for b in blocks} == {1, 2}
    for block in blocks:
        cin = block.expand.in_channels
        x = torch.randn(3, cin, 7, 5)  # odd sizes: every border case of the stride-2 taps
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        ref = copy.deepcopy(block).double()(x.double(), "plain")
        res = x if isinstance(block.shortcut, nn.Identity) else block.shortcut(x)
        with torch.no_grad():
            out = block_plan.run_block(block, x, lambda _x, _res=res: _res)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert rel_err(out, ref) < 1e-5, f"stride {block.span.stride}"


@needs_block_op
@pytest.mark.parametrize("act,gate", [("gelu", "sigmoid"), ("silu", "hardsigmoid")])
def test_block_op_paths_match_float64_every_batch_layout_and_thread_count(act, gate):
    """Both ways the op runs a batch: whole samples per thread, and each sample's rows split over the
    threads (batches that do not fill the threads: 1 and 3 on 2 or 3 threads; 3 threads give uneven
    row chunks). Odd sizes put chunk borders, tile borders and the stride-2 taps' borders at every
    offset; a 1x1 image has fewer rows than threads. Element-wise within 1e-5 of float64."""
    from yyfast.inference import block_plan

    model = _model("yynet_small_16", {"act": act, "se_gate": gate})
    blocks = [b for b in optimize_for_inference(model).modules() if isinstance(b, FoldedMBConv)]
    picked = [next(b for b in blocks if b.span.stride == s) for s in (1, 2)]
    threads = torch.get_num_threads()
    try:
        for block in picked:
            ref_block = copy.deepcopy(block).double()
            for nthreads, batch, (height, width), cl in ((2, 1, (13, 9), True), (2, 3, (7, 5), False),
                                                         (3, 3, (11, 6), True), (3, 1, (9, 9), False),
                                                         (2, 17, (5, 7), True), (2, 1, (1, 1), False),
                                                         (1, 3, (6, 9), True)):
                torch.set_num_threads(nthreads)
                x = torch.randn(batch, block.expand.in_channels, height, width)
                x = x.contiguous(memory_format=torch.channels_last) if cl else x
                ref = ref_block(x.double(), "plain")
                with torch.no_grad():
                    res = x if isinstance(block.shortcut, nn.Identity) else block.shortcut(x)
                    out = block_plan.run_block(block, x, lambda _x, _res=res: _res)
                err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
                assert err < 1e-5, (block.span.stride, nthreads, batch, height, width, cl, err)
    finally:
        torch.set_num_threads(threads)


def _cpu_isas():
    """The span kernels' builds this CPU runs (a placeholder where the extension is not built: skipped)."""
    from yyfast.inference import block_plan

    return __import__("yyfast._C")._C.cpu_isas() if block_plan.available() else ["none"]


def _mbconv_float64(x, res, we, be, wd, bd, w1t, b1, w2t, b2, wp, bp, stride, act, gate, wsc=None):
    """The op's contract in float64, from its packed weights (block_plan's layouts); ``wsc`` (Cin, Cout):
    the op adds the shortcut ``pool(x) @ wsc`` itself (pool: MaxPool(3, stride, 1) at stride 2)."""
    if wsc is not None:
        src = x.double() if stride == 1 else nn.functional.max_pool2d(x.double(), 3, stride, 1)
        res = (src.permute(0, 2, 3, 1) @ wsc.double()).permute(0, 3, 1, 2)
    f = nn.functional
    actf = {"gelu": f.gelu, "silu": f.silu}[act]
    x = x.double().permute(0, 2, 3, 1)                                           # (N, H, W, Cin)
    h = actf(x @ we.double() + be.double()).permute(0, 3, 1, 2)                  # (N, Ce, H, W)
    ce = be.numel()
    z = actf(f.conv2d(h, wd.double().t().reshape(ce, 1, 3, 3), bd.double(), stride, 1, groups=ce))
    p = z.mean((2, 3))
    s = {"sigmoid": torch.sigmoid, "hardsigmoid": f.hardsigmoid}[gate](actf(p @ w1t.double() + b1.double())
                                                                        @ w2t.double() + b2.double())
    out = (z * s[:, :, None, None]).permute(0, 2, 3, 1) @ wp.double() + bp.double()
    out = out.permute(0, 3, 1, 2)
    return out if res is None else out + res.double()


@needs_block_op
@pytest.mark.parametrize("channels", [(5, 20, 3, 7), (5, 48, 3, 16), (6, 64, 4, 80)], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("isa", _cpu_isas())
def test_block_op_each_isa_channels_off_the_vector_width(isa, layout, channels):
    """Channel counts that leave a tail after every vector width (Ce = 20: 16 + 4, 8 + 8 + 4: MKL's
    GEMMs), and multiples of 8 or 16 that the op's own GEMM takes (48 and 80 leave a column panel's
    remainder in every build, 16-wide panels in the 8-lane builds; the image sizes leave a row tile's
    remainder), with each build of the span kernels, both parallel paths (batch 1 and 3 split rows over 2
    threads, 4 does not), both strides, with and without a residual, and with the shortcut computed in
    the op (a 1x1 conv at stride 1, max pool + 1x1 conv at stride 2); every weight matrix contiguous, or
    the transpose of a contiguous one (how mbconv_op.pack passes the model's own parameters)."""
    import yyfast._C as ext

    gen = torch.Generator().manual_seed(3)
    cin, ce, hid, cout = channels
    shapes = [(cin, ce), (ce,), (9, ce), (ce,), (ce, hid), (hid,), (hid, ce), (ce,), (ce, cout), (cout,)]
    w = [0.4 * torch.randn(sh, generator=gen) for sh in shapes]
    lay = (lambda t: t.t().contiguous().t() if t.dim() == 2 else t) if layout == "transposed" else (lambda t: t)
    w = [lay(t) for t in w]
    assert layout == "contiguous" or not w[0].is_contiguous()
    prev, threads = ext.cpu_isa(), torch.get_num_threads()
    ext.set_cpu_isa(isa)
    torch.set_num_threads(2)
    try:
        wsc = lay(0.4 * torch.randn(cin, cout, generator=gen))
        for batch, (height, width), stride, act, gate, own in ((1, (9, 7), 1, "gelu", "sigmoid", False),
                                                               (3, (6, 11), 2, "silu", "hardsigmoid", False),
                                                               (4, (5, 5), 1, "silu", "sigmoid", False),
                                                               (1, (9, 7), 2, "gelu", "sigmoid", True),
                                                               (3, (6, 11), 1, "silu", "hardsigmoid", True),
                                                               (4, (5, 5), 2, "silu", "sigmoid", True)):
            x = torch.randn(batch, cin, height, width, generator=gen).contiguous(memory_format=torch.channels_last)
            ho, wo = (height - 1) // stride + 1, (width - 1) // stride + 1
            res = torch.randn(batch, cout, ho, wo, generator=gen) if stride == 1 and not own else None
            shortcut = wsc if own else None
            out = torch.ops.yyfast.mbconv_eval(x, res, *w, stride, act, gate, shortcut)
            ref = _mbconv_float64(x, res, *w, stride, act, gate, shortcut)
            err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
            assert err < 1e-5, (isa, batch, height, width, stride, err)
    finally:
        ext.set_cpu_isa(prev)
        torch.set_num_threads(threads)


@needs_block_op
def test_block_op_model_batches_and_shape_changes_two_threads(monkeypatch):
    """Batch 1 and awkward batches, NCHW and channels_last, image sizes changing between calls (the
    per-thread buffers grow and are reused), with two intra-op threads; all against float64."""
    calls = _block_calls(monkeypatch)
    model = _model("yynet_small_16", {"fusion": "mul"})
    fast = optimize_for_inference(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for batch, size, cl in ((1, 32, True), (5, 16, False), (3, 40, True), (1, 8, False), (3, 32, False)):
            x = torch.randn(batch, 3, size, size)
            x = x.contiguous(memory_format=torch.channels_last) if cl else x
            assert rel_err(fast(x), float64_reference(model, x)) < 1e-5, (batch, size, cl)
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 5 * sum(isinstance(b, FoldedMBConv) for b in fast.modules()), "the block op did not run"


@needs_block_op
def test_block_op_concurrent_calls_from_python_threads():
    """Thread-safe: the op's scratch buffers are per OS thread; concurrent forwards agree with serial ones."""
    import threading

    model = _model("yynet_small_16", {})
    fast = optimize_for_inference(model)
    xs = [torch.randn(2, 3, s, s) for s in (32, 16, 24, 32)]
    serial = [fast(x) for x in xs]
    outs = [None] * len(xs)

    def work(k):
        for _ in range(3):
            outs[k] = fast(xs[k])
    workers = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for out, ref in zip(outs, serial):
        assert torch.equal(out, ref)


@needs_block_op
def test_block_op_repacks_weights_changed_in_place():
    model = _model("yynet_small_16", {})
    fast = optimize_for_inference(model)
    x = torch.randn(2, 3, 32, 32)
    before = fast(x)
    block = next(b for b in fast.modules() if isinstance(b, FoldedMBConv))
    with torch.no_grad():
        block.project.weight.mul_(0.5)
    after = fast(x)
    assert not torch.allclose(after, before)
    fast.graph = "plain"  # op by op, from the module weights themselves
    assert rel_err(after, fast(x)) < 1e-5


@needs_block_op
def test_block_op_rejects_bad_arguments():
    from yyfast.inference import block_plan

    block = next(b for b in optimize_for_inference(_model("yynet_small_16", {})).modules()
                 if isinstance(b, FoldedMBConv))
    x = torch.randn(2, block.expand.in_channels, 8, 8)
    w = block_plan.packed_weights(block)[:10]
    op = torch.ops.yyfast.mbconv_eval
    with pytest.raises(RuntimeError, match="x must be a 4-d float32"):
        op(x.double(), None, *w, 1, "gelu", "sigmoid")
    with pytest.raises(RuntimeError, match="expand_wt must have shape"):
        op(x[:, :-1], None, *w, 1, "gelu", "sigmoid")
    with pytest.raises(RuntimeError, match="stride must be 1 or 2"):
        op(x, None, *w, 3, "gelu", "sigmoid")
    with pytest.raises(RuntimeError, match="act must be 'gelu' or 'silu'"):
        op(x, None, *w, 1, "relu", "sigmoid")
    with pytest.raises(RuntimeError, match="residual must be"):
        op(x, torch.randn(2, 1, 8, 8), *w, 1, "gelu", "sigmoid")
    cout = w[9].numel()
    with pytest.raises(RuntimeError, match="shortcut_wt must have shape"):
        op(x, None, *w, 1, "gelu", "sigmoid", torch.randn(x.shape[1] + 1, cout))
    with pytest.raises(RuntimeError, match="expand_wt must be contiguous or the transpose of a contiguous tensor"):
        op(x, None, torch.randn(x.shape[1], 2 * w[1].numel())[:, ::2], *w[1:], 1, "gelu", "sigmoid")
    with pytest.raises(RuntimeError, match="give residual or shortcut_wt, not both"):
        op(x, torch.randn(2, cout, 8, 8), *w, 1, "gelu", "sigmoid", torch.randn(x.shape[1], cout))


@needs_block_op
def test_folded_1x1_weights_stored_as_the_block_op_reads_them():
    """optimize_for_inference (float32, CPU) keeps each MBConv's 1x1 weights with their (Cout, Cin) matrix
    transposed in memory, so mbconv_op.pack's views are the row-major (Cin, Cout) the op's GEMMs read;
    the values, the outputs and a state_dict round trip are unchanged, and a weight put back in the
    usual layout gives the same outputs (the op transposes it itself)."""
    from yyfast.inference import block_plan

    model = _model("yynet_small_16", {})
    fast = optimize_for_inference(model)
    blocks = [b for b in fast.modules() if isinstance(b, FoldedMBConv)]
    assert blocks
    for block in blocks:
        for conv in (block.expand, block.project):
            out_ch, in_ch = conv.weight.shape[:2]
            assert conv.weight.stride()[:2] == (1, out_ch), conv.weight.stride()
        packed = block_plan.packed_weights(block)
        assert packed[0].is_contiguous() and packed[8].is_contiguous()
        assert packed[0].data_ptr() == block.expand.weight.data_ptr()
    x = torch.randn(2, 3, 32, 32)
    out = fast(x)
    assert rel_err(out, float64_reference(model, x)) < 1e-5
    again = optimize_for_inference(model)
    again.load_state_dict(fast.state_dict())
    assert torch.equal(again(x), out)
    for block in blocks:
        for conv in (block.expand, block.project):
            conv.weight.data = conv.weight.data.contiguous()
    assert torch.equal(fast(x), out)
    f64 = optimize_for_inference(model, dtype=torch.float64)
    assert next(b for b in f64.modules() if isinstance(b, FoldedMBConv)).expand.weight.is_contiguous()
