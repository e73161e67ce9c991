"""Helpers shared by the op tests: relative errors, poisoning, device parametrisation."""
import torch

from conftest import DEVICES  # noqa: F401  (re-exported for test modules)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64; NaN anywhere gives inf (NaN never passes)."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if torch.isnan(out64).any() or torch.isinf(out64).any():
        return float("inf")
    denom = ref64.norm().item()
    return (out64 - ref64).norm().item() / (denom if denom > 0 else 1.0)


def assert_close_rel(out: torch.Tensor, ref: torch.Tensor, tol: float, what: str = "output") -> None:
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    err = rel_err(out, ref)
    assert err < tol, f"{what}: relative error {err:.3e} >= {tol:.1e}"


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill with NaN so an unwritten element fails every comparison."""
    with torch.no_grad():
        return t.fill_(float("nan"))
