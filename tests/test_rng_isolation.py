"""One-time lazy checks must not consume the global RNG: where they run first would shift a
training run's random stream, and a resumed run would not replay an unbroken one bit for bit."""
import torch

from yyfast import cpu_fusion


def test_cpu_fusion_self_test_leaves_the_global_rng_alone(monkeypatch):
    monkeypatch.setitem(cpu_fusion._STATE, "checked", False)
    before = torch.get_rng_state()
    cpu_fusion.available()
    assert cpu_fusion._STATE["checked"]
    assert torch.equal(torch.get_rng_state(), before)
