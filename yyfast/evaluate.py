"""``python -m yyfast.evaluate CKPT --data PATH``: test loss and accuracy of a training checkpoint.

Evaluates the raw model and, when the checkpoint has a started EMA, the EMA model, on the test
split (``test/`` or ``val/``) of any dataset layout the trainer reads, and prints a table (or
JSON with ``--json``). Class names are matched between the checkpoint and the data by name.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

import numpy as np
import torch


EXAMPLES = """
  python -m yyfast.evaluate runs/s16/best.pt --data cifar10-jpeg.tar.gz
  python -m yyfast.evaluate runs/s16/last.pt --data tree/ --json                 # JSON on stdout
  python -m yyfast.evaluate runs/s16/last.pt --data tree/ --output r.json --output per_class.csv --confusion cm.png
"""


def build_parser() -> argparse.ArgumentParser:
    from .train.cli import positive_int

    from .cli_help import parser

    p = parser("evaluate", "Accuracy (top-1, top-5, per class) and loss of a yyfast.train checkpoint (raw and EMA).",
               EXAMPLES)
    p.add_argument("checkpoint", help="a checkpoint written by python -m yyfast.train (e.g. runs/x/last.pt)")
    p.add_argument("--data", required=True, help="image-folder tree, its .tar.gz, or cifar-10-batches-py")
    p.add_argument("--subset-test", type=positive_int, default=None, metavar="N",
                   help="the first N test images, balanced over classes")
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--backend", default="auto", choices=("reference", "triton", "cuda", "auto"))
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="default: the size the checkpoint was trained at")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    # Not "--json [FILE]": "--json CKPT --data D" would then overwrite the checkpoint with JSON.
    p.add_argument("--output", action="append", default=None, metavar="FILE.json|FILE.csv",
                   help="also write the results to FILE, in the format its suffix names (.json: the --json object; "
                        ".csv: per-class accuracy, one row per class and model); repeat for both")
    p.add_argument("--confusion", default=None, metavar="FILE.png",
                   help="plot the confusion matrix (the EMA's if the checkpoint has one, else the raw model's)")
    return p


def _map_labels(labels: np.ndarray, data_classes: List[str], ckpt_classes: List[str]) -> np.ndarray:
    if list(data_classes) == list(ckpt_classes):
        return labels
    index = {c: i for i, c in enumerate(ckpt_classes)}
    unknown = [c for c in data_classes if c not in index]
    if unknown:
        raise ValueError(f"--data: the test split has classes the checkpoint was not trained on: "
                         f"{', '.join(unknown[:5])} (checkpoint classes: {', '.join(ckpt_classes[:10])})")
    lut = np.array([index[c] for c in data_classes], dtype=np.int64)
    return lut[labels]


def evaluate_checkpoint(path: str, data: str, subset_test: Optional[int] = None, batch_size: int = 500,
                        device: str = "auto", backend: str = "auto", amp: str = "auto",
                        image_size: Optional[int] = None, cache_dir: Optional[str] = None, use_cache: bool = True,
                        progress=None, log=None) -> Dict[str, Any]:
    from .availability import resolve_device
    from .config import YYNetConfig
    from .train.distributed import World
    from .train.engine import evaluate_batches
    from .train.loop import check_backend
    from .train.recipe import choose_precision

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not valid; it must be a positive integer")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8):
        raise ValueError(f"image_size={image_size!r} is not valid; it must be an integer >= 8 or None (the size "
                         "the checkpoint was trained at)")
    ckpt = _load_train_checkpoint(path)
    dev = resolve_device(device)
    check_backend(backend, dev)
    size = int(image_size if image_size is not None else ckpt.get("image_size") or 32)
    norm = {k: tuple(v) for k, v in (ckpt.get("normalize") or {}).items() if k in ("mean", "std")}
    pre = ckpt.get("preprocess") or {}
    if pre.get("resize", "stretch") == "stretch":  # the decoded cache holds exactly this geometry
        batches, num_images = _cached_test_batches(ckpt, data, subset_test, batch_size, size, norm, dev, cache_dir,
                                                   use_cache, progress, log)
    else:  # e.g. --recipe imagenet: resize + centre crop per image, streamed as in training
        if subset_test is not None:
            raise ValueError("subset_test selects from the decoded cache; this checkpoint's preprocessing streams "
                             "the images: point data at a smaller tree instead")
        batches, num_images = _streamed_test_batches(ckpt, data, batch_size, size, norm, pre, dev)
    precision = choose_precision(amp, dev)
    try:
        config = YYNetConfig(**ckpt["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {path!r} has an invalid model config: {exc}") from exc
    results: Dict[str, Any] = {"checkpoint": path, "epoch": ckpt.get("epoch"), "model": config.name,
                               "data": data, "num_images": num_images, "device": str(dev),
                               "precision": precision.name}
    models = {"raw": ckpt["model"]}
    ema = ckpt.get("ema")
    if ema and ema.get("started"):
        models["ema"] = ema["module"]
    for name in ("raw", "ema"):
        if name not in models:
            results[name] = None
            continue
        model = _model_with_weights(path, name, config, models[name], backend, dev)
        counts = ClassCounts(len(ckpt["classes"]), TOPK)
        loss, acc = evaluate_batches(model, *batches(), precision, World(), dev, progress=progress,
                                     desc=f"eval {name}", on_logits=counts.add)
        results[name] = {"loss": loss, "acc": acc, **counts.report(list(ckpt["classes"]))}
    return results


def _load_train_checkpoint(path: str) -> Dict[str, Any]:
    from .train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)  # weights_only: no code in the file can run
    if not isinstance(ckpt, dict) or not {"model", "config", "classes"} <= set(ckpt):
        raise ValueError(f"checkpoint {path!r} is not a yyfast.train checkpoint (expected the keys model, config, "
                         "classes)")
    return ckpt


def _cached_test_batches(ckpt, data, subset_test, batch_size, size, norm, dev, cache_dir, use_cache, progress, log):
    """The test split from the decoded cache, on ``dev``: ``(batches, num_images)``, ``batches()`` giving a fresh
    ``(iterator of (images, labels), count)`` per model."""
    from .train.augment import BatchAugment
    from .train.cache import load_dataset

    dataset = load_dataset(data, ("test",), {"test": subset_test}, size, cache_dir=cache_dir,
                           use_cache=use_cache, progress=progress, log=log or (lambda *a, **k: None))
    split = dataset.splits["test"]
    labels_t = torch.from_numpy(_map_labels(split.labels, dataset.classes, list(ckpt["classes"]))).to(dev)
    images_t = torch.from_numpy(split.images).to(dev)
    augment = BatchAugment(crop=size, **norm)
    num_images = int(labels_t.numel())

    def batches():
        chunks = [torch.arange(b, min(b + batch_size, num_images), device=dev)
                  for b in range(0, num_images, batch_size)]
        return ((augment.eval(images_t[c]), labels_t[c]) for c in chunks), len(chunks)

    return batches, num_images


def _streamed_test_batches(ckpt, data, batch_size, size, norm, pre, dev):
    """The eval split decoded per image with the checkpoint's preprocessing: as ``_cached_test_batches``."""
    from .preprocess import Preprocessing
    from .train.distributed import World
    from .train.engine import loader_batches
    from .train.stream import StreamData

    prep = Preprocessing(pre.get("recipe", "imagenet"), size, norm["mean"], norm["std"], pre["resize"],
                         float(pre.get("crop_pct", 1.0)))
    stream = StreamData(data, prep, World(), workers=min(8, os.cpu_count() or 1))
    lookup = torch.from_numpy(_map_labels(np.arange(len(stream.classes)), stream.classes,
                                          list(ckpt["classes"]))).to(dev)
    num_images = len(stream.eval_set)

    def batches():
        loader = stream.eval_loader(batch_size)
        return ((x, lookup[y]) for x, y in loader_batches(loader, dev)), len(loader)

    return batches, num_images


