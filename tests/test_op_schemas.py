"""One contract per op: both backends register ``yyfast/ops/schemas.py``'s schemas and give outputs
of the same shapes, dtypes and strides (issue 18)."""
import pytest
import torch

from yyfast.ops import schemas
from op_checks import span_inputs


def _backend_module(backend):
    if backend == "cuda":
        pytest.importorskip("yyfast._C", reason="the yyfast._C extension is not built")
        from yyfast.ops import cuda_ops as module
    else:
        pytest.importorskip("triton", reason="Triton is not installed")
        from yyfast.ops import triton_ops as module
    return module


@pytest.mark.parametrize("backend", schemas.BACKENDS)
@pytest.mark.parametrize("op", list(schemas.SCHEMAS))
def test_registered_schema_is_the_shared_text(backend, op):
    """csrc/ops.cpp's m.def strings and the Triton custom ops are the text of schemas.py."""
    _backend_module(backend)
    for name, text in zip(schemas.op_names(op, backend), schemas.SCHEMAS[op]):
        registered = getattr(torch.ops.yyfast, name).default._schema
        assert str(registered) == str(torch._C.parse_schema(f"yyfast::{name}{text}"))


def test_op_names_reject_unknown_values():
    with pytest.raises(ValueError, match="op='conv'.*'dw_bn_act_se', 'yinyang_fuse'"):
        schemas.op_names("conv", "cuda")
    with pytest.raises(ValueError, match="backend='metal'.*'cuda', 'triton'"):
        schemas.op_names("dw_bn_act_se", "metal")


def _meta(tensors):
    return [(tuple(t.shape), t.dtype, t.stride()) for t in tensors]


def _layout(x, layout):
    """channels_last strides, built from NHWC storage: for one channel ``x.contiguous(channels_last)``
    would keep the NCHW strides (both layouts at once), ``(H*W, 1, W, 1)`` is what this gives."""
    nhwc = x.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format)
    return nhwc.permute(0, 3, 1, 2) if layout == "channels_last" else x


# (N, C, H, W), dtype, layout: one channel with channels_last strides is also plain contiguous; the
# C++ ops' suggest_memory_format calls it channels_last, so must every backend.
SPAN_CASES = [((2, 6, 5, 7), torch.float32, "channels_last"), ((2, 1, 5, 7), torch.float32, "channels_last"),
              ((2, 6, 5, 7), torch.float64, "nchw")]


@pytest.mark.parametrize("shape, dtype, layout", SPAN_CASES)
def test_span_backends_give_the_same_outputs(shape, dtype, layout):
    """Forward (y, mean, var, pooled) and backward: same shapes, dtypes and strides on both backends."""
    got = {}
    for backend in schemas.BACKENDS:
        _backend_module(backend)
        t = {k: v.to(dtype) for k, v in span_inputs(*shape).items()}
        t["x"] = _layout(t["x"], layout)
        args = (*t.values(), 2, 1e-5, True, "gelu", "sigmoid")
        fwd, bwd = (getattr(torch.ops.yyfast, n) for n in schemas.op_names("dw_bn_act_se", backend))
        y, mean, var, pooled = out = fwd(*args)
        grads = bwd(torch.ones_like(y), t["x"], t["dw_weight"], t["bn_weight"], t["bn_bias"], mean, var, pooled,
                    t["se_w1"], t["se_b1"], t["se_w2"], t["se_b2"], *args[10:])
        got[backend] = (_meta(out), _meta(grads))
    assert got["cuda"] == got["triton"]


@pytest.mark.parametrize("shape, layout", [((2, 3, 4, 5), "channels_last"), ((2, 1, 4, 5), "channels_last"),
                                           ((2, 3, 4, 5), "nchw")])
def test_fuse_backends_give_the_same_outputs(shape, layout):
    got = {}
    for backend in schemas.BACKENDS:
        _backend_module(backend)
        a = _layout(torch.randn(shape), layout)
        i = _layout(torch.randn(shape), layout)
        fwd, bwd = (getattr(torch.ops.yyfast, n) for n in schemas.op_names("yinyang_fuse", backend))
        got[backend] = (_meta([fwd(a, i, 1.0, 0.5, 0.25)]), _meta(bwd(torch.ones_like(a), a, i, 1.0, 0.5, 0.25)))
    assert got["cuda"] == got["triton"]


@pytest.mark.parametrize("backend", schemas.BACKENDS)
def test_shared_fakes_match_one_channel_channels_last(backend):
    """The shared fakes (registration.py) give the real strides where the layout is ambiguous."""
    _backend_module(backend)
    t = {k: v.float() for k, v in span_inputs(2, 1, 5, 7).items()}
    t["x"] = _layout(t["x"], "channels_last")
    span, _ = (getattr(torch.ops.yyfast, n).default for n in schemas.op_names("dw_bn_act_se", backend))
    fuse, _ = (getattr(torch.ops.yyfast, n).default for n in schemas.op_names("yinyang_fuse", backend))
    torch.library.opcheck(span, (*t.values(), 1, 1e-5, True, "silu", "hardsigmoid"), test_utils="test_faketensor")
    torch.library.opcheck(fuse, (t["x"], t["x"] * 2, 1.0, 0.5, 0.25), test_utils="test_faketensor")
