"""The training run: data on the device, model, recipe, epochs, outputs, checkpoints, resume."""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from .. import __version__ as yyfast_version
from .. import create_model
from ..availability import resolve_device
from ..config import get_config
from ..preprocess import Preprocessing, preprocessing
from ..sync_bn import convert_sync_batchnorm
from . import distributed as dist_utils
from .checkpoint import (BEST_NAME, CHECKPOINT_NAME, EXPORT_DIR, atomic_write_json, atomic_write_text,
                         remove_stale_temp_files, rng_state, save_checkpoint, set_rng_state)
from .ema import ModelEMA
from .engine import evaluate_batches, train_batches
from .fingerprint import describe as describe_fingerprint
from .plot import plot_curves
from .sources import Source, make_source
from .recipe import Precision, build_optimizer, build_scheduler, choose_precision, current_lr, update_weight_decay

#: 2: plain types only (RNG states as tensors/lists), the data's fingerprint and image counts.
CHECKPOINT_FORMAT = "yyfast-train-2"
MODEL_OPTIONS = ("act", "fusion", "se_gate", "yin_input", "head_dropout", "mbconv_dropout")


def model_options(args: argparse.Namespace, num_classes: int) -> Dict[str, Any]:
    opts = {k: getattr(args, k) for k in MODEL_OPTIONS if getattr(args, k, None) is not None}
    if get_config(args.model).num_classes != num_classes:
        opts["num_classes"] = num_classes  # the head follows the dataset's classes
    return opts


def check_backend(backend: str, device: torch.device) -> None:
    """A ``ValueError`` naming the reason when an explicitly requested ``--backend`` cannot run on ``device``."""
    if backend == "auto":
        return
    from ..availability import backends

    info = backends()[backend]
    if device.type not in info["devices"]:
        usable = ", ".join(n for n, i in backends().items() if device.type in i["devices"])
        raise ValueError(f"--backend {backend} cannot run on {device.type}: {info['reason'] or 'not available'} "
                         f"Backends that run here: auto, {usable}")


def build_model(args: argparse.Namespace, num_classes: int, device: torch.device) -> torch.nn.Module:
    model = create_model(args.model, backend=args.backend, **model_options(args, num_classes)).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _progress_factory(args, world):
    if args.no_progress or not world.is_main:
        return None
    from tqdm.auto import tqdm

    # disable=None: tqdm turns itself off when stderr is not a terminal (logs stay clean).
    return functools.partial(tqdm, disable=None, dynamic_ncols=True)


def _fmt_pct(x: Optional[float]) -> str:
    return "   -  " if x is None else f"{100 * x:5.2f}%"


def _epoch_line(m: Dict[str, Any], epochs: int) -> str:
    ema = (f"ema loss {m['ema_test_loss']:.4f} acc {_fmt_pct(m['ema_test_acc'])}" if m["ema_test_acc"] is not None
           else "ema not started")
    return (f"epoch {m['epoch']:3d}/{epochs}  train loss {m['train_loss']:.4f} acc {_fmt_pct(m['train_acc'])}  "
            f"test loss {m['test_loss']:.4f} acc {_fmt_pct(m['test_acc'])}  {ema}  lr {m['lr']:.2e} "
            f"wd {m['weight_decay']:.2e}  {m['images_per_s']:.0f} img/s  {m['wall_time_s']:.1f} s")


def _best(history: List[Dict[str, Any]], key: str):
    vals = [(h[key], h["epoch"]) for h in history if h.get(key) is not None]
    if not vals:
        return None, None
    best = max(vals, key=lambda v: (v[0], -v[1]))  # ties: the earliest epoch
    return best[0], best[1]


