"""The two fused ops alone, at the network's real shapes, against the byte floor.

``python bench/kernels.py [--model yynet_small_64] [--batch 64,256] [--json PATH] [--md PATH]``

Ops: ``yyfast.ops.dw_bn_act_se`` (the MBConv span) and ``yyfast.ops.yinyang_fuse`` (the stem
fusion). The shapes are read off the model itself (a forward hook on every span and on the
fusion), so for Small-64 they are the 256-channel spans at 32x32 (stride 1 and 2), 16x16, 8x8
(stride 2) and 4x4, and the 64-channel 16x16 fusion. Implementations: ``eager`` (the
reference functional, ``yyfast.ops.composed``), ``compile`` (that functional under
``torch.compile``), and ``yyfast-<b>`` (the public op with ``backend=b``) for every available
non-reference backend. Modes: ``fwd-eval`` (eval statistics, no_grad), ``fwd-train`` (batch
statistics and running-stat update, inputs requiring grad), ``fwd+bwd`` (training forward, then
the input and parameter gradients via ``torch.autograd.grad``, so nothing accumulates).

Each op's calls and byte floor are in its own file, ``kernels_dw_bn_act_se.py`` and
``kernels_yinyang_fuse.py`` (their docstrings, printed by ``--help`` after this one); this file is
the runner and CLI for both.

Achieved GB/s = floor bytes / median time. A call whose tensors fit in a cache (the small shapes
on a CPU, up to the 50 MB L2 on an H100) can beat the copy bandwidth, which is measured on
buffers far larger than any cache: over 100% then means cache-resident, not an error. The
device's copy bandwidth is measured in the same run by a large ``dst.copy_(src)`` counting bytes
read plus written, and each row reports its GB/s as a percentage of it. GPU: bf16 channels_last
under autocast (as in the network); CPU: fp32 channels_last.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import kernels_dw_bn_act_se  # noqa: E402
import kernels_yinyang_fuse  # noqa: E402

#: op name -> its benchmark module (OP, MODES, shape_name, floor_bytes, build).
OP_MODULES = {m.OP: m for m in (kernels_dw_bn_act_se, kernels_yinyang_fuse)}
IMPL_FAMILIES = ("eager", "compile", "yyfast")
OPS = tuple(OP_MODULES)


@dataclass
class Config:
    model: str = "yynet_small_64"
    device: str = "auto"
    batches: List[int] = field(default_factory=list)
    dtype: str = "fp32"
    impls: List[str] = field(default_factory=list)
    ops: List[str] = field(default_factory=lambda: list(OPS))
    shapes: Optional[List[str]] = None      # None: every shape of the model; else "CxHxW/sS" or "CxHxW" names
    warmup: int = 3
    reps: int = 30
    budget_s: float = 3.0
    deadline_s: Optional[float] = None
    compile_mode: Optional[str] = None
    copy_mb: int = 256
    seed: int = 0


@dataclass
class Result:
    op: str
    shape: str              # "CxHxW/s" of the input, batch separate
    batch: int
    mode: str
    impl: str
    dtype: str
    ms: float
    floor_bytes: int
    gb_per_s: float
    pct_of_copy_bw: float
    speedup_vs_eager: Optional[float]
    reps: int
    min_ms: Optional[float] = None


def default_config(dev: torch.device, **overrides) -> Config:
    """GPU: batches 64 and 256, bf16, eager/compile/yyfast; CPU: batch 16, fp32, no compile (inductor
    takes minutes on 2 cores), few reps, so a bare run ends within 2 minutes."""
    if dev.type == "cuda":
        cfg = Config(batches=[64, 256], dtype="bf16", impls=list(IMPL_FAMILIES), warmup=5, reps=50, budget_s=2.0,
                     compile_mode="max-autotune-no-cudagraphs", copy_mb=1024)
    else:
        cfg = Config(batches=[16], dtype="fp32", impls=["eager", "yyfast"], warmup=1, reps=5, budget_s=1.5,
                     compile_mode="default", copy_mb=128)
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    return cfg


# -- shapes ----------------------------------------------------------------------------------
def model_shapes(model_name: str) -> Tuple[List[Tuple[int, int, int, int]], List[Tuple[int, int, int]]]:
    """The distinct (C, H, W, stride) of the spans and (C, H, W) of the fusion, in network order."""
    from yyfast.config import INPUT_SIZES
    from yyfast.reference_model import DWBNActSE, ReferenceYYNet, YinYangFusion
    from yyfast.config import get_config

    net = ReferenceYYNet(get_config(model_name)).eval()
    spans, fuses = [], []

    def span_hook(mod, inputs):
        key = (inputs[0].shape[1], inputs[0].shape[2], inputs[0].shape[3], mod.stride)
        if key not in spans:
            spans.append(key)

    def fuse_hook(mod, inputs):
        key = tuple(inputs[0].shape[1:])
        if key not in fuses:
            fuses.append(key)

    for m in net.modules():
        if isinstance(m, DWBNActSE):
            m.register_forward_pre_hook(span_hook)
        elif isinstance(m, YinYangFusion):
            m.register_forward_pre_hook(fuse_hook)
    with torch.no_grad():
        net(torch.randn(1, *INPUT_SIZES[model_name]))
    return spans, fuses


def shape_name(op: str, shape) -> str:
    """``256x32x32/s2`` for a span, ``64x16x16`` for the fusion (batch apart)."""
    return OP_MODULES[op].shape_name(shape)


def copy_bandwidth(device: torch.device, megabytes: int, reps: int = 10) -> float:
    """GB/s of ``dst.copy_(src)`` on ``megabytes``-MiB buffers, counting bytes read + written."""
    numel = megabytes * 2**20 // 4
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    timing = common.time_fn(lambda: dst.copy_(src), device, warmup=2, reps=reps)
    return 2 * src.numel() * src.element_size() / (timing.ms * 1e-3) / 1e9


# -- building the calls ----------------------------------------------------------------------
def build(op: str, impl: str, cfg: Config, mode: str, shape, batch: int, dtype: torch.dtype, device: torch.device
          ) -> Tuple[Callable[[], object], int]:
    """The timed call of one row and its floor bytes (the op's module builds ``fn``, this wraps it)."""
    fn, inputs, params, floor = OP_MODULES[op].build(impl, cfg, mode, shape, batch, dtype, device)
    return _wrap(fn, inputs, params, mode, device, cfg.dtype), floor


def _wrap(fn, inputs: List[torch.Tensor], params: List[torch.Tensor], mode: str, device: torch.device, dtype: str
          ) -> Callable[[], object]:
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if dtype == "bf16" \
        else contextlib.nullcontext
    if mode == "fwd-eval":
        def call():
            with torch.no_grad(), autocast():
                return fn(*inputs)
        return call
    leaves = [t.requires_grad_(True) for t in inputs] + list(params)
    if mode == "fwd-train":
        def call():
            with autocast():
                return fn(*inputs)
        return call
    with torch.no_grad(), autocast():
        grad_y = torch.randn_like(fn(*[t.detach() for t in inputs]))

    def call():
        with autocast():
            y = fn(*inputs)
        return torch.autograd.grad(y, leaves, grad_y)
    return call


# -- the run ---------------------------------------------------------------------------------
def list_impls(cfg: Config, device: torch.device, skipped: List[common.Skipped]) -> List[str]:
    impls = [name for name in ("eager", "compile") if name in cfg.impls]
    if "yyfast" in cfg.impls:
        for backend, reason in common.backend_rows(device).items():
            if reason:
                skipped.append(common.Skipped(f"yyfast-{backend}", reason))
            else:
                impls.append(f"yyfast-{backend}")
    return impls


def run(cfg: Config, json_path: Optional[str] = None, md_path: Optional[str] = None, progress: bool = True) -> dict:
    from tqdm import tqdm

    device = common.pick_device(cfg.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg.dtype]
    common.set_dynamo_limits()
    torch.manual_seed(cfg.seed)
    skipped: List[common.Skipped] = []
    impls = list_impls(cfg, device, skipped)
    spans, fuses = model_shapes(cfg.model)
    if cfg.shapes is not None:
        known = [shape_name("dw_bn_act_se", s) for s in spans] + [shape_name("yinyang_fuse", s) for s in fuses]
        unknown = [s for s in cfg.shapes if s not in known]
        if unknown:
            raise ValueError(f"--shapes {','.join(unknown)} not valid for {cfg.model}; allowed values: "
                             f"{', '.join(known)}")
        spans = [s for s in spans if shape_name("dw_bn_act_se", s) in cfg.shapes]
        fuses = [s for s in fuses if shape_name("yinyang_fuse", s) in cfg.shapes]
    started = time.perf_counter()
    copy_gbs = copy_bandwidth(device, cfg.copy_mb)
    head = common.header(device, asdict(cfg))
    extra = {"copy_gb_per_s": round(copy_gbs, 2), "copy_note": f"dst.copy_(src), {cfg.copy_mb} MiB fp32 each, "
                                                                "bytes read + written"}
    todo = []
    for batch in sorted(cfg.batches, reverse=True):  # the largest batch (the goal's) first
        if "dw_bn_act_se" in cfg.ops:
            todo += [("dw_bn_act_se", s, batch, m, i) for s in spans for m in kernels_dw_bn_act_se.MODES
                     for i in impls]
        if "yinyang_fuse" in cfg.ops:
            todo += [("yinyang_fuse", s, batch, m, i) for s in fuses for m in kernels_yinyang_fuse.MODES
                     for i in impls]
    # Compiled rows last (their compilation is the slow part): a deadline or timeout loses those only.
    todo.sort(key=lambda item: item[4] == "compile")
    results: List[Result] = []
    current: List[str] = []  # the configuration being measured, for the message if a timeout stops it
    bar = tqdm(todo, desc="kernels", unit="config", disable=not progress, file=sys.stderr)
    with common.sigterm_raises():
        try:
            _measure(bar, cfg, device, dtype, copy_gbs, head, extra, results, skipped, json_path, started, current)
        except common.Terminated:
            skipped.append(common.Skipped(f"{current[-1] if current else 'start'} and every later configuration",
                                          f"interrupted by SIGTERM (a timeout) after "
                                          f"{time.perf_counter() - started:.0f} s"))
    goals = compute_goals(results, device)
    extra.update(goals=[asdict(g) for g in goals], wall_s=round(time.perf_counter() - started, 1))
    common.write_json(json_path, head, results, skipped, extra)
    text = render_markdown(head, results, skipped, goals, copy_gbs)
    common.write_text(md_path, text)
    doc = dict(head, results=[asdict(r) for r in results], skipped=[asdict(s) for s in skipped], **extra)
    doc["markdown"] = text
    return doc


def _measure(bar, cfg: Config, device: torch.device, dtype: torch.dtype, copy_gbs: float, head: dict, extra: dict,
             results: List[Result], skipped: List[common.Skipped], json_path: Optional[str], started: float,
             current: List[str]) -> None:
    """Time every configuration of ``bar``; results and skips are appended as they happen."""
    eager_ms = {}
    for op, shape, batch, mode, impl in bar:
        shape_s = shape_name(op, shape)
        what = f"{op} {shape_s} b{batch} {mode} {impl}"
        current.append(what)
        if cfg.deadline_s is not None and time.perf_counter() - started > cfg.deadline_s:
            skipped.append(common.Skipped(what, f"--deadline-s {cfg.deadline_s:g} s reached before this configuration"))
            continue
        try:
            call, floor = build(op, impl, cfg, mode, shape, batch, dtype, device)
            timing = common.time_fn(call, device, cfg.warmup, cfg.reps, cfg.budget_s)
        except Exception as exc:  # a kernel not written yet, an unsupported dtype: report and go on
            skipped.append(common.Skipped(what, common.short_error(exc)))
            continue
        finally:
            call = None
            if impl == "compile":
                torch._dynamo.reset()
        key = (op, shape_s, batch, mode)
        if impl == "eager":
            eager_ms[key] = timing.ms
        gbs = floor / (timing.ms * 1e-3) / 1e9
        base = eager_ms.get(key)
        results.append(Result(op, shape_s, batch, mode, impl, cfg.dtype, common.sig(timing.ms), floor, common.sig(gbs),
                              common.sig(100 * gbs / copy_gbs), None if base is None else round(base / timing.ms, 3),
                              timing.reps, common.sig(timing.min_ms)))
        common.write_json(json_path, head, results, skipped, extra)


def compute_goals(results: List[Result], device: torch.device) -> List[common.Goal]:
    """GPU goal: the fused span reaches 70% of copy bandwidth (the weakest shape/mode of the best backend
    at the largest batch, and the geometric mean over shapes for context)."""
    if device.type != "cuda":
        return []
    rows = [r for r in results if r.op == "dw_bn_act_se" and r.impl.startswith("yyfast-")]
    if not rows:
        return [common.Goal("fused span >= 70% of copy bandwidth", ">= 70%", None, None, "no yyfast-* span rows")]
    goals = []
    batch = max(r.batch for r in rows)
    for mode in kernels_dw_bn_act_se.MODES:
        per_impl = {}
        for r in rows:
            if r.batch == batch and r.mode == mode:
                per_impl.setdefault(r.impl, []).append(r.pct_of_copy_bw)
        if not per_impl:
            continue
        impl, pcts = max(per_impl.items(), key=lambda kv: min(kv[1]))
        goals.append(common.Goal(f"span {mode} b{batch}, worst shape", ">= 70%", min(pcts), min(pcts) >= 70.0,
                                 f"{impl}; shapes {len(pcts)}"))
    return goals


def render_markdown(head: dict, results: List[Result], skipped: List[common.Skipped], goals, copy_gbs: float) -> str:
    v = head["versions"]
    lines = [f"## Kernels: {head['config']['model']} shapes on {head['device']}", "",
             f"torch {v['torch']}, triton {v['triton']}; commit {head['commit'][:12]}"
             f"{' (dirty tree)' if head.get('dirty') else ''}; {head['date']}; {head['config']['dtype']} "
             f"channels_last. Copy bandwidth (read + write): {copy_gbs:.1f} GB/s." + common.load_note(head), ""]
    rows = [[r.op, r.shape, r.batch, r.mode, r.impl, r.ms, r.gb_per_s, f"{r.pct_of_copy_bw:.1f}%",
             None if r.speedup_vs_eager is None else f"{r.speedup_vs_eager:.2f}x"] for r in results]
    lines.append(common.markdown_table(["op", "CxHxW/stride", "batch", "mode", "impl", "ms", "GB/s (floor)",
                                        "% copy BW", "vs eager"], rows))
    if goals:
        lines += ["", "Goals:", "", common.goals_markdown(goals)]
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- `{s.what}`: {s.reason}" for s in skipped]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    epilog = "\n".join([__doc__] + [m.__doc__ for m in OP_MODULES.values()])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
    p.add_argument("--model", default="yynet_small_64", help="preset whose shapes are measured")
    p.add_argument("--device", default="auto", help="auto (GPU if visible), cpu or cuda")
    p.add_argument("--batch", help="comma-separated batch sizes (GPU default 64,256; CPU 16)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), help="GPU default bf16 (autocast), CPU fp32")
    p.add_argument("--impls", help=f"among {','.join(IMPL_FAMILIES)} or 'all' (GPU default all; CPU eager,yyfast)")
    p.add_argument("--ops", help=f"among {','.join(OPS)} (default both)")
    p.add_argument("--shapes", help="only these shapes, e.g. 256x32x32/s1,64x16x16 (default: all of the model's)")
    common.add_run_options(p, warmup_help="GPU 5, CPU 1", reps_help="GPU 50, CPU 5",
                           compile_help="GPU default max-autotune-no-cudagraphs")
    p.add_argument("--copy-mb", type=int, help="MiB per buffer for the copy-bandwidth measurement")
    p.add_argument("--save", action="store_true", help="write JSON and Markdown under bench/results/ with the "
                                                          "committed names (<device>-<date>-kernels.*)")
    return p.parse_args(argv)


def config_from_args(args) -> Config:
    dev, impls = common.check_run_options(args, IMPL_FAMILIES)
    if args.copy_mb is not None and args.copy_mb < 1:
        raise ValueError(f"--copy-mb={args.copy_mb} is not valid; it must be >= 1")
    return default_config(
        dev, model=args.model, device=args.device,
        batches=common.parse_int_list(args.batch, "--batch") if args.batch else None, dtype=args.dtype, impls=impls,
        ops=common.parse_choice_list(args.ops, "--ops", OPS) if args.ops else None,
        shapes=[v.strip() for v in args.shapes.split(",") if v.strip()] if args.shapes else None, warmup=args.warmup,
        reps=args.reps, budget_s=args.budget_s, deadline_s=args.deadline_s, compile_mode=args.compile_mode,
        copy_mb=args.copy_mb)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.save:
        stem = common.result_stem(common.pick_device(cfg.device), "kernels")
        args.json, args.md = args.json or f"{stem}.json", args.md or f"{stem}.md"
    try:
        doc = run(cfg, args.json, args.md, progress=not args.no_progress)
    except ValueError as exc:  # a --shapes entry the model does not have
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(doc["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
