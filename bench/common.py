"""Shared pieces of the benchmark scripts: device description, timing, result files, tables.

Timing: a warm-up, then up to ``reps`` timed repetitions (fewer if ``budget_s`` runs out, never
fewer than one), and the *median* is reported. On a GPU each repetition is bracketed by CUDA
events (so host overhead between launches counts only where it stalls the GPU); on the CPU by
``time.perf_counter``. Peak memory is ``torch.cuda.max_memory_allocated`` over the timed
repetitions on a GPU; on the CPU it is reported as null (torch's CPU allocator has no peak
counter, and neither tracemalloc nor the process RSS measures the tensors of one step honestly).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"

PEAK_MEM_NOTE_CPU = "null on CPU: torch's CPU allocator keeps no peak counter (RSS would count the whole process)"
PEAK_MEM_NOTE_GPU = "torch.cuda.max_memory_allocated over the timed repetitions, MiB"


# -- device and environment ------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    """``auto`` is the GPU when one is visible, else the CPU; ``cuda`` without a GPU is an error."""
    from yyfast.availability import resolve_device

    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device={name!r} is not valid; allowed values: 'auto', 'cpu', 'cuda'")
    return resolve_device(name)


def add_run_options(p, *, warmup_help: str, reps_help: str, compile_help: str) -> None:
    """The options both benchmarks take: timing, where results go, progress."""
    p.add_argument("--warmup", type=int, help=f"untimed calls first ({warmup_help})")
    p.add_argument("--reps", type=int, help=f"timed repetitions, at most ({reps_help})")
    p.add_argument("--budget-s", type=float, help="stop timing a configuration after this many seconds")
    p.add_argument("--deadline-s", type=float, help="skip the configurations not started after this many seconds")
    p.add_argument("--compile-mode", help=f"torch.compile mode ({compile_help})")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--md", help="write the Markdown table here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_run_options(args, impl_families) -> Tuple[torch.device, Optional[List[str]]]:
    """Validate ``--model``, ``--device``, ``--warmup``, ``--reps`` and ``--impls``; returns the
    device and the implementation families asked for (None: the device's defaults)."""
    from yyfast.config import list_models

    if args.model not in list_models():
        raise ValueError(f"--model={args.model!r} is not valid; allowed values: {', '.join(list_models())}")
    dev = pick_device(args.device)
    for name, value, low in (("--warmup", args.warmup, 0), ("--reps", args.reps, 1)):
        if value is not None and value < low:
            raise ValueError(f"{name}={value} is not valid; it must be >= {low}")
    impls = None
    if args.impls:
        impls = list(impl_families) if args.impls == "all" else parse_choice_list(args.impls, "--impls",
                                                                                  impl_families)
    return dev, impls


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_slug(device: torch.device) -> str:
    """A short file-name-safe name: ``nvidia-h100-80gb-hbm3`` or ``cpu-2core``."""
    if device.type == "cuda":
        return slugify(torch.cuda.get_device_name(device))
    return f"cpu-{os.cpu_count()}core"


def result_stem(device: torch.device, kind: str) -> Path:
    """``bench/results/<device-slug>-<YYYY-MM-DD>-<kind>``: the committed result files' names."""
    return RESULTS_DIR / f"{device_slug(device)}-{datetime.date.today().isoformat()}-{kind}"


def versions() -> Dict[str, Optional[str]]:
    import yyfast

    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # not installed or broken: the triton rows are skipped with the reason
        triton_version = None
    try:
        from yyfast import _C

        cpu_isa = _C.cpu_isa()  # which build of the C++ CPU span kernels ran
    except Exception:  # extension not built: the yyfast-cuda rows are skipped with the reason
        cpu_isa = None
    return {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "triton": triton_version, "yyfast": yyfast.__version__, "cpu_isa": cpu_isa}


def git_commit() -> Dict[str, object]:
    """The commit measured and whether the working tree had uncommitted changes.

    ``YYFAST_COMMIT`` overrides (for a copy of the tree without ``.git``, e.g. on the GPU machine).
    """
    env = os.environ.get("YYFAST_COMMIT")
    if env:
        return {"commit": env, "dirty": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit or "unknown", "dirty": bool(status)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def load_average() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def load_note(head: dict) -> str:
    """A warning when other processes competed for the CPU during the run (timings then vary widely)."""
    load, cpus = head.get("load_avg_1min"), head.get("cpu_count") or os.cpu_count() or 1
    if load is not None and load > 0.75 * cpus:
        return (f" The machine was shared during this run (1-minute load average {load:g} on {cpus} cores at the "
                f"start): CPU timings are noisy.")
    return ""


#: Environment variables that change CPU timings by large factors, recorded with every result:
#: glibc's allocator settings (with MALLOC_MMAP_MAX_=0 freed tensors are reused instead of being
#: page-faulted back: eager eval of yynet_small_64 at batch 256 ran 2.1x faster on the 2-core VM),
#: allocator preloads, thread counts and the C++ kernels' ISA override.
TUNING_ENV_PREFIXES = ("MALLOC_", "LD_PRELOAD", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "YYFAST_CPU_ISA")


def tuning_env() -> Dict[str, str]:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(TUNING_ENV_PREFIXES)}


def header(device: torch.device, config: dict) -> dict:
    commit = git_commit()
    return {"load_avg_1min": load_average(), "cpu_count": os.cpu_count(), "device": device_name(device),
            "device_type": device.type, "device_slug": device_slug(device),
            "versions": versions(), "commit": commit["commit"], "dirty": commit["dirty"], "env": tuning_env(),
            "date": datetime.date.today().isoformat(), "config": config,
            "peak_mem_note": PEAK_MEM_NOTE_GPU if device.type == "cuda" else PEAK_MEM_NOTE_CPU}


# -- timing ----------------------------------------------------------------------------------
@dataclass
class Timing:
    ms: float                 # median over the timed repetitions
    reps: int                 # how many repetitions were timed
    peak_mem_mb: Optional[float]
    min_ms: float = 0.0       # the fastest repetition: on a shared machine, the least disturbed one


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int, reps: int,
            budget_s: Optional[float] = None) -> Timing:
    """Median milliseconds of ``fn()`` after ``warmup`` untimed calls.

    ``budget_s`` bounds the timed part: repetitions stop once that much wall time has passed
    (at least one is always timed), so a slow configuration on a small CPU cannot run away.
    """
    if warmup < 0 or reps < 1:
        raise ValueError(f"warmup={warmup} and reps={reps} must be >= 0 and >= 1")
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: List[float] = []
    start_wall = time.perf_counter()
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        if budget_s is not None and time.perf_counter() - start_wall > budget_s:
            break
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Timing(ms=statistics.median(times), reps=len(times), peak_mem_mb=peak, min_ms=min(times))


