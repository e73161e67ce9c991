"""A whole YYNet on the Triton ops (backend "triton") matches the reference network: one training
step (logits, loss, every gradient, BN statistics, optimizer update) and eval logits, for every option
that changes what the kernels compute (act x SE gate) and a non-default fusion."""
import warnings

import pytest
import torch

import yyfast
from conftest import DEVICES
from op_checks import check_model_step

pytest.importorskip("triton", reason="Triton is not installed: the Triton backend does not exist here")

# Each of the four act x gate combinations once; the fusion rotates so that non-default formulas
# (gate_sub is the ImageNet preset's) are covered without a fifth slow interpreter step.
OPTIONS = [dict(act="gelu", se_gate="sigmoid", fusion="add"),
           dict(act="silu", se_gate="hardsigmoid", fusion="gate_sub"),
           dict(act="gelu", se_gate="hardsigmoid", fusion="mul"),
           dict(act="silu", se_gate="sigmoid", fusion="mul_add")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o.values()))
def test_model_step(device, options):
    # batch 2 keeps the interpreter step short; BN still sees >= 32 values per channel everywhere.
    check_model_step("triton", device=device, batch=2 if device == "cpu" else 4, **options)


def test_state_dict_matches_reference():
    ref = yyfast.create_model("yynet_small_16", backend="reference")
    net = yyfast.create_model("yynet_small_16", backend="triton")
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == want
    net.load_state_dict(ref.state_dict())  # strict: loads both ways
    ref.load_state_dict(net.state_dict())


def test_dropout_falls_back_to_reference_and_warns_once(monkeypatch):
    from yyfast.model import FusedDWBNActSE

    monkeypatch.setattr(FusedDWBNActSE, "_warned_dropout", False)
    torch.manual_seed(0)
    ref = yyfast.create_model("yynet_small_16", backend="reference", mbconv_dropout=0.2)
    net = yyfast.create_model("yynet_small_16", backend="triton", mbconv_dropout=0.2)
    net.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(1)
        got = [net(x) for _ in range(2)]
    dropout_warnings = [w for w in caught if "mbconv_dropout" in str(w.message)]
    assert len(dropout_warnings) == 1, [str(w.message) for w in caught]
    torch.manual_seed(1)
    want = [ref(x) for _ in range(2)]  # same dropout masks: the fallback is the reference span
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