def best_entry(history: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The epoch with the best reported test accuracy: the EMA's where it has started and beats the raw
    model's, else the raw model's (ties: the earliest epoch). ``None`` before the first epoch."""
    best = None
    for h in history:
        ema_acc = h.get("ema_test_acc")
        source, acc = ("ema", ema_acc) if ema_acc is not None and ema_acc > h["test_acc"] else ("raw", h["test_acc"])
        if best is None or acc > best["test_acc"]:
            best = {"source": source, "epoch": h["epoch"], "test_acc": acc}
    return best


def make_summary(args, history, model, classes, device, precision, world, num_train, num_test,
                 elapsed: float) -> Dict[str, Any]:
    last = history[-1] if history else {}
    best_raw, best_raw_epoch = _best(history, "test_acc")
    best_ema, best_ema_epoch = _best(history, "ema_test_acc")
    return {
        "model": args.model, "config": model.config.to_dict(), "backend": args.backend,
        "epochs": args.epochs, "epochs_completed": len(history), "finished": len(history) >= args.epochs,
        "last": {k: last.get(k) for k in ("epoch", "test_loss", "test_acc", "ema_test_loss", "ema_test_acc")},
        "best": {"test_acc": best_raw, "test_acc_epoch": best_raw_epoch,
                 "ema_test_acc": best_ema, "ema_test_acc_epoch": best_ema_epoch},
        # best.pt: which model (raw or EMA), epoch and accuracy; the EMA's where it is the better reported one
        "best_checkpoint": best_entry(history), "best_source": (best_entry(history) or {}).get("source"),
        "note": "test_acc is the raw model, ema_test_acc the EMA; 'best' is the maximum over epochs (what the "
                "authors' code reports, for the raw model), 'last' the final epoch.",
        "total_time_s": elapsed, "train_time_s": sum(h["epoch_time_s"] for h in history),
        "device": str(device), "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                               else platform.processor() or platform.machine()),
        "world_size": world.size, "precision": precision.name, "torch_version": torch.__version__,
        "yyfast_version": yyfast_version, "python_version": platform.python_version(),
        "num_parameters": sum(p.numel() for p in model.parameters()), "classes": classes,
        "num_train": num_train, "num_test": num_test, "args": vars(args),
    }


def train(args: argparse.Namespace, checkpoint: Optional[Dict[str, Any]] = None, log=print) -> Dict[str, Any]:
    """Run (or continue, given the loaded ``checkpoint``) the training ``args`` describe; returns the summary."""
    world = dist_utils.world_from_env()
    device = dist_utils.init(world, resolve_device(args.device))
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _train(args, checkpoint, world, device, log if world.is_main else (lambda *a, **k: None))
    finally:
        torch.set_num_threads(threads)  # train() may run inside a bigger program (tests, notebooks)
        dist_utils.shutdown(world)


def make_out_dir(out: str) -> List[str]:
    """Create ``out`` (and missing parents); returns the folders created. ``ValueError`` if it cannot be."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is a file, not a folder; choose a folder for the run's outputs")
    missing, parent = [], os.path.abspath(out)
    while not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {out!r} cannot be created: {exc.strerror or exc}") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out!r} is not writable")
    return missing


