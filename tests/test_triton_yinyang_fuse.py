"""The Triton yinyang_fuse op (backend "triton"): every named formula, forward and both gradients,
against the float64 reference; ``opcheck`` and ``torch.compile(fullgraph=True)``."""
import pytest
import torch

import yyfast
from conftest import DEVICES
from op_checks import check_yinyang_fuse

pytest.importorskip("triton", reason="Triton is not installed: the Triton backend does not exist here")
from yyfast.config import FUSIONS  # noqa: E402

CUDA = [d for d in DEVICES if getattr(d, "values", [d])[0] == "cuda"]
SHAPES = [(2, 3, 7, 9), (1, 37, 33, 33), (3, 5, 1, 1), (4, 11)]


@pytest.mark.parametrize("formula", list(FUSIONS))
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2)])
def test_cpu_formulas(formula, dtype, tol):
    check_yinyang_fuse("triton", "cpu", dtype, (2, 3, 7, 9), formula, tol=tol)


@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cpu_shapes_and_formats(shape, channels_last):
    if channels_last and len(shape) != 4:
        pytest.skip("channels_last needs a 4-D tensor")
    check_yinyang_fuse("triton", "cpu", torch.float32, shape, "gate_sub", channels_last=channels_last, tol=1e-5)


def test_cpu_mixed_formats():
    """A in channels_last, I in NCHW: the output keeps A's format and the values stay right."""
    a = torch.randn(2, 6, 5, 4).contiguous(memory_format=torch.channels_last)
    i = torch.randn(2, 6, 5, 4)
    out = yyfast.ops.yinyang_fuse(a, i, "mul_add", backend="triton")
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, a * i + a + i)


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("formula", list(FUSIONS))
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("shape,channels_last", [((2, 3, 7, 9), False), ((1, 37, 33, 33), True),
                                                 ((3, 5, 1, 1), True), ((64, 256, 32, 32), True)])
def test_gpu(device, formula, dtype, tol, shape, channels_last):
    check_yinyang_fuse("triton", device, dtype, shape, formula, channels_last=channels_last, tol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    a = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    i = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.yyfast.yinyang_fuse_triton.default, (a, i, -1.0, 2.0, 1.0))
    g = torch.randn(2, 3, 4, 5, device=device).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.yyfast.yinyang_fuse_triton_backward.default,
                          (g, a.detach(), i.detach(), -1.0, 2.0, 1.0))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    from yyfast.ops import triton_ops

    def f(a, i):
        return (triton_ops.yinyang_fuse(a, i, 1.0, 1.0, 1.0) ** 2).sum()

    a = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    i = torch.randn(2, 3, 4, 5, device=device, requires_grad=True)
    torch._dynamo.reset()
    loss = torch.compile(f, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")(a, i)
    loss.backward()
    out = a.detach() * i.detach() + a.detach() + i.detach()
    torch.testing.assert_close(loss.detach(), (out ** 2).sum())
    torch.testing.assert_close(a.grad, 2 * out * (i.detach() + 1))
    torch.testing.assert_close(i.grad, 2 * out * (a.detach() + 1))