class Terminated(BaseException):
    """Raised by SIGTERM (what `timeout` sends): a BaseException, so no per-configuration
    ``except Exception`` swallows it, and the scripts still write what they measured."""


@contextlib.contextmanager
def sigterm_raises():
    def handler(signum, frame):
        raise Terminated("SIGTERM")
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. under some test runners): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- output ----------------------------------------------------------------------------------
@dataclass
class Skipped:
    what: str
    reason: str


def short_error(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_json(path: Optional[str], head: dict, results: List, skipped: List[Skipped], extra: Optional[dict] = None
               ) -> None:
    """Write (or rewrite: the scripts call this after every configuration) the result file."""
    if not path:
        return
    doc = dict(head)
    if extra:
        doc.update(extra)
    doc["results"] = [dataclasses.asdict(r) for r in results]
    doc["skipped"] = [dataclasses.asdict(s) for s in skipped]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)  # atomic, so a run killed by a timeout leaves the last complete file


def sig(value: float, digits: int = 4) -> float:
    """Round to significant digits (not decimals): tiny test shapes give numbers far below 1."""
    return float(f"{value:.{digits}g}")


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 1 or value == 0:
            return f"{value:.{digits}f}"
        return f"{value:.3g}"  # keep three significant digits of small times and rates
    return str(value)


def markdown_table(columns: List[str], rows: List[List[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def write_text(path: Optional[str], text: str) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def set_dynamo_limits() -> None:
    """Every configuration compiles afresh; lift the recompile limit so none falls back to eager."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 256)


def backend_rows(device: torch.device) -> Dict[str, Optional[str]]:
    """``{backend: None if it can be benchmarked on device, else the reason}`` for the non-reference backends.

    Triton under ``TRITON_INTERPRET=1`` runs in Triton's Python interpreter: correct, but not a
    performance path, so it is reported as skipped rather than timed.
    """
    import yyfast

    out: Dict[str, Optional[str]] = {}
    for name, info in yyfast.backends().items():
        if name == "reference":
            continue
        if device.type not in info.get("devices", []):
            out[name] = f"not available on {device.type}: {info.get('reason') or 'no reason given'}"
        elif name == "triton" and os.environ.get("TRITON_INTERPRET", "0") == "1":
            out[name] = "TRITON_INTERPRET=1: Triton's interpreter is a correctness tool, not timed"
        else:
            out[name] = None
    return out


@dataclass
class Goal:
    name: str
    target: str
    measured: Optional[float] = None
    met: Optional[bool] = None
    note: str = ""


def goals_markdown(goals: List[Goal]) -> str:
    rows = [[g.name, g.target, fmt(g.measured), {True: "met", False: "NOT met", None: "n/a"}[g.met], g.note]
            for g in goals]
    return markdown_table(["goal", "target", "measured", "status", "note"], rows)


def parse_int_list(text: str, name: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}={text!r} is not valid; it must be a comma-separated list of positive "
                         "integers") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{name}={text!r} is not valid; it must be a comma-separated list of positive integers")
    return values


def parse_choice_list(text: str, name: str, allowed) -> List[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise ValueError(f"{name}={text!r} is not valid; allowed values: {', '.join(allowed)}")
    return values