def remove_if_empty(folders: List[str]) -> None:
    """Undo ``make_out_dir`` after a failed start: the folders it created, deepest first, if still empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            pass  # not empty (something was written) or already gone: keep it


def _train(args, checkpoint, world, device, log) -> Dict[str, Any]:
    out = args.out
    ckpt_path = os.path.join(out, CHECKPOINT_NAME)
    if checkpoint is None and os.path.exists(ckpt_path):
        raise ValueError(f"--out {out!r} already holds {CHECKPOINT_NAME}: pass --resume to continue that run, "
                         "or choose another --out")
    created = make_out_dir(out) if world.is_main else []
    try:
        return _run(args, checkpoint, world, device, log)
    except BaseException:
        remove_if_empty(created)  # a data or option error leaves no empty --out behind
        raise


def _check_same_data(checkpoint, dataset, num_train: int, num_test: int, data: str) -> None:
    """``dataset``: anything with ``classes`` and ``fingerprint`` (a ``sources.Source``)."""
    """``--resume`` continues on the data the run started with, or not at all."""
    saved_fp = checkpoint.get("data_fingerprint")
    if saved_fp is None:
        return  # a checkpoint from before fingerprints: nothing to compare
    what = f"--resume: --data {data!r} is not the data this run was trained on"
    if list(checkpoint.get("classes", [])) != list(dataset.classes):
        raise ValueError(f"{what}: classes {', '.join(dataset.classes[:5])}... differ from the checkpoint's "
                         f"{', '.join(list(checkpoint['classes'])[:5])}...")
    counts = (checkpoint.get("num_train"), checkpoint.get("num_test"))
    if counts != (num_train, num_test):
        raise ValueError(f"{what}: {num_train} train / {num_test} test images, the checkpoint's had "
                         f"{counts[0]} / {counts[1]}")
    if saved_fp != dataset.fingerprint:
        raise ValueError(f"{what}: its content ({describe_fingerprint(dataset.fingerprint)}) differs from the "
                         f"checkpoint's ({describe_fingerprint(saved_fp)})")


@dataclass
class _Run:
    """What the steps of one training run share: its options, process group, data, model and recipe."""
    args: argparse.Namespace
    world: dist_utils.World
    device: torch.device
    log: Callable[[str], None]
    progress: Optional[Callable]
    source: Source
    prep: Preprocessing
    raw_model: torch.nn.Module  # the YYNet (checkpoints, clipping, EMA, evaluation)
    precision: Precision
    steps: int  # optimizer steps per epoch
    optimizer: Any
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: Optional[ModelEMA]
    model: Optional[torch.nn.Module] = None  # what runs forward in training: raw_model, DDP-wrapped, compiled
    history: List[Dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    elapsed_before: float = 0.0  # seconds the run spent before this process resumed it

    @property
    def out(self) -> str:
        return self.args.out

    def summary(self, elapsed: float) -> Dict[str, Any]:
        return make_summary(self.args, self.history, self.raw_model, self.source.classes, self.device,
                            self.precision, self.world, self.source.num_train, self.source.num_test, elapsed)

    def write_outputs(self, elapsed: float) -> None:
        """metrics.jsonl, summary.json and curves.png for the epochs so far."""
        atomic_write_text(os.path.join(self.out, "metrics.jsonl"), "".join(_json_line(h) for h in self.history))
        atomic_write_json(os.path.join(self.out, "summary.json"), self.summary(elapsed))
        if self.history:
            plot_curves(self.history, os.path.join(self.out, "curves.png"),
                        title=f"{self.args.model} ({self.args.data})")


def _run(args, checkpoint, world, device, log) -> Dict[str, Any]:
    """The run's steps: checks and seeds, data, model and recipe, resume, then per epoch train, evaluate
    and save; last the summary (and exports)."""
    _start(args, world, device, log)
    run = _build(args, checkpoint, world, device, log)
    if checkpoint is not None:
        _resume(run, checkpoint)
    _wrap_model(run)
    if world.is_main and checkpoint is not None:
        run.write_outputs(run.elapsed_before)  # metrics.jsonl may have a line from after the checkpoint: rewrite it

    tb_writer = None
    if world.is_main and getattr(args, "tensorboard", False):
        from torch.utils.tensorboard import SummaryWriter  # checked importable by the CLI

        tb_writer = SummaryWriter(os.path.join(args.out, "tb"))
    # tqdm draws bars on a terminal; in a log file (stdout redirected) --log-interval prints lines instead.
    step_log = log if getattr(args, "log_interval", 0) and not sys.stdout.isatty() else None

    stop = args.epochs if args.stop_after_epochs is None else min(args.epochs, args.stop_after_epochs)
    run_start = time.perf_counter()
    for epoch in range(run.start_epoch, stop):
        metrics, ema_model = _train_and_evaluate_epoch(run, epoch, run_start, step_log)
        if world.is_main:
            _save_epoch(run, epoch, metrics, ema_model, tb_writer)
        dist_utils.barrier(world)

    if tb_writer is not None:
        tb_writer.close()
    return _finish(run, run.elapsed_before + time.perf_counter() - run_start)


def _start(args, world, device, log) -> None:
    """Option checks that need the process group, leftovers of a killed run, and the seeds."""
    if args.batch_size % world.size:
        raise ValueError(f"--batch-size {args.batch_size} is the global batch and must be divisible by the "
                         f"number of processes ({world.size})")
    check_backend(args.backend, device)
    if world.is_main:
        for path in remove_stale_temp_files(args.out):  # left by a run killed while writing (kill -9)
            log(f"removed {path}, a temporary file of an interrupted write")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)


def _build(args, checkpoint, world, device, log) -> _Run:
    """The data (the decoded cache on the device, or streamed files: sources.py), the model and the recipe."""
    progress = _progress_factory(args, world)
    source = make_source(args, world, device, progress, log)
    classes = source.classes
    prep = preprocessing(args.model, args.recipe, args.image_size)
    if checkpoint is not None:
        _check_same_data(checkpoint, source, source.num_train, source.num_test, args.data)
    log(f"data: {source.description}: {source.num_train} train / {source.num_test} test images, "
        f"{len(classes)} classes, {args.image_size}x{args.image_size}")

    raw_model = build_model(args, len(classes), device)
    if args.sync_bn and world.distributed:
        # Every BatchNorm, the fused spans' included, on any device (yyfast.sync_bn).
        raw_model = convert_sync_batchnorm(raw_model)
    precision = choose_precision(args.amp, device)
    steps = source.steps(args.batch_size)
    if steps < 1:
        raise ValueError(f"--batch-size {args.batch_size} is larger than the training set per process "
                         f"({source.num_train // world.size} images)")
    total_steps = steps * args.epochs
    planned = (checkpoint or {}).get("scheduler", {}).get("total_steps")
    if planned is not None and planned != total_steps:
        # A world size whose partial-batch rule gives another step count (yyfast.train.engine):
        # the saved learning-rate schedule would run out (or stop short) before the last epoch.
        raise ValueError(f"--resume: with {world.size} process(es) an epoch has {steps} steps, but the run's schedule "
                         f"was planned for {planned // args.epochs} ({planned} in all); resume with the process "
                         "count it started with")
    optimizer = build_optimizer(raw_model.parameters(), args.lr, args.wd_factor)
    scheduler = build_scheduler(optimizer, args.lr, total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.use_scaler)
    ema = ModelEMA(raw_model, start_step=round(args.ema_start * total_steps), avg_weight=args.ema_avg_weight) \
        if args.ema_start < 1.0 else None
    return _Run(args, world, device, log, progress, source, prep, raw_model, precision, steps, optimizer, scheduler,
                scaler, ema)


def _resume(run: _Run, checkpoint: Dict[str, Any]) -> None:
    """Load the checkpoint's weights, recipe state, history and random states into ``run``."""
    run.raw_model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    if run.ema is not None and checkpoint.get("ema") is not None:
        run.ema.load_state_dict(checkpoint["ema"])
    run.history = list(checkpoint["history"])
    run.start_epoch = int(checkpoint["epoch"])
    run.elapsed_before = float(checkpoint["elapsed_s"])
    set_rng_state(checkpoint["rng"])  # last: model building above consumed random numbers
    run.log(f"resumed from {os.path.join(run.out, CHECKPOINT_NAME)} after epoch {run.start_epoch}")