def _model_with_weights(path, name, config, weights, backend, dev):
    """A ``config`` model on ``dev`` with the checkpoint's ``name`` (raw/ema) weights; ValueError if they do not fit."""
    from .model import create_model

    model = create_model(config, backend=backend).to(dev)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        raise ValueError(f"checkpoint {path!r}: its {name} weights do not fit its config ({config.name}): "
                         f"{' '.join(first[1:2] or first[:1]).strip()[:300]}") from exc
    return model


#: The second accuracy reported beside top-1 (clipped to the number of classes).
TOPK = 5


class ClassCounts:
    """Top-k hits and the confusion matrix (rows: true class, columns: predicted), batch by batch."""

    def __init__(self, num_classes: int, k: int):
        self.k = min(k, num_classes)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.topk_hits = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = self.confusion.shape[0]
        pred = logits.argmax(1)
        self.confusion += torch.bincount((labels * n + pred).cpu(), minlength=n * n).view(n, n)
        self.topk_hits += int((logits.topk(self.k, dim=1).indices == labels[:, None]).any(1).sum())

    def report(self, classes: List[str]) -> Dict[str, Any]:
        per_class_total = self.confusion.sum(1)
        total = max(int(per_class_total.sum()), 1)
        return {"top1": int(self.confusion.diag().sum()) / total, f"top{self.k}": self.topk_hits / total,
                "topk": self.k,
                "per_class": {c: {"acc": (int(self.confusion[i, i]) / int(per_class_total[i])
                                          if per_class_total[i] else None), "images": int(per_class_total[i])}
                              for i, c in enumerate(classes)},
                "confusion": self.confusion.tolist()}


