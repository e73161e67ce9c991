"""Helpers shared by the tests: relative errors, device parametrisation, running the CLIs."""
import os
import subprocess
import sys

import torch

from conftest import DEVICES  # noqa: F401  (re-exported for test modules)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64; NaN anywhere gives inf (NaN never passes)."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if torch.isnan(out64).any() or torch.isinf(out64).any():
        return float("inf")
    denom = ref64.norm().item()
    return (out64 - ref64).norm().item() / (denom if denom > 0 else 1.0)


def cli(module, *args, env=None):
    """``python -m yyfast.<module> ARGS`` in a subprocess; the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", f"yyfast.{module}", *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=300)


def assert_clear_error(proc, *needles):
    """Exit status 2, no traceback, and one error line (after argparse's usage lines) naming ``needles``."""
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {err[-3000:]}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
