"""A whole YYNet on the ``yyfast._C`` ops (backend "cuda") matches the reference network: one
training step (logits, loss, every gradient, BN statistics, optimizer update) and eval logits,
through the shared ``op_checks.check_model_step``."""
import pytest
import torch

import yyfast
from conftest import DEVICES
from helpers import rel_err
from op_checks import check_model_step

pytest.importorskip("yyfast._C", reason="the yyfast._C extension is not built (pip install -e . --no-build-isolation)")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act,se_gate", [("gelu", "sigmoid"), ("silu", "hardsigmoid"), ("gelu", "hardsigmoid"),
                                         ("silu", "sigmoid")])
def test_model_step(device, act, se_gate):
    check_model_step("cuda", device=device, act=act, se_gate=se_gate)


@pytest.mark.parametrize("device", DEVICES)
def test_model_step_fusion(device):
    check_model_step("cuda", device=device, fusion="gate_sub")


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
