"""Interleaved A/B timing of the MBConv block op (``yyfast::mbconv_eval``) alone.

``python bench/mbconv_eval_ab.py [--ops mbconv_eval,plain] [--batches 1,16,256] [--rounds 15]``

Each variant runs the first block of yynet_small_64's 32x32 stage (64 -> 256 -> 64 channels,
stride 1, residual) and its stride-2 block, on the same channels_last input. The variants alternate
inside every round (A B A B ..., never one after the other in bulk), so a load change on a shared
machine hits both; the report is each variant's median and its ratio to the first.

Variants: ``plain`` is the folded block op by op (``FoldedMBConv(x, "plain")``: ATen convs and
activations); any other name is an op of ``torch.ops.yyfast`` with ``mbconv_eval``'s schema (a
development build can register the previous implementation under another name to compare with).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from yyfast import create_model
from yyfast.cpu_eval import mbconv_op
from yyfast.inference import block_plan, optimize_for_inference
from yyfast.inference.modules import FoldedMBConv


def blocks(model_name: str):
    fast = optimize_for_inference(create_model(model_name, backend="reference").eval())
    found = [b for b in fast.modules() if isinstance(b, FoldedMBConv)]
    s1 = next(b for b in found if b.span.stride == 1 and b.expand.in_channels == b.project.out_channels)
    s2 = next(b for b in found if b.span.stride == 2)
    return {"stride1": s1, "stride2": s2}


def variant(name: str, block):
    if name == "plain":
        return lambda x, r: block(x, "plain")
    op = getattr(torch.ops.yyfast, name)
    w = block_plan.packed_weights(block)
    span = block.span
    own = mbconv_op.owns_shortcut(w)  # the op computes the shortcut itself: r is not passed
    return lambda x, r: op(x, None if own else r, *w[:10], span.stride, block.act, span.gate, w[10])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="yynet_small_64")
    p.add_argument("--ops", default="mbconv_eval,plain", help="comma-separated variants; ratios are to the first")
    p.add_argument("--batches", default="1,16,256")
    p.add_argument("--size", type=int, default=32, help="input height and width of the block")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    block_plan.available()  # loads yyfast._C, which registers the ops
    names = args.ops.split(",")
    for label, block in blocks(args.model).items():
        cin = block.expand.in_channels
        for batch in (int(b) for b in args.batches.split(",")):
            x = torch.randn(batch, cin, args.size, args.size).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                res = x if isinstance(block.shortcut, torch.nn.Identity) else block.shortcut(x)
            fns = [variant(n, block) for n in names]
            with torch.no_grad():
                outs = [f(x, res) for f in fns]  # warm-up (buffers grown, weights packed)
                ref = outs[0]
                for n, o in zip(names, outs):
                    err = ((o - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
                    assert err < 1e-4, f"{n} disagrees with {names[0]}: {err:.2e}"
                rounds = max(3, args.rounds if batch < 64 else args.rounds // 3)
                times = {n: [] for n in names}
                for _ in range(rounds):
                    for n, f in zip(names, fns):
                        t0 = time.perf_counter()
                        f(x, res)
                        times[n].append(time.perf_counter() - t0)
            med = {n: statistics.median(t) * 1e3 for n, t in times.items()}
            row = "  ".join(f"{n} {med[n]:8.3f} ms ({med[names[0]] / med[n]:.2f}x)" for n in names)
            print(f"{label} b{batch:<4d} {args.size}x{args.size} threads {torch.get_num_threads()}: {row}", flush=True)


if __name__ == "__main__":
    main()
