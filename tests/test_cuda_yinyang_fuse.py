"""The ``yyfast._C`` yinyang_fuse op (backend "cuda"): C++ CPU twin on every run, CUDA kernel on a GPU."""
import pytest
import torch

import yyfast
from conftest import DEVICES
from op_checks import check_yinyang_fuse
from yyfast.config import FUSIONS

pytest.importorskip("yyfast._C", reason="the yyfast._C extension is not built (pip install -e . --no-build-isolation)")
from yyfast.ops import cuda_ops  # noqa: E402  (registers the fakes and autograd)

SHAPES = [(2, 37, 5, 9), (1, 3, 1, 1), (3, 130)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("formula", list(FUSIONS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_formulas_float32(device, formula, shape):
    check_yinyang_fuse("cuda", device, torch.float32, shape, formula, channels_last=len(shape) == 4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dtypes(device, dtype, channels_last):
    check_yinyang_fuse("cuda", device, dtype, (2, 37, 5, 9), "gate_sub", channels_last=channels_last)


def test_mixed_formats():
    """a NCHW and i channels_last: the output follows a's format and the values are right."""
    a = torch.randn(2, 5, 3, 4)
    i = torch.randn(2, 5, 3, 4).contiguous(memory_format=torch.channels_last)
    out = yyfast.ops.yinyang_fuse(a, i, "mul_add", backend="cuda")
    torch.testing.assert_close(out, a * i + a + i)
    assert out.is_contiguous()


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    a = torch.randn(2, 6, 3, 5).contiguous(memory_format=fmt).requires_grad_(True)
    i = torch.randn(2, 6, 3, 5).contiguous(memory_format=fmt).requires_grad_(True)
    torch.library.opcheck(torch.ops.yyfast.yinyang_fuse_cuda.default, (a, i, -1.0, 2.0, 1.0))
    g = torch.randn(2, 6, 3, 5)
    torch.library.opcheck(torch.ops.yyfast.yinyang_fuse_cuda_backward.default,
                          (g, a.detach(), i.detach(), -1.0, 2.0, 1.0))


def _compile_and_compare(f, backend):
    a = torch.randn(2, 6, 3, 5, requires_grad=True)
    i = torch.randn(2, 6, 3, 5, requires_grad=True)
    torch._dynamo.reset()
    loss = torch.compile(f, fullgraph=True, backend=backend)(a, i)
    loss.backward()
    a2, i2 = a.detach().clone().requires_grad_(True), i.detach().clone().requires_grad_(True)
    ref = f(a2, i2)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(i.grad, i2.grad)


def test_torch_compile_fullgraph_backend_op():
    _compile_and_compare(lambda a, i: cuda_ops.yinyang_fuse(a, i, -1.0, 2.0, 1.0).square().sum(), "aot_eager")


def test_torch_compile_fullgraph_public_op():
    try:
        _compile_and_compare(lambda a, i: yyfast.ops.yinyang_fuse(a, i, "gate_add", backend="cuda").square().sum(),
                             "aot_eager")
    except torch._dynamo.exc.Unsupported as exc:
        if "import_module" in str(exc):
            # see test_cuda_dw_bn_act_se.test_torch_compile_fullgraph_public_op: the fix belongs in
            # yyfast.ops.resolve_backend; any other failure fails this test.
            pytest.xfail("yyfast.ops.resolve_backend is not traceable yet (availability imports modules)")
        raise


def test_op_rejects_mismatched_inputs():
    with pytest.raises(RuntimeError, match="i must have the shape"):
        torch.ops.yyfast.yinyang_fuse_cuda(torch.randn(2, 3), torch.randn(3, 2), 0.0, 1.0, 1.0)
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.yyfast.yinyang_fuse_cuda(torch.randn(2, 3), torch.randn(2, 3, dtype=torch.float64), 0.0, 1.0, 1.0)
