"""Whole-network throughput: a training step and inference, per implementation available here.

``python bench/throughput.py [--model yynet_small_64] [--json PATH] [--md PATH] [--plot PATH]``

Implementations (rows appear as the pieces exist; a missing one is listed under "skipped"):

* ``eager``: ``create_model(name, backend="reference")``, the pure-PyTorch network;
* ``compile``: the same under ``torch.compile`` (mode ``max-autotune`` on a GPU, default on CPU);
* ``yyfast-<b>``: ``create_model(name, backend=b)`` for every available non-reference backend;
* ``yyfast-<b>+compile``: that model under ``torch.compile``;
* ``optimized`` / ``optimized+cudagraph``: ``yyfast.optimize_for_inference(model)`` (eval only);
* ``onnxruntime``: ONNX Runtime's CPU provider running ``yyfast.export_onnx`` of the same model, with
  ``intra_op_num_threads = torch.get_num_threads()`` (eval fp32 on the CPU only): the runtime a CPU
  deployment would otherwise use. Its input is the same batch as a contiguous NCHW numpy array,
  converted once outside the timed calls.

Training step = forward, cross-entropy, backward, AdamW step (``set_to_none`` zero-grad).
Inference = eval mode under ``torch.no_grad``. Inputs are channels_last; dtypes fp32 and (on a
GPU) bf16 autocast. On the CPU the uncompiled eval rows of one batch are timed round-robin by short
blocks (each round gives every implementation a turn: a pause so the other runtime's threads stop
spinning, one untimed call, three timed ones; medians), so a load spike on a shared machine hits them
alike and their ratios hold. Each row: median ms per step, images/s, peak memory, and the speedup over
``eager`` at the same mode, dtype and batch. See ``bench/common.py`` for how time and memory are
measured. On the CPU the compiled rows are opt-in (``--impls``): inductor needs minutes here.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
MODES = ("train", "eval")
IMPL_FAMILIES = ("eager", "compile", "yyfast", "yyfast+compile", "optimized", "optimized+cudagraph", "onnxruntime")
#: The CPU goals: optimize_for_inference against onnxruntime at these eval batches (latency to throughput).
CPU_ORT_GOAL_BATCHES = (1, 16, 256)
CPU_ORT_GOAL = 1.2


@dataclass
class Config:
    model: str = "yynet_small_64"
    device: str = "auto"
    train_batches: List[int] = field(default_factory=list)
    eval_batches: List[int] = field(default_factory=list)
    dtypes: List[str] = field(default_factory=list)
    impls: List[str] = field(default_factory=list)
    modes: List[str] = field(default_factory=lambda: list(MODES))
    warmup: int = 2
    reps: int = 20
    budget_s: float = 10.0
    deadline_s: Optional[float] = None
    compile_mode: Optional[str] = None
    seed: int = 0


@dataclass
class Result:
    impl: str
    mode: str
    dtype: str
    batch: int
    ms: float
    images_per_s: float
    peak_mem_mb: Optional[float]
    speedup_vs_eager: Optional[float]
    reps: int
    min_ms: Optional[float] = None


def default_config(dev: torch.device, **overrides) -> Config:
    """GPU: train 64 and 256, eval 1024, fp32 and bf16, every implementation. CPU (2 cores here):
    train 64, eval 1, 16 and 256 (batch-1 latency to batch-256 throughput, the onnxruntime goals),
    fp32, no compiled rows, 1-3 reps, so a bare run ends within about 3 minutes."""
    if dev.type == "cuda":
        cfg = Config(train_batches=[64, 256], eval_batches=[1024], dtypes=["bf16", "fp32"],
                     impls=[f for f in IMPL_FAMILIES if f != "onnxruntime"], warmup=3, reps=20, budget_s=10.0,
                     compile_mode="max-autotune")
    else:
        # One step here takes 5-7 s of wall time (2 cores): after one warm-up call, timing stops
        # once budget_s has passed; pass --reps/--budget-s for steadier numbers.
        cfg = Config(train_batches=[64], eval_batches=list(CPU_ORT_GOAL_BATCHES), dtypes=["fp32"],
                     impls=["eager", "yyfast", "optimized", "onnxruntime"], warmup=1, reps=3, budget_s=4.0,
                     compile_mode="default")
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    return cfg


# -- building the implementations -----------------------------------------------------------
@dataclass
class Impl:
    name: str
    family: str
    backend: str                      # create_model backend
    compiled: bool = False
    optimized: bool = False
    cudagraph: bool = False
    onnx: bool = False                # an onnxruntime session on the model's ONNX export (eval only)


def list_impls(cfg: Config, device: torch.device, skipped: List[common.Skipped]) -> List[Impl]:
    impls: List[Impl] = []
    wanted = set(cfg.impls)
    if "eager" in wanted:
        impls.append(Impl("eager", "eager", "reference"))
    if "compile" in wanted:
        impls.append(Impl("compile", "compile", "reference", compiled=True))
    for backend, reason in common.backend_rows(device).items():
        for family, compiled in (("yyfast", False), ("yyfast+compile", True)):
            if family not in wanted:
                continue
            name = f"yyfast-{backend}" + ("+compile" if compiled else "")
            if reason:
                skipped.append(common.Skipped(name, reason))
            else:
                impls.append(Impl(name, family, backend, compiled=compiled))
    for family, graph in (("optimized", False), ("optimized+cudagraph", True)):
        if family not in wanted:
            continue
        if find_optimize() is None:
            skipped.append(common.Skipped(family, "yyfast.optimize_for_inference does not exist yet"))
        elif graph and device.type != "cuda":
            skipped.append(common.Skipped(family, "CUDA graphs need a GPU"))
        else:
            impls.append(Impl(family, family, "auto", optimized=True, cudagraph=graph))
    if "onnxruntime" in wanted:
        reason = onnxruntime_unavailable(device)
        if reason:
            skipped.append(common.Skipped("onnxruntime", reason))
        else:
            impls.append(Impl("onnxruntime", "onnxruntime", "reference", onnx=True))
    return impls


def onnxruntime_unavailable(device: torch.device) -> Optional[str]:
    """None if the onnxruntime row can run here, else why not."""
    if device.type != "cpu":
        return "measured with the CPU provider only (a CPU deployment's alternative to optimize_for_inference)"
    try:
        import onnx  # noqa: F401  (export_onnx loads the file with it)
        import onnxruntime  # noqa: F401
    except Exception as exc:  # not installed or broken
        return f"onnxruntime or onnx cannot be imported: {common.short_error(exc)}"
    return None


def build_onnxruntime_step(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """One inference batch of ``model``'s own ``yyfast.export_onnx`` file in onnxruntime's CPU provider,
    with as many intra-op threads as torch uses (the comparison is then thread for thread)."""
    import os
    import tempfile

    import onnxruntime as ort
    import yyfast

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        yyfast.export_onnx(model, path, check=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.detach().cpu().contiguous().numpy()}

    def infer():
        return session.run(None, feed)
    return infer


def find_optimize():
    """``yyfast.optimize_for_inference``, or the same function from ``yyfast.inference`` while the
    package does not export it yet; None if neither exists."""
    import yyfast

    fn = getattr(yyfast, "optimize_for_inference", None)
    if fn is None:
        try:
            from yyfast.inference import optimize_for_inference as fn
        except Exception:  # not written yet, or broken: the optimized rows are skipped with the reason
            return None
    return fn


def _call_optimize(model: torch.nn.Module, impl: Impl, batch: int, dtype: Optional[torch.dtype],
                   device: torch.device):
    """``optimize_for_inference`` with only the keyword arguments its signature accepts."""
    fn = find_optimize()
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = {}
    if impl.cudagraph:
        if "cuda_graph" not in params:
            raise NotImplementedError("optimize_for_inference has no cuda_graph option")
        kwargs["cuda_graph"] = True
    for key in ("batch_size", "max_batch_size"):
        if key in params:
            kwargs[key] = batch
    if "example_input" in params:
        kwargs["example_input"] = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    if dtype is not None and "dtype" in params:
        kwargs["dtype"] = dtype
    return fn(model, **kwargs)


def build_step(impl: Impl, cfg: Config, mode: str, dtype_name: str, batch: int, device: torch.device
               ) -> Callable[[], object]:
    """A closure running one training step or one inference batch of ``impl``."""
    import yyfast
    from yyfast.config import INPUT_SIZES

    torch.manual_seed(cfg.seed)
    dtype = DTYPES[dtype_name]
    model = yyfast.create_model(cfg.model, backend=impl.backend).to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch, *INPUT_SIZES[cfg.model], device=device).to(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    # torch.compile's max-autotune mode replays CUDA graphs: tell it where each step begins, so a
    # step never reads outputs the next replay overwrote.
    mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
    begin = mark if (impl.compiled and device.type == "cuda" and mark is not None) else (lambda: None)
    if mode == "eval":
        model.eval()
        if impl.onnx:
            return build_onnxruntime_step(model, x)
        if impl.optimized:
            model = _call_optimize(model, impl, batch, dtype, device)
        net = torch.compile(model, mode=cfg.compile_mode, dynamic=False) if impl.compiled else model

        def infer():
            begin()
            with torch.no_grad(), autocast():
                return net(x)
        return infer
    model.train()
    net = torch.compile(model, mode=cfg.compile_mode, dynamic=False) if impl.compiled else model
    target = torch.randint(0, model.config.num_classes, (batch,), device=device)
    # fused=True is the fast AdamW on a GPU; every implementation gets the same optimizer.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")

    def train_step():
        begin()
        with autocast():
            loss = F.cross_entropy(net(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return train_step


# -- the run ---------------------------------------------------------------------------------
def configurations(cfg: Config, impls: List[Impl], device: torch.device) -> List[Tuple[Impl, str, str, int]]:
    """Every uncompiled row first (eager first of all: speedups need it), then the compiled rows,
    whose compilation takes longest: a run cut short by a deadline or timeout loses those only."""
    out = []
    for dtype in cfg.dtypes:
        for mode in cfg.modes:
            for batch in (cfg.train_batches if mode == "train" else cfg.eval_batches):
                for impl in impls:
                    if (impl.optimized or impl.onnx) and mode == "train":
                        continue  # optimize_for_inference and onnxruntime give eval-only models
                    if impl.onnx and dtype != "fp32":
                        continue  # the export is float32
                    out.append((impl, mode, dtype, batch))
    # stable sort; among the compiled rows the plain `compile` baseline (which the goals need) comes first
    return sorted(out, key=lambda cfg_: (cfg_[0].compiled, cfg_[0].family == "yyfast+compile"))


def compute_goals(results: List[Result], device: torch.device, model: str) -> List[common.Goal]:
    def ms(impl_prefix: str, mode: str, dtype: str, batch: int, exact: bool = False) -> Optional[float]:
        rows = [r for r in results if r.mode == mode and r.dtype == dtype and r.batch == batch
                and (r.impl == impl_prefix if exact else r.impl.startswith(impl_prefix))]
        return min((r.ms for r in rows), default=None)

    def goal(name, target, base, fast, threshold, note):
        if base is None or fast is None:
            return common.Goal(name, target, None, None, note + " (not measured in this run)")
        ratio = base / fast
        return common.Goal(name, target, ratio, ratio >= threshold, note)

    goals = []
    if device.type == "cuda":
        if model != "yynet_small_64":
            return goals
        best_yy = ms("yyfast-", "train", "bf16", 64)
        goals.append(goal("train bf16 b64 vs eager", ">= 2.5x", ms("eager", "train", "bf16", 64, True), best_yy, 2.5,
                          "best yyfast-* row"))
        goals.append(goal("train bf16 b64 vs compile", ">= 1.3x", ms("compile", "train", "bf16", 64, True), best_yy,
                          1.3, "best yyfast-* row"))
        best_inf = min([v for v in (ms("yyfast-", "eval", "bf16", 1024), ms("optimized", "eval", "bf16", 1024))
                        if v is not None], default=None)
        goals.append(goal("eval bf16 b1024 vs compile", ">= 1.5x", ms("compile", "eval", "bf16", 1024, True),
                          best_inf, 1.5, "best yyfast-*/optimized* row"))
    elif model == "yynet_small_64":
        goals.append(goal("CPU eval fp32 b256, C++ ops vs eager", ">= 1.3x", ms("eager", "eval", "fp32", 256, True),
                          ms("yyfast-cuda", "eval", "fp32", 256, True), 1.3, "yyfast-cuda backend on CPU tensors"))
        for batch in CPU_ORT_GOAL_BATCHES:
            goals.append(goal(f"CPU eval fp32 b{batch}, optimized vs onnxruntime", f">= {CPU_ORT_GOAL}x",
                              ms("onnxruntime", "eval", "fp32", batch, True),
                              ms("optimized", "eval", "fp32", batch, True),
                              CPU_ORT_GOAL, "optimize_for_inference vs onnxruntime on our export, same threads, "
                              "default allocator"))
    return goals


def run(cfg: Config, json_path: Optional[str] = None, md_path: Optional[str] = None, plot_path: Optional[str] = None,
        progress: bool = True) -> dict:
    from tqdm import tqdm

    device = common.pick_device(cfg.device)
    common.set_dynamo_limits()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    skipped: List[common.Skipped] = []
    impls = list_impls(cfg, device, skipped)
    head = common.header(device, asdict(cfg))
    results: List[Result] = []
    started = time.perf_counter()
    todo = configurations(cfg, impls, device)
    bar = tqdm(total=len(todo), desc="throughput", unit="config", disable=not progress, file=sys.stderr)
    current: List[str] = []  # the configuration being measured, for the message if a timeout stops it
    with common.sigterm_raises():
        try:
            _measure(todo, bar, cfg, device, head, results, skipped, json_path, started, current)
        except common.Terminated:
            skipped.append(common.Skipped(f"{current[-1] if current else 'start'} and every later configuration",
                                          f"interrupted by SIGTERM (a timeout) after "
                                          f"{time.perf_counter() - started:.0f} s"))
    bar.close()
    goals = compute_goals(results, device, cfg.model)
    extra = {"goals": [asdict(g) for g in goals], "wall_s": round(time.perf_counter() - started, 1)}
    common.write_json(json_path, head, results, skipped, extra)
    text = render_markdown(head, results, skipped, goals)
    common.write_text(md_path, text)
    if plot_path:
        plot(results, head, plot_path)
    doc = dict(head, results=[asdict(r) for r in results], skipped=[asdict(s) for s in skipped], **extra)
    doc["markdown"] = text
    return doc


def interleaved_groups(todo: List[Tuple[Impl, str, str, int]], device: torch.device
                       ) -> List[List[Tuple[Impl, str, str, int]]]:
    """``todo`` cut into groups timed together: on the CPU, the uncompiled eval rows of one dtype and
    batch form one group (timed round-robin, so their ratios, e.g. optimized vs onnxruntime, are side
    by side in time on a shared machine); every other configuration is a group of its own."""
    groups: List[List[Tuple[Impl, str, str, int]]] = []
    for conf in todo:
        impl, mode, dtype, batch = conf
        joinable = device.type == "cpu" and mode == "eval" and not impl.compiled
        last = groups[-1][-1] if groups else None
        if joinable and last is not None and not last[0].compiled and last[1:] == (mode, dtype, batch):
            groups[-1].append(conf)
        else:
            groups.append([conf])
    return groups


# Switching between thread pools: onnxruntime's intra-op threads and PyTorch's OpenMP threads keep
# spinning for a while after a call, so a call right after the other runtime's competes with its
# spinners. Measured here (yynet_small_64, batch 1, 2 threads, 2-core EPYC): optimized 6.05 ms alone,
# 12.3 ms when alternated call by call with onnxruntime (which went 3.28 -> 9.16 ms), and still 13.1 ms
# two untimed calls after the switch; after a 0.25 s pause and one untimed call both were back to
# their solo times (5.3 and 3.5 ms). So each turn pauses, settles, then times a short block.
SWITCH_PAUSE_S = 0.25
SETTLE_CALLS = 1
BLOCK_CALLS = 3


def time_round_robin(fns: List[Callable[[], object]], device: torch.device, warmup: int, reps: int,
                     budget_s: Optional[float] = None) -> List[common.Timing]:
    """``common.time_fn`` for several functions at once, interleaved by short blocks: every round gives
    each function a turn (a pause of ``SWITCH_PAUSE_S`` so the previous runtime's threads stop
    spinning, ``SETTLE_CALLS`` untimed calls, then up to ``BLOCK_CALLS`` timed calls), and each gets the
    median of its timed calls (``reps`` of them, at most). A load spike from another process then hits
    every implementation alike instead of one of them. ``budget_s`` is per function: rounds stop once
    ``budget_s * len(fns)`` seconds have passed (at least one round is always timed)."""
    if len(fns) == 1:
        return [common.time_fn(fns[0], device, warmup, reps, budget_s)]
    if warmup < 0 or reps < 1:
        raise ValueError(f"warmup={warmup} and reps={reps} must be >= 0 and >= 1")
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: List[List[float]] = [[] for _ in fns]
    start_wall = time.perf_counter()
    while len(times[0]) < reps:
        block = min(BLOCK_CALLS, reps - len(times[0]))
        for fn, out in zip(fns, times):
            if device.type == "cpu":
                time.sleep(SWITCH_PAUSE_S)
            for _ in range(SETTLE_CALLS):
                fn()
            for _ in range(block):
                common.sync(device)
                t0 = time.perf_counter()
                fn()
                common.sync(device)
                out.append((time.perf_counter() - t0) * 1e3)
        if budget_s is not None and time.perf_counter() - start_wall > budget_s * len(fns):
            break
    return [common.Timing(ms=statistics.median(t), reps=len(t), peak_mem_mb=None, min_ms=min(t)) for t in times]


def _measure(todo: List[Tuple[Impl, str, str, int]], bar, cfg: Config, device: torch.device, head: dict,
             results: List[Result], skipped: List[common.Skipped], json_path: Optional[str], started: float,
             current: List[str]) -> None:
    """Time every configuration of ``todo`` (a group at a time, see ``interleaved_groups``); results and
    skips are appended as they happen."""
    eager_ms = {}
    for group in interleaved_groups(todo, device):
        names = [f"{impl.name} {mode} {dtype} b{batch}" for impl, mode, dtype, batch in group]
        current.append(" + ".join(names))
        bar.set_postfix_str(current[-1])
        if cfg.deadline_s is not None and time.perf_counter() - started > cfg.deadline_s:
            skipped += [common.Skipped(what, f"--deadline-s {cfg.deadline_s:g} s reached before this configuration")
                        for what in names]
            bar.update(len(group))
            continue
        confs, steps = [], []  # the configurations that build, and their steps
        try:
            for conf, what in zip(group, names):
                try:
                    steps.append(build_step(conf[0], cfg, conf[1], conf[2], conf[3], device))
                    confs.append(conf)
                except Exception as exc:  # a missing kernel, an unsupported option: report, go on
                    skipped.append(common.Skipped(what, common.short_error(exc)))
            timings = []
            if steps:
                try:
                    timings = time_round_robin(steps, device, cfg.warmup, cfg.reps, cfg.budget_s)
                except Exception as exc:  # out of memory, a kernel failing at run time: report, go on
                    skipped += [common.Skipped(f"{i.name} {m} {d} b{b}", common.short_error(exc))
                                for i, m, d, b in confs]
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
        finally:
            steps = None
            if any(impl.compiled for impl, *_ in group):
                torch._dynamo.reset()
        bar.update(len(group))
        for (impl, mode, dtype, batch), timing in zip(confs, timings):
            if impl.name == "eager":
                eager_ms[(mode, dtype, batch)] = timing.ms
        for (impl, mode, dtype, batch), timing in zip(confs, timings):
            base = eager_ms.get((mode, dtype, batch))
            results.append(Result(impl.name, mode, dtype, batch, common.sig(timing.ms),
                                  common.sig(batch / timing.ms * 1e3),
                                  None if timing.peak_mem_mb is None else round(timing.peak_mem_mb, 1),
                                  None if base is None else round(base / timing.ms, 3), timing.reps,
                                  common.sig(timing.min_ms)))
        common.write_json(json_path, head, results, skipped)


def render_markdown(head: dict, results: List[Result], skipped: List[common.Skipped], goals: List[common.Goal]) -> str:
    v = head["versions"]
    lines = [f"## Throughput: {head['config']['model']} on {head['device']}", "",
             f"torch {v['torch']}, triton {v['triton']}, python {v['python']}; commit {head['commit'][:12]}"
             f"{' (dirty tree)' if head.get('dirty') else ''}; {head['date']}. Peak memory: {head['peak_mem_note']}."
             + common.load_note(head),
             ""]
    rows = [[r.impl, r.mode, r.dtype, r.batch, r.ms, r.images_per_s, r.peak_mem_mb,
             None if r.speedup_vs_eager is None else f"{r.speedup_vs_eager:.2f}x"] for r in results]
    lines.append(common.markdown_table(["impl", "mode", "dtype", "batch", "ms", "images/s", "peak MiB",
                                        "vs eager"], rows))
    if goals:
        lines += ["", "Goals:", "", common.goals_markdown(goals)]
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- `{s.what}`: {s.reason}" for s in skipped]
    return "\n".join(lines) + "\n"


def plot(results: List[Result], head: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r.mode, r.dtype, r.batch) for r in results})
    impls = list(dict.fromkeys(r.impl for r in results))
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(4.5 * max(1, len(groups)), 4), squeeze=False)
    for ax, (mode, dtype, batch) in zip(axes[0], groups):
        rows = {r.impl: r for r in results if (r.mode, r.dtype, r.batch) == (mode, dtype, batch)}
        names = [n for n in impls if n in rows]
        bars = ax.bar(range(len(names)), [rows[n].images_per_s for n in names], color="tab:blue")
        speedups = [rows[n].speedup_vs_eager for n in names]
        ax.bar_label(bars, labels=["" if v is None else f"{v:.2f}x" for v in speedups], fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{mode} {dtype} batch {batch}", fontsize=9)
        ax.set_ylabel("images/s")
    fig.suptitle(f"{head['config']['model']} on {head['device']}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", default="yynet_small_64", help="preset name (default yynet_small_64)")
    p.add_argument("--device", default="auto", help="auto (GPU if visible), cpu or cuda")
    p.add_argument("--batch", help="comma-separated batch sizes for both modes (overrides the two below)")
    p.add_argument("--train-batch", help="training batch sizes (GPU default 64,256; CPU 64)")
    p.add_argument("--eval-batch", help="inference batch sizes (GPU default 1024; CPU 1,16,256)")
    p.add_argument("--dtypes", help="fp32,bf16 (GPU default bf16,fp32; CPU fp32)")
    p.add_argument("--impls", help=f"families among {','.join(IMPL_FAMILIES)} or 'all' "
                                   "(GPU default all but onnxruntime; CPU eager,yyfast,optimized,onnxruntime)")
    p.add_argument("--modes", help="train,eval (default both)")
    common.add_run_options(p, warmup_help="GPU 3, CPU 1", reps_help="GPU 20, CPU 3",
                           compile_help="GPU default max-autotune; CPU default")
    p.add_argument("--plot", help="write a bar chart (PNG) here")
    p.add_argument("--save", action="store_true", help="write JSON, Markdown and plot under bench/results/ with "
                                                          "the committed names (<device>-<date>-throughput.*)")
    return p.parse_args(argv)


def config_from_args(args) -> Config:
    dev, impls = common.check_run_options(args, IMPL_FAMILIES)
    train = common.parse_int_list(args.batch or args.train_batch, "--train-batch") \
        if (args.batch or args.train_batch) else None
    evalb = common.parse_int_list(args.batch or args.eval_batch, "--eval-batch") \
        if (args.batch or args.eval_batch) else None
    return default_config(
        dev, model=args.model, device=args.device, train_batches=train, eval_batches=evalb,
        dtypes=common.parse_choice_list(args.dtypes, "--dtypes", tuple(DTYPES)) if args.dtypes else None,
        impls=impls, modes=common.parse_choice_list(args.modes, "--modes", MODES) if args.modes else None,
        warmup=args.warmup, reps=args.reps, budget_s=args.budget_s, deadline_s=args.deadline_s,
        compile_mode=args.compile_mode)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.save:
        stem = common.result_stem(common.pick_device(cfg.device), "throughput")
        args.json, args.md, args.plot = (args.json or f"{stem}.json", args.md or f"{stem}.md",
                                         args.plot or f"{stem}.png")
    doc = run(cfg, args.json, args.md, args.plot, progress=not args.no_progress)
    print(doc["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