def _wrap_model(run: _Run) -> None:
    """``run.model``: the YYNet under DDP (several processes) and ``torch.compile`` (--compile)."""
    args, world = run.args, run.world
    model = run.raw_model
    if world.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            run.raw_model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)
    run.model = model
    n_params = sum(p.numel() for p in run.raw_model.parameters())
    run.log(f"model {args.model} ({n_params:,} parameters, backend {args.backend}), {run.precision.name}, "
            f"{world.size} process(es), {args.epochs} epochs x {run.steps} steps, batch {args.batch_size}, "
            f"max lr {args.lr}")


def _train_and_evaluate_epoch(run: _Run, epoch: int, run_start: float, step_log):
    """One epoch's optimizer steps, then the test set with the model and its EMA; appends and logs the
    epoch's metrics. Returns them and the EMA model (None without one)."""
    args, world, device, source = run.args, run.world, run.device, run.source
    result = train_batches(run.model, run.raw_model, source.train_batches(epoch), run.steps, run.optimizer,
                           run.scheduler, run.scaler, run.precision, run.ema, epoch=epoch, first_step=epoch * run.steps,
                           clip_norm=args.clip, world=world, device=device, progress=run.progress,
                           log_interval=getattr(args, "log_interval", 0), log=step_log)
    weight_decay = update_weight_decay(run.optimizer, args.wd_factor)
    dist_utils.broadcast_buffers(run.raw_model, world)
    test_loss, test_acc = evaluate_batches(run.raw_model, *source.eval_batches(), run.precision, world, device,
                                           run.progress, desc="test")
    ema_model = run.ema.model() if run.ema is not None else None
    if ema_model is not None:
        dist_utils.broadcast_buffers(ema_model, world)  # its BN averages came from per-rank statistics
    ema_loss, ema_acc = (evaluate_batches(ema_model, *source.eval_batches(), run.precision, world, device,
                                          run.progress, desc="test (EMA)") if ema_model is not None else (None, None))
    elapsed = run.elapsed_before + time.perf_counter() - run_start
    metrics = {"epoch": epoch + 1, "train_loss": result.loss, "train_acc": result.acc,
               "test_loss": test_loss, "test_acc": test_acc, "ema_test_loss": ema_loss, "ema_test_acc": ema_acc,
               "lr": current_lr(run.optimizer), "weight_decay": weight_decay,
               "images_per_s": result.images / max(result.seconds, 1e-9), "epoch_time_s": result.seconds,
               "wall_time_s": elapsed}
    run.history.append(metrics)
    run.log(_epoch_line(metrics, args.epochs))
    return metrics, ema_model


