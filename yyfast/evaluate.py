"""``python -m yyfast.evaluate CKPT --data PATH``: test loss and accuracy of a training checkpoint.

Evaluates the raw model and, when the checkpoint has a started EMA, the EMA model, on the test
split (``test/`` or ``val/``) of any dataset layout the trainer reads, and prints a table (or
JSON with ``--json``). Class names are matched between the checkpoint and the data by name.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

import numpy as np
import torch


def build_parser() -> argparse.ArgumentParser:
    from .train.cli import positive_int

    p = argparse.ArgumentParser(prog="python -m yyfast.evaluate", allow_abbrev=False,
                                description="Accuracy and loss of a yyfast.train checkpoint (raw and EMA).")
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
    from .config import YYNetConfig
    from .model import create_model
    from .train.augment import BatchAugment
    from .train.cache import load_dataset
    from .train.checkpoint import load_checkpoint
    from .train.engine import evaluate
    from .train.loop import check_backend
    from .availability import resolve_device
    from .train.recipe import choose_precision

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not valid; it must be a positive integer")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8):
        raise ValueError(f"image_size={image_size!r} is not valid; it must be an integer >= 8 or None (the size "
                         "the checkpoint was trained at)")
    ckpt = load_checkpoint(path)  # weights_only: no code in the file can run
    if not isinstance(ckpt, dict) or not {"model", "config", "classes"} <= set(ckpt):
        raise ValueError(f"checkpoint {path!r} is not a yyfast.train checkpoint (expected the keys model, config, "
                         "classes)")
    dev = resolve_device(device)
    check_backend(backend, dev)
    size = int(image_size if image_size is not None else ckpt.get("image_size") or 32)
    dataset = load_dataset(data, ("test",), {"test": subset_test}, size, cache_dir=cache_dir, use_cache=use_cache,
                           progress=progress, log=log or (lambda *a, **k: None))
    split = dataset.splits["test"]
    labels = _map_labels(split.labels, dataset.classes, list(ckpt["classes"]))
    images_t = torch.from_numpy(split.images).to(dev)
    labels_t = torch.from_numpy(labels).to(dev)
    norm = ckpt.get("normalize") or {}
    augment = BatchAugment(crop=size, **{k: tuple(v) for k, v in norm.items() if k in ("mean", "std")})
    precision = choose_precision(amp, dev)
    try:
        config = YYNetConfig(**ckpt["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {path!r} has an invalid model config: {exc}") from exc
    results: Dict[str, Any] = {"checkpoint": path, "epoch": ckpt.get("epoch"), "model": config.name,
                               "data": data, "num_images": int(labels_t.numel()), "device": str(dev),
                               "precision": precision.name}
    models = {"raw": ckpt["model"]}
    ema = ckpt.get("ema")
    if ema and ema.get("started"):
        models["ema"] = ema["module"]
    for name in ("raw", "ema"):
        if name not in models:
            results[name] = None
            continue
        model = create_model(config, backend=backend).to(dev)
        try:
            model.load_state_dict(models[name])
        except (RuntimeError, TypeError, AttributeError) as exc:
            first = str(exc).strip().splitlines()
            raise ValueError(f"checkpoint {path!r}: its {name} weights do not fit its config ({config.name}): "
                             f"{' '.join(first[1:2] or first[:1]).strip()[:300]}") from exc
        loss, acc = evaluate(model, images_t, labels_t, augment, precision, batch_size, progress=progress,
                             desc=f"eval {name}")
        results[name] = {"loss": loss, "acc": acc}
    return results


def format_table(r: Dict[str, Any]) -> str:
    lines = [f"checkpoint {r['checkpoint']} (model {r['model']}, epoch {r['epoch']}), "
             f"{r['num_images']} test images from {r['data']}, {r['device']} {r['precision']}",
             f"{'model':<6} {'loss':>8} {'accuracy':>9}"]
    for name in ("raw", "ema"):
        v = r[name]
        lines.append(f"{name:<6} {'-':>8} {'(none)':>9}" if v is None else
                     f"{name:<6} {v['loss']:8.4f} {100 * v['acc']:8.2f}%")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
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
    print(json.dumps(r, indent=2, sort_keys=True) if args.json else format_table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
