"""``python -m yyfast.predict CKPT IMAGES...``: class probabilities for image files and folders.

The checkpoint may be

* a ``python -m yyfast.train`` checkpoint (``last.pt``: ``model``, ``config``, ``classes``,
  ``image_size``, ``normalize``, ``ema``), or any dict with a ``model``/``state_dict`` entry and a
  ``config`` (``YYNetConfig`` fields) or ``args`` (with ``model``, the preset name);
* a raw yyfast state_dict: then ``--model NAME`` (and any non-default options, e.g.
  ``--act silu --fusion mul``) says which network it is;
* the authors' CIFAR state_dict (``yingyang.*`` keys): converted on the fly.

Images are read as RGB, resized (``yyfast.preprocess``: the training run's evaluation geometry, a
stretch under the paper recipe) to the model's input size (32 for the CIFAR presets, 224 for
ImageNet; ``--image-size`` overrides), normalised with the CIFAR-10 mean/std (or the
checkpoint's), and classified in batches by the BatchNorm-folded inference model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from .availability import resolve_device
from .convert import strip_prefixes
from .train.checkpoint import load_checkpoint
from .train.cli import positive_int

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
from .config import NORMALIZE_MEAN as CIFAR10_MEAN  # noqa: E402
from .config import NORMALIZE_STD as CIFAR10_STD  # noqa: E402
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MODEL_OPTIONS = ("act", "se_gate", "yin_input", "fusion", "num_classes", "discard_mbconv_input_bn")


class BadImageError(ValueError):
    """An image file that PIL cannot read; the message names the file."""


@dataclasses.dataclass
class LoadedModel:
    model: torch.nn.Module          # the yyfast YYNet (eval mode), weights loaded
    classes: List[str]
    image_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    source: str                      # which weights: "model", "ema", "state_dict", "authors"


# -- checkpoints ------------------------------------------------------------------------------------
def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _config_from(ckpt: Mapping, model_name: Optional[str], overrides: Dict[str, Any]):
    from .config import YYNetConfig, get_config

    config = ckpt.get("config")
    if isinstance(config, YYNetConfig):
        return config.replace(**overrides) if overrides else config
    if isinstance(config, Mapping):
        known = {f.name for f in dataclasses.fields(YYNetConfig)}
        return YYNetConfig(**{k: v for k, v in config.items() if k in known}).replace(**overrides)
    args = ckpt.get("args")
    if args is not None and not isinstance(args, Mapping):
        args = vars(args)  # an argparse.Namespace
    if isinstance(args, Mapping) and isinstance(args.get("model"), str):
        options = {k: args[k] for k in MODEL_OPTIONS if args.get(k) is not None}
        return get_config(model_name or args["model"], **{**options, **overrides})
    if model_name:
        return get_config(model_name, **overrides)
    raise ValueError("the checkpoint does not say which model it holds (no 'config' or 'args' entry); "
                     "pass --model NAME (and its options)")


def _weights_from(ckpt: Mapping, ema: bool, path: str) -> Tuple[Dict[str, torch.Tensor], str]:
    if ema:
        entry = ckpt.get("ema")
        if isinstance(entry, Mapping) and "module" in entry and not _is_state_dict(entry):
            if entry.get("started") is False:
                raise ValueError(f"--ema: the EMA in {path!r} has not started yet (it starts at 25% of training)")
            entry = entry["module"]
        if not _is_state_dict(entry):
            raise ValueError(f"--ema: {path!r} has no EMA weights (no 'ema' entry holding a state_dict)")
        return strip_prefixes(entry), "ema"
    for key in ("model", "state_dict", "model_state_dict"):
        if _is_state_dict(ckpt.get(key)):
            return strip_prefixes(ckpt[key]), key
    raise ValueError(f"{path!r} holds neither a state_dict nor a dict with a 'model' or 'state_dict' entry "
                     f"(top-level keys: {', '.join(map(str, list(ckpt)[:8]))})")


def load_model(path: str, model_name: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None,
               ema: bool = False, classes_file: Optional[str] = None, image_size: Optional[int] = None,
               map_location: str = "cpu") -> LoadedModel:
    """Read any of the checkpoint kinds the module docstring lists into a ``LoadedModel``."""
    from .config import INPUT_SIZES
    from .convert import convert_original_checkpoint
    from .model import YYNet

    overrides = dict(overrides or {})
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} does not exist")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size={image_size!r} is not valid; it must be a positive integer or None "
                         "(the model's input size)")
    # weights_only: the file's pickle may build tensors and plain containers, never call code.
    ckpt = load_checkpoint(path, map_location)
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"checkpoint {path!r} holds a {type(ckpt).__name__}, not a dict or state_dict")
    if _is_state_dict(ckpt):
        state, source = strip_prefixes(ckpt), "state_dict"
        if ema:
            raise ValueError(f"--ema: {path!r} is a bare state_dict with no EMA weights")
        if any(k.startswith("yingyang.") for k in state):
            state, source = convert_original_checkpoint(state), "authors"
            from .convert import AUTHORS_OPTIONS, infer_width

            model_name = model_name or f"yynet_small_{infer_width(strip_prefixes(ckpt))}"
            overrides = {**AUTHORS_OPTIONS, **overrides}
        elif not model_name:
            raise ValueError(f"{path!r} is a bare state_dict: pass --model NAME (one of the presets) and the "
                             "options it was trained with (e.g. --act silu)")
        config = _config_from({}, model_name, overrides)
        meta: Mapping = {}
    else:
        state, source = _weights_from(ckpt, ema, path)
        config, meta = _config_from(ckpt, model_name, overrides), ckpt
    model = YYNet(config, backend="reference")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"the weights in {path!r} do not fit {config.name} with the given options: {exc}") from exc
    model.eval()

    if classes_file:
        with open(classes_file, encoding="utf-8") as fh:
            classes = [line.strip() for line in fh if line.strip()]
        if len(classes) != config.num_classes:
            raise ValueError(f"--classes: {classes_file!r} lists {len(classes)} names; the model has "
                             f"{config.num_classes} classes")
    elif isinstance(meta.get("classes"), (list, tuple)) and len(meta["classes"]) == config.num_classes:
        classes = [str(c) for c in meta["classes"]]
    elif config.num_classes == 10:
        classes = list(CIFAR10_CLASSES)
    else:
        classes = [str(k) for k in range(config.num_classes)]
    size = image_size if image_size is not None else (meta.get("image_size")
                                                      or INPUT_SIZES.get(config.name, (3, 32, 32))[1])
    norm = meta.get("normalize") if isinstance(meta.get("normalize"), Mapping) else {}
    mean = tuple(float(v) for v in norm.get("mean", CIFAR10_MEAN))
    std = tuple(float(v) for v in norm.get("std", CIFAR10_STD))
    return LoadedModel(model, classes, int(size), mean, std, source)


# -- images -----------------------------------------------------------------------------------------
def find_images(paths: Sequence[str]) -> List[str]:
    """Files as given (whatever their extension), folders searched recursively for image files."""
    found: List[str] = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(p):
            found.append(p)
        else:
            raise ValueError(f"IMAGES: {p!r} is neither a file nor a folder")
    return found


def load_image(path: str, size: int, mean: Sequence[float], std: Sequence[float], resize: str = "stretch",
               crop_pct: float = 1.0) -> torch.Tensor:
    """The image as a normalised (3, size, size) float32 tensor, through ``yyfast.preprocess.eval_tensor``
    (the evaluation geometry training and ``evaluate`` use); ``BadImageError`` names the file."""
    from PIL import Image

    from .preprocess import Preprocessing, eval_tensor

    prep = Preprocessing("checkpoint", size, tuple(mean), tuple(std), resize, crop_pct)
    try:
        with Image.open(path) as img:
            return eval_tensor(img, prep)
    except Exception as exc:
        raise BadImageError(f"cannot read image {path!r}: {type(exc).__name__}: {exc}") from exc


# -- prediction -------------------------------------------------------------------------------------
def _batches(items: List[str], size: int) -> Iterable[List[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def predict(loaded: LoadedModel, files: List[str], batch_size: int = 64, topk: int = 5, device: str = "cpu",
            skip_bad: bool = False, progress: Optional[bool] = None, optimize: bool = True) -> Dict[str, Any]:
    """``{"predictions": [{"file", "topk": [{"index", "class", "prob"}]}], "skipped": [{"file", "error"}]}``."""
    from tqdm import tqdm

    from .inference import optimize_for_inference

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not valid; it must be a positive integer")
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk={topk!r} is not valid; it must be a positive integer")
    dev = torch.device(device)
    net = loaded.model.to(dev)
    net = optimize_for_inference(net) if optimize else net.eval()
    k = min(topk, len(loaded.classes))
    predictions, skipped = [], []
    show = progress if progress is not None else len(files) > batch_size
    with tqdm(total=len(files), unit="img", disable=not show, file=sys.stderr, desc="predict") as bar:
        for chunk in _batches(files, batch_size):
            tensors, names = [], []
            for f in chunk:
                try:
                    tensors.append(load_image(f, loaded.image_size, loaded.mean, loaded.std))
                    names.append(f)
                except BadImageError as exc:
                    if not skip_bad:
                        raise
                    skipped.append({"file": f, "error": str(exc)})
            if tensors:
                with torch.inference_mode():
                    probs = torch.softmax(net(torch.stack(tensors).to(dev)).float(), dim=1).cpu()
                values, indices = probs.topk(k, dim=1)
                for name, vals, idxs in zip(names, values.tolist(), indices.tolist()):
                    predictions.append({"file": name, "topk": [
                        {"index": i, "class": loaded.classes[i], "prob": v} for i, v in zip(idxs, vals)]})
            bar.update(len(chunk))
    return {"predictions": predictions, "skipped": skipped}


EXAMPLES = """
  python -m yyfast.predict runs/s16/best.pt cat.png photos/
  python -m yyfast.predict runs/s16/last.pt photos/ --ema --topk 3 --json
  python -m yyfast.predict runs/s16/best.pt photos/ --output predictions.csv --output predictions.json
  python -m yyfast.predict authors.pt photos/ --classes classes.txt      # the authors' CIFAR-10 weights
