"""Run both fused ops, forward and backward, train and eval, on small awkward shapes, for every
backend available on the device: the workload ``compute-sanitizer`` (memcheck, racecheck)
watches in ``bench/gpu_check.sh``.

``python bench/sanitize_ops.py [--device cuda|cpu|auto] [--backends cuda,triton]``

Shapes are the ones kernels get wrong: N=1, odd channel counts (3, 37), 1x1 and odd spatial
sizes (7x9, 33x33), stride 1 and 2, both memory formats, fp32 and (on a GPU) bf16. Outputs are
checked to be finite and close to the reference (loosely: this is a memory-safety run; the
test suite owns the tolerances). Exit 0 when every call ran, 1 if any failed; with no GPU and
``--device auto`` it says so and exits 0 (nothing to sanitize).
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# (N, C, H, W, stride); training needs more than one value per channel.
SPAN_SHAPES = [(1, 3, 7, 9, 1), (2, 37, 7, 9, 2), (1, 8, 33, 33, 2), (3, 5, 1, 1, 1), (2, 64, 16, 16, 1)]
FUSE_SHAPES = [(1, 3, 7, 9), (2, 37, 33, 33), (1, 1, 1, 1), (3, 64, 16, 16)]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-12)).item()


def _autocast(dtype, device):
    import contextlib

    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()


def span_case(backend: str, shape, dtype, channels_last: bool, training: bool, device) -> None:
    from yyfast import ops

    n, c, h, w, stride = shape
    hidden = max(1, c // 4)
    x = torch.randn(n, c, h, w, device=device, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    p = dict(dw_weight=torch.randn(c, 1, 3, 3, device=device) * 0.3, bn_weight=torch.rand(c, device=device) + 0.5,
             bn_bias=torch.randn(c, device=device) * 0.1, se_w1=torch.randn(hidden, c, device=device) * 0.3,
             se_b1=torch.randn(hidden, device=device) * 0.1, se_w2=torch.randn(c, hidden, device=device) * 0.3,
             se_b2=torch.randn(c, device=device) * 0.1)
    outs = {}
    for name in (backend, "reference"):
        xs = x.detach().clone().requires_grad_(training)
        ps = {k: v.detach().clone().requires_grad_(training) for k, v in p.items()}
        rm, rv = torch.zeros(c, device=device), torch.ones(c, device=device)
        # bf16 activations with fp32 parameters and statistics, under autocast, as in the network
        with _autocast(dtype, device):
            y = ops.dw_bn_act_se(xs, ps["dw_weight"], ps["bn_weight"], ps["bn_bias"], rm, rv, ps["se_w1"], ps["se_b1"],
                                 ps["se_w2"], ps["se_b2"], stride=stride, training=training, backend=name)
        grads = []
        if training:
            grads = list(torch.autograd.grad(y, [xs, *ps.values()], torch.ones_like(y) * 0.5))
        outs[name] = [y, rm, rv] + grads
    tol = 5e-2 if dtype == torch.bfloat16 else 1e-3
    for k, (got, ref) in enumerate(zip(outs[backend], outs["reference"])):
        err = rel_err(got, ref)
        if not err < tol:
            raise AssertionError(f"output {k}: relative error {err:.2e} >= {tol:g}")


def fuse_case(backend: str, shape, dtype, channels_last: bool, formula: str, device) -> None:
    from yyfast import ops

    a, i = (torch.randn(*shape, device=device, dtype=dtype) for _ in range(2))
    if channels_last:
        a, i = a.to(memory_format=torch.channels_last), i.to(memory_format=torch.channels_last)
    outs = {}
    for name in (backend, "reference"):
        a_, i_ = a.detach().clone().requires_grad_(), i.detach().clone().requires_grad_()
        out = ops.yinyang_fuse(a_, i_, formula, backend=name)
        outs[name] = [out, *torch.autograd.grad(out, [a_, i_], torch.ones_like(out) * 0.5)]
    for k, (got, ref) in enumerate(zip(outs[backend], outs["reference"])):
        err = rel_err(got, ref)
        if not err < 2e-2:
            raise AssertionError(f"output {k}: relative error {err:.2e}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (GPU if visible, else nothing to do), cuda or cpu")
    parser.add_argument("--backends", help="comma-separated backends (default: every available non-reference one)")
    args = parser.parse_args(argv)
    if args.device == "auto" and not torch.cuda.is_available():
        print("sanitize_ops: no GPU is visible; nothing to sanitize (use --device cpu to exercise the CPU kernels)")
        return 0
    try:
        device = common.pick_device(args.device)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = common.backend_rows(device)
    wanted = args.backends.split(",") if args.backends else list(rows)
    rows["reference"] = None  # allowed when named: a self-check of this script against itself
    unknown = [b for b in wanted if b not in rows]
    if unknown:
        print(f"error: --backends {','.join(unknown)} not valid; allowed values: {', '.join(rows)}", file=sys.stderr)
        return 2
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    failures: List[str] = []
    ran = 0
    for backend in wanted:
        if rows[backend]:
            print(f"skip {backend}: {rows[backend]}")
            continue
        for dtype in dtypes:
            for cl in (True, False):
                cases = [(f"dw_bn_act_se {s} train={t}", partial(span_case, backend, s, dtype, cl, t, device))
                         for s in SPAN_SHAPES for t in (True, False)]
                cases += [(f"yinyang_fuse {s} {f}", partial(fuse_case, backend, s, dtype, cl, f, device))
                          for s in FUSE_SHAPES for f in ("add", "gate_sub")]
                for what, case in cases:
                    label = f"{backend} {str(dtype).replace('torch.', '')} {'NHWC' if cl else 'NCHW'} {what}"
                    try:
                        case()
                        common.sync(device)
                        ran += 1
                    except Exception as exc:  # keep going: one run should list every failing case
                        failures.append(f"{label}: {common.short_error(exc)}")
    for line in failures:
        print("FAIL", line)
    print(f"sanitize_ops: {ran} calls ran, {len(failures)} failed on {device.type}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
