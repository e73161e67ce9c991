"""``yyfast.sync_bn``: BatchNorm over the global batch, fused spans included, proven with two gloo
processes on the CPU against one process that sees the union of their batches."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import yyfast
from yyfast.sync_bn import SyncBatchNorm2d, convert_sync_batchnorm

SPLIT = (3, 2)  # unequal per-rank batches: the union is what must be matched


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(backend):
    torch.manual_seed(0)
    model = yyfast.create_model("yynet_small_16", backend=backend).double()
    with torch.no_grad():  # non-trivial statistics and affine parameters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    return model.train()


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(sum(SPLIT), 3, 16, 16, generator=g, dtype=torch.float64)
    w = torch.randn(sum(SPLIT), 10, generator=g, dtype=torch.float64)
    return x, w


def _step(model, x, w, n_global):
    out = model(x)
    ((out * w).sum() / n_global).backward()
    return out.detach()


def _rank(rank, world, port, backend, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = convert_sync_batchnorm(_model(backend))
        x, w = _data()
        lo = sum(SPLIT[:rank])
        part = slice(lo, lo + SPLIT[rank])
        out = _step(model, x[part], w[part], sum(SPLIT))
        grads = [p.grad.clone() for p in model.parameters()]
        for g in grads:
            dist.all_reduce(g)  # what DDP does (with its mean over equal shares)
        torch.save({"out": out, "grads": grads, "state": model.state_dict()}, f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("backend", ["reference", "cuda"])
def test_two_processes_equal_one_batchnorm_over_the_union(tmp_path, backend):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend for torch.distributed")
    if backend != "reference" and not yyfast.backends()[backend]["available"]:
        pytest.skip(f"{backend} backend unavailable here: {yyfast.backends()[backend]['reason']}")
    path = str(tmp_path / "rank")
    mp.start_processes(_rank, args=(2, _free_port(), backend, path), nprocs=2, start_method="fork")
    single = _model(backend)
    x, w = _data()
    out = _step(single, x, w, sum(SPLIT))
    r0, r1 = (torch.load(f"{path}.{r}", weights_only=True) for r in range(2))
    torch.testing.assert_close(torch.cat([r0["out"], r1["out"]]), out, rtol=1e-9, atol=1e-9)
    for (name, p), g0, g1 in zip(single.named_parameters(), r0["grads"], r1["grads"]):
        torch.testing.assert_close(g0, p.grad, rtol=1e-8, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")
        torch.testing.assert_close(g1, g0, rtol=0, atol=0)
    for name, v in single.state_dict().items():  # running statistics of every BN, the spans' too
        torch.testing.assert_close(r0["state"][name], v, rtol=1e-9, atol=1e-12, msg=lambda m, n=name: f"{n}: {m}")


def test_without_a_process_group_it_is_batchnorm():
    bn = torch.nn.BatchNorm2d(5)
    torch.nn.init.uniform_(bn.weight)
    model = convert_sync_batchnorm(torch.nn.Sequential(bn))
    assert isinstance(model[0], SyncBatchNorm2d) and model[0].weight is bn.weight
    assert set(model.state_dict()) == {f"0.{k}" for k in bn.state_dict()}
    x = torch.randn(4, 5, 3, 3)
    ref = torch.nn.BatchNorm2d(5)
    ref.load_state_dict(bn.state_dict())
    torch.testing.assert_close(model(x), ref(x))
    torch.testing.assert_close(model[0].running_var, ref.running_var)


def test_fused_span_uses_the_synchronised_batchnorm():
    model = convert_sync_batchnorm(yyfast.create_model("yynet_small_16", backend="cuda"))
    span = model.yin[1].span
    assert isinstance(span.bn, SyncBatchNorm2d)