def write_csv(path: str, r: Dict[str, Any]) -> None:
    """Per-class accuracy: model, class, images, correct, accuracy."""
    import csv
    import io

    from .train.checkpoint import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "class", "images", "accuracy"])
    for name in ("raw", "ema"):
        if r[name] is None:
            continue
        for cls, v in r[name]["per_class"].items():
            writer.writerow([name, cls, v["images"], "" if v["acc"] is None else f"{v['acc']:.6f}"])
    atomic_write_text(path, buf.getvalue())


def plot_confusion(path: str, r: Dict[str, Any], classes: List[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    name = "ema" if r["ema"] is not None else "raw"
    cm = np.array(r[name]["confusion"], dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(4 + 0.4 * len(classes), 30)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 30:  # beyond that the labels overlap into a black band
        ax.set_xticks(range(len(classes)), classes, rotation=90)
        ax.set_yticks(range(len(classes)), classes)
        for i in range(len(classes)):
            for j in range(len(classes)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                            color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{r['model']} ({name}), top-1 {100 * r[name]['top1']:.2f}%")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_table(r: Dict[str, Any]) -> str:
    lines = [f"checkpoint {r['checkpoint']} (model {r['model']}, epoch {r['epoch']}), "
             f"{r['num_images']} test images from {r['data']}, {r['device']} {r['precision']}",
             f"{'model':<6} {'loss':>8} {'top-1':>8} {'top-k':>8}"]
    for name in ("raw", "ema"):
        v = r[name]
        lines.append(f"{name:<6} {'-':>8} {'(none)':>8}" if v is None else
                     f"{name:<6} {v['loss']:8.4f} {100 * v['acc']:7.2f}% {100 * v['top' + str(v['topk'])]:7.2f}% "
                     f"(top-{v['topk']})")
    best = r["ema"] or r["raw"]
    worst = sorted(((v["acc"], c) for c, v in best["per_class"].items() if v["acc"] is not None))[:5]
    lines.append("lowest per-class accuracy" + (" (EMA)" if r["ema"] else "") + ": " +
                 ", ".join(f"{c} {100 * a:.1f}%" for a, c in worst))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for path in args.output or []:  # before the work, not after it
        if not path.lower().endswith((".json", ".csv")):
            parser.error(f"--output {path!r}: name it .json or .csv (the suffix picks the format)")
    progress = None
    if not args.no_progress and not args.json:
        from functools import partial

        from tqdm.auto import tqdm

        progress = partial(tqdm, disable=None)
    try:
        r = evaluate_checkpoint(args.checkpoint, args.data, args.subset_test, args.batch_size, args.device,
                                args.backend, args.amp, args.image_size, args.cache_dir, not args.no_cache, progress,
                                log=None if args.json else print)
    except (ValueError, FileNotFoundError) as exc:
        print(f"python -m yyfast.evaluate: error: {exc}", file=sys.stderr)
        return 2
    from .train.checkpoint import atomic_write_text

    for path in [*(args.output or []), *([args.confusion] if args.confusion else [])]:
        try:
            if path == args.confusion:
                plot_confusion(path, r, list(r["raw"]["per_class"]))
            elif path.lower().endswith(".csv"):
                write_csv(path, r)
            else:
                atomic_write_text(path, json.dumps(r, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            print(f"python -m yyfast.evaluate: error: {path!r} cannot be written: {exc.strerror or exc}",
                  file=sys.stderr)
            return 2
    print(json.dumps(r, indent=2, sort_keys=True) if args.json else format_table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
