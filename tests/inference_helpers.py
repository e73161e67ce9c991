"""Models with trained-like parameters for the inference, predict and export tests."""
import copy

import torch
from torch import nn


def trained_like_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters (not the defaults 0/1), and every weight
    perturbed (the dirac shortcuts stop being identities), so that a wrong fold cannot pass."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 2.0 + 0.2)
                m.weight.copy_(1.0 + 0.3 * torch.randn(c, generator=gen))
                m.bias.copy_(0.3 * torch.randn(c, generator=gen))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.add_(0.05 * torch.randn(m.weight.shape, generator=gen))
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return model


def float64_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The eval-mode output of ``model`` computed in float64 on the CPU (``model`` is not changed)."""
    ref = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    with torch.no_grad():
        return ref(x.detach().to(device="cpu", dtype=torch.float64))


def one_thread():
    """A generator for a fixture: these tests run many tiny ops, for which OpenMP's barriers on a
    loaded 2-core machine cost more than the work (measured: 16 ms per op with 2 threads vs 0.03 ms
    with 1), so they run single-threaded and restore the setting after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