"""


def build_parser() -> argparse.ArgumentParser:
    from .cli_help import parser
    from .config import ACTIVATIONS, SE_GATES

    p = parser("predict", "Class probabilities of a YYNet checkpoint for image files or folders.", EXAMPLES)
    p.add_argument("checkpoint", help="a yyfast.train checkpoint (last.pt), a yyfast state_dict, or an authors' one")
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--model", default=None, help="preset name, needed for a bare state_dict (e.g. yynet_small_64)")
    p.add_argument("--act", choices=ACTIVATIONS, default=None)
    p.add_argument("--se-gate", choices=SE_GATES, default=None)
    p.add_argument("--yin-input", choices=("mean", "red"), default=None)
    p.add_argument("--fusion", default=None, help="add, mul, gate, mul_add, gate_sub or gate_add")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    p.add_argument("--classes", default=None, metavar="FILE", help="class names, one a line")
    p.add_argument("--image-size", type=positive_int, default=None, help="default: the model's input size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--skip-bad", action="store_true", help="report unreadable images and go on")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    # Not "--json [FILE]": "--json cat.png" would then overwrite the image with JSON.
    p.add_argument("--output", action="append", default=None, metavar="FILE.json|FILE.csv",
                   help="also write the results to FILE, in the format its suffix names (.json: the --json object; "
                        ".csv: file, rank, class, index, prob per top-k entry); repeat for both")
    p.add_argument("--no-progress", action="store_true")
    return p


def write_text(path: str, text: str) -> None:
    from .train.checkpoint import atomic_write_text

    atomic_write_text(path, text)


def write_csv(path: str, predictions: List[Dict[str, Any]]) -> None:
    """One row per (file, top-k rank): file, rank, class, index, prob."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "rank", "class", "index", "prob"])
    for item in predictions:
        for rank, t in enumerate(item["topk"], 1):
            writer.writerow([item["file"], rank, t["class"], t["index"], f"{t['prob']:.6f}"])
    write_text(path, buf.getvalue())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in MODEL_OPTIONS if getattr(args, k, None) is not None}
    for path in args.output or []:  # before the work, not after it
        if not path.lower().endswith((".json", ".csv")):
            parser.error(f"--output {path!r}: name it .json or .csv (the suffix picks the format)")
    try:
        loaded = load_model(args.checkpoint, args.model, overrides, ema=args.ema, classes_file=args.classes,
                            image_size=args.image_size)
        files = find_images(args.images)
        if not files:
            raise ValueError(f"IMAGES: no image files found in {', '.join(args.images)}")
        result = predict(loaded, files, args.batch_size, args.topk, resolve_device(args.device), args.skip_bad,
                         progress=False if args.no_progress else None)
    except (ValueError, OSError) as exc:
        print(f"python -m yyfast.predict: error: {exc}", file=sys.stderr)
        return 2
    report = {"checkpoint": args.checkpoint, "weights": loaded.source, **result}
    for path in args.output or []:
        try:
            if path.lower().endswith(".csv"):
                write_csv(path, result["predictions"])
            else:
                write_text(path, json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            print(f"python -m yyfast.predict: error: --output {path!r} cannot be written: {exc.strerror or exc}",
                  file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for item in result["predictions"]:
            best = ", ".join(f"{t['class']} {t['prob']:.3f}" for t in item["topk"])
            print(f"{item['file']}: {best}")
        for item in result["skipped"]:
            print(f"skipped {item['error']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