def _checkpoint_state(run: _Run, epoch: int, elapsed: float) -> Dict[str, Any]:
    """``last.pt`` after ``epoch``: everything --resume needs, in plain types (CHECKPOINT_FORMAT)."""
    args, prep, source, ema = run.args, run.prep, run.source, run.ema
    return {"format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "args": vars(args),
            "model": run.raw_model.state_dict(),
            "config": run.raw_model.config.to_dict(), "classes": source.classes, "image_size": args.image_size,
            "normalize": {"mean": list(prep.mean), "std": list(prep.std)},
            "preprocess": {"recipe": prep.recipe, "resize": prep.resize, "crop_pct": prep.crop_pct},
            "data_mode": source.mode,
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "rng": rng_state(), "history": run.history, "elapsed_s": elapsed,
            "data_fingerprint": source.fingerprint, "num_train": source.num_train,
            "num_test": source.num_test,
            "yyfast_version": yyfast_version, "torch_version": str(torch.__version__)}


def _save_epoch(run: _Run, epoch: int, metrics: Dict[str, Any], ema_model, tb_writer) -> None:
    """Rank 0 after each epoch: last.pt, best.pt when the epoch improved on the best, the outputs, TensorBoard."""
    state = _checkpoint_state(run, epoch, metrics["wall_time_s"])
    save_checkpoint(os.path.join(run.out, CHECKPOINT_NAME), state)
    best = best_entry(run.history)
    if best["epoch"] == epoch + 1:  # this epoch improved the best reported accuracy
        save_checkpoint(os.path.join(run.out, BEST_NAME), best_state(state, best, ema_model))
    run.write_outputs(metrics["wall_time_s"])
    if tb_writer is not None:
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "ema_test_loss", "ema_test_acc", "lr",
                    "weight_decay", "images_per_s"):
            if metrics[key] is not None:
                tb_writer.add_scalar(key, metrics[key], epoch + 1)
        tb_writer.flush()


def _finish(run: _Run, elapsed: float) -> Dict[str, Any]:
    """The final summary.json, the exports of a finished run, the last log line; returns the summary."""
    args, out, log = run.args, run.out, run.log
    result = run.summary(elapsed)
    if run.world.is_main:
        atomic_write_json(os.path.join(out, "summary.json"), result)
        if result["finished"] and getattr(args, "export", None):
            for path in export_best(out, run.raw_model, args.export, args.image_size):
                log(f"exported {path}")
        if result["finished"]:
            best = result["best"]
            last = result["last"]
            log(f"done: last test acc {_fmt_pct(last['test_acc'])} (EMA {_fmt_pct(last['ema_test_acc'])}), "
                f"best {_fmt_pct(best['test_acc'])} at epoch {best['test_acc_epoch']} "
                f"(EMA {_fmt_pct(best['ema_test_acc'])}); outputs in {out}")
        else:
            log(f"stopped after epoch {len(run.history)} of {args.epochs}; continue with --resume --out {out}")
    sys.stdout.flush()
    return result


def best_state(state: Dict[str, Any], best: Dict[str, Any], ema_model) -> Dict[str, Any]:
    """``best.pt``: ``last.pt``'s plain-type format with ``model`` = the best weights (the EMA's when
    ``best["source"]`` is ``"ema"``) and ``best`` saying which; no optimizer/EMA state (not for --resume)."""
    weights = ema_model.state_dict() if best["source"] == "ema" else state["model"]
    skip = ("model", "optimizer", "scheduler", "scaler", "ema", "rng")
    return {**{k: v for k, v in state.items() if k not in skip}, "model": weights, "ema": None, "best": dict(best)}


def export_best(out: str, model: torch.nn.Module, formats: List[str], image_size: int) -> List[str]:
    """Write ``best.pt``'s weights into ``<out>/export/`` in ``formats`` (``safetensors``: ``model.safetensors`` +
    ``config.json`` via ``yyfast.hub.save_pretrained``; ``onnx``: ``model.onnx`` via ``export_onnx``)."""
    import copy

    from .checkpoint import load_checkpoint

    best = copy.deepcopy(model).cpu().float().eval()
    best.load_state_dict(load_checkpoint(os.path.join(out, BEST_NAME))["model"])
    folder = os.path.join(out, EXPORT_DIR)
    written = []
    if "safetensors" in formats:
        from ..hub import CONFIG_NAME, WEIGHTS_NAME, save_pretrained

        save_pretrained(best, folder)
        written += [os.path.join(folder, WEIGHTS_NAME), os.path.join(folder, CONFIG_NAME)]
    if "onnx" in formats:
        from ..export import export_onnx

        written.append(export_onnx(best, os.path.join(folder, "model.onnx"), image_size=image_size)["path"])
    return written


def _json_line(obj) -> str:
    return json.dumps(obj, sort_keys=True) + "\n"
