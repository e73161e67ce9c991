"""A whole YYNet on the ``yyfast._C`` ops (backend "cuda") matches the reference network: one
training step (logits, loss, every gradient, BN statistics, AdamW update) and eval logits.

``op_checks.check_model_step`` cannot pass for any float32 backend (not even "reference"): it
compares, with a relative tolerance, the gradients of parameters whose exact gradient is zero --
the biases of convolutions and BatchNorms that feed a BatchNorm (``*.conv1.bias``, ``*.conv2.bias``,
``*.bn_in.bias``): float64 gives ~1e-16, float32 ~1e-9, a "relative error" of 1e8 -- and AdamW's
first step, lr*sign(grad) per element, flips every near-zero gradient element at random. ``model_step``
below is the same proof with those parameters held to an absolute bound, and an SGD step instead
of AdamW (reported to the owner of op_checks).
"""
import pytest
import torch

import yyfast
from conftest import DEVICES
from helpers import rel_err

pytest.importorskip("yyfast._C", reason="the yyfast._C extension is not built (pip install -e . --no-build-isolation)")


def model_step(backend: str, device: str, tol: float = 1e-4, batch: int = 2, **options) -> None:
    ref = yyfast.create_model("yynet_small_16", backend="reference", **options).double()
    with torch.no_grad():  # trained-like BN statistics instead of the (0, 1) defaults
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    net = yyfast.create_model("yynet_small_16", backend=backend, **options)
    net.load_state_dict(ref.state_dict())
    net = net.to(device=device, dtype=torch.float32)
    x = torch.randn(batch, 3, 32, 32, dtype=torch.float64)
    target = torch.randint(0, 10, (batch,))
    ref.train()
    net.train()
    # SGD, not AdamW: AdamW's first step is lr*sign(grad) per element, so every element whose
    # gradient is near zero flips at random between float32 and float64 (seen: 1.5e-4 on the classifier).
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    opt_net = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.05)
    out_ref = ref(x)
    loss_ref = torch.nn.functional.cross_entropy(out_ref, target)
    loss_ref.backward()
    out = net(x.to(device=device, dtype=torch.float32))
    loss = torch.nn.functional.cross_entropy(out, target.to(device))
    loss.backward()
    assert rel_err(out, out_ref) < tol, f"logits differ: {rel_err(out, out_ref):.3e}"
    assert abs(loss.item() - loss_ref.item()) < tol * max(1.0, abs(loss_ref.item()))
    ref_params = dict(ref.named_parameters())
    total = torch.sqrt(sum(p.grad.double().norm() ** 2 for p in ref.parameters())).item()
    zero_grad = {n for n, p in ref_params.items() if p.grad.norm().item() < 1e-8 * total}
    assert zero_grad, "expected the BN-fed biases to have ~zero gradient"
    for name, p in net.named_parameters():
        if name in zero_grad:  # exact gradient 0: an absolute bound, relative to the whole gradient
            assert p.grad.norm().item() < 1e-5 * total, f"grad {name} should be ~0, got {p.grad.norm().item():.3e}"
            continue
        err = rel_err(p.grad, ref_params[name].grad)
        assert err < 10 * tol, f"grad {name}: relative error {err:.3e}"
    ref_buffers = dict(ref.named_buffers())
    for name, b in net.named_buffers():
        if b.is_floating_point():
            assert rel_err(b, ref_buffers[name]) < tol, f"buffer {name}: {rel_err(b, ref_buffers[name]):.3e}"
        else:
            assert torch.equal(b.cpu(), ref_buffers[name]), f"buffer {name} differs"
    opt_ref.step()
    opt_net.step()
    for name, p in net.named_parameters():
        if name not in zero_grad:
            assert rel_err(p, ref_params[name]) < tol, f"param {name} after step: {rel_err(p, ref_params[name]):.3e}"
    ref.eval()
    net.eval()
    with torch.no_grad():
        xe = torch.randn(batch, 3, 32, 32, dtype=torch.float64)
        err = rel_err(net(xe.to(device=device, dtype=torch.float32)), ref(xe))
    assert err < tol, f"eval logits differ after the step: {err:.3e}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act,se_gate", [("gelu", "sigmoid"), ("silu", "hardsigmoid"), ("gelu", "hardsigmoid"),
                                         ("silu", "sigmoid")])
def test_model_step(device, act, se_gate):
    model_step("cuda", device=device, act=act, se_gate=se_gate)


@pytest.mark.parametrize("device", DEVICES)
def test_model_step_fusion(device):
    model_step("cuda", device=device, fusion="gate_sub")


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_eval_matches_reference(device):
    """Inference in channels_last (the fast CPU layout) gives the reference's logits."""
    torch.manual_seed(1)
    ref = yyfast.create_model("yynet_small_16", backend="reference").eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    net = yyfast.create_model("yynet_small_16", backend="cuda").eval()
    net.load_state_dict(ref.state_dict())
    net = net.to(device=device, memory_format=torch.channels_last)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = ref.double()(x.double())
        got = net(x.to(device).contiguous(memory_format=torch.channels_last))
    err = rel_err(got, want)
    assert err < 1e-4, f"channels_last eval logits differ: {err:.3e}"
