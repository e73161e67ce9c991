"""``python -m yyfast.train``: command-line options, defaults from the paper's recipe, resume.

Examples::

    python -m yyfast.train --data cifar10-jpeg.tar.gz --model yynet_small_16 --out runs/s16
    python -m yyfast.train --out runs/s16 --resume            # continue with the saved options
    torchrun --nproc_per_node=2 -m yyfast.train --data ... --out runs/ddp
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .. import cli_help
from ..config import ACTIVATIONS, BACKENDS, FUSIONS, INPUT_SIZES, SE_GATES, YIN_INPUTS, list_models
from .checkpoint import BEST_NAME, CHECKPOINT_NAME, EXPORT_DIR, load_checkpoint
from .recipe import EMA_AVG_WEIGHT, EMA_START_FRACTION, GRAD_CLIP_NORM, WEIGHT_DECAY_FACTOR, recipe_defaults

#: Options a resumed run must keep: they define the schedule, the data or the model.
MUST_MATCH_ON_RESUME = ("model", "epochs", "batch_size", "lr", "seed", "subset_train", "subset_test", "image_size",
                        "wd_factor", "clip", "ema_start", "ema_avg_weight", "amp") + \
                       ("act", "fusion", "se_gate", "yin_input", "head_dropout", "mbconv_dropout") + \
                       ("data_mode", "recipe")
#: Values of options added after checkpoints were first written, for checkpoints that lack them.
SAVED_BEFORE_OPTION = {"data_mode": "cache", "recipe": "paper"}


EXAMPLES = """
  python -m yyfast.train --data cifar10-jpeg.tar.gz --model yynet_small_16 --out runs/s16
  python -m yyfast.train --out runs/s16 --resume            # continue with the saved options
  python -m yyfast.train --data tree/ --out runs/x --export safetensors --log-interval 50 > train.log
  torchrun --nproc_per_node=2 -m yyfast.train --data ... --out runs/ddp
"""
EXPORT_FORMATS = ("safetensors", "onnx")

#: Options that belong to one invocation, never taken from the checkpoint.
NOT_INHERITED_ON_RESUME = ("resume", "out", "stop_after_epochs")


def default_data_path() -> Optional[str]:
    return os.environ.get("YYFAST_DATA") or os.environ.get("YYFAST_CIFAR10") or None


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations (cli_help.parser): "--epoch 3" must not be read as --epochs, saved into last.pt and
    # compared by its spelling on --resume.
    p = cli_help.parser(
        "train",
        "Train a YYNet with the paper's recipe (AdamW amsgrad, OneCycle, weight decay = lr*1.56 per epoch, clip 1.0, "
        "mixed precision on GPU, EMA from 25%, crop/flip/brightness augmentation).",
        EXAMPLES)
    _add_data_options(p.add_argument_group("data"))
    _add_model_options(p.add_argument_group("model"))
    _add_recipe_options(p.add_argument_group("recipe (defaults: the paper's, per preset)"))
    _add_run_options(p.add_argument_group("run"))
    return p


def _add_data_options(g) -> None:
    g.add_argument("--data", default=default_data_path(),
                   help="image-folder tree (train/<class>/*, test/<class>/*), its .tar.gz, or cifar-10-batches-py "
                        "(default: $YYFAST_DATA or $YYFAST_CIFAR10)")
    g.add_argument("--subset-train", type=positive_int, default=None, metavar="N",
                   help="use the first N training images, balanced over classes")
    g.add_argument("--subset-test", type=positive_int, default=None, metavar="N",
                   help="use the first N test images, balanced over classes")
    g.add_argument("--image-size", type=positive_int, default=None,
                   help="images are resized to this size (default: 32 for yynet_small_*, 224 for yynet_imagenet)")
    g.add_argument("--cache-dir", default=None,
                   help="where the decoded uint8 data is cached (default: $YYFAST_CACHE_DIR or ~/.cache/yyfast)")
    g.add_argument("--no-cache", action="store_true", help="decode the data every run, write no cache")
    g.add_argument("--data-mode", default="auto", choices=("auto", "cache", "stream"),
                   help="cache: decode once into memory, augment on the device (CIFAR); stream: DataLoader workers "
                        "read the image files each epoch (ImageNet; an image-folder tree); auto: stream when the "
                        "decoded training split would exceed 4 GiB")
    g.add_argument("--recipe", default="paper", choices=("paper", "imagenet"),
                   help="preprocessing: the authors' (stretch-resize, reflect-padded random crop, flip, brightness "
                        "0.01, CIFAR-10 mean/std) or the standard ImageNet one (RandomResizedCrop, flip, ImageNet "
                        "mean/std; resize + centre crop for eval; needs --data-mode stream)")
    g.add_argument("--workers", type=nonnegative_int, default=min(8, os.cpu_count() or 1),
                   help="DataLoader worker processes per training process (--data-mode stream)")


def _add_model_options(g) -> None:
    g.add_argument("--model", default="yynet_small_64", choices=list_models())
    g.add_argument("--backend", default="auto", choices=BACKENDS, help="kernel backend of the fused spans")
    g.add_argument("--act", default=None, choices=ACTIVATIONS, help="activation (default: the preset's)")
    g.add_argument("--fusion", default=None, choices=tuple(FUSIONS), help="Yin/Yang fusion (default: the preset's)")
    g.add_argument("--se-gate", default=None, choices=SE_GATES)
    g.add_argument("--yin-input", default=None, choices=YIN_INPUTS)
    g.add_argument("--head-dropout", type=float, default=None)
    g.add_argument("--mbconv-dropout", type=float, default=None)


def _add_recipe_options(g) -> None:
    g.add_argument("--epochs", type=positive_int, default=None, help="40 (CIFAR presets) / 300 (ImageNet)")
    g.add_argument("--batch-size", type=positive_int, default=None,
                   help="global batch over all processes: 64 (CIFAR presets) / 32 (ImageNet)")
    g.add_argument("--lr", type=float, default=None, help="OneCycle max lr: 1e-2 (CIFAR) / 1.8e-4 (ImageNet)")
    g.add_argument("--wd-factor", type=float, default=WEIGHT_DECAY_FACTOR,
                   help="weight decay = lr * this, set at the end of every epoch")
    g.add_argument("--clip", type=float, default=GRAD_CLIP_NORM, help="global gradient-norm clip")
    g.add_argument("--ema-start", type=float, default=EMA_START_FRACTION,
                   help="fraction of training after which the EMA starts (>= 1 disables it)")
    g.add_argument("--ema-avg-weight", type=float, default=EMA_AVG_WEIGHT,
                   help="avg = w*avg + (1-w)*param after every step")
    g.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                   help="mixed precision: auto = bf16 (or fp16 + GradScaler) on a GPU, off on the CPU")
    g.add_argument("--seed", type=int, default=0, help="seed of Python's, numpy's and torch's generators")
    g.add_argument("--eval-batch-size", type=positive_int, default=500, help="batch size of the test passes")


def _add_run_options(g) -> None:
    g.add_argument("--out", default=None, help="output folder (default: runs/<model>)")
    g.add_argument("--resume", action="store_true",
                   help=f"continue from <out>/{CHECKPOINT_NAME} with its saved options and the same data (an error if "
                        "there is none)")
    g.add_argument("--stop-after-epochs", type=positive_int, default=None, metavar="K",
                   help="stop once K epochs are done (the schedule still spans --epochs); continue with --resume")
    g.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    g.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: torch's)")
    g.add_argument("--compile", action="store_true", help="wrap the model with torch.compile")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster on GPUs)")
    g.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics over the global batch of all processes (torchrun), the fused spans' "
                        "included, on GPUs and CPUs (yyfast.sync_bn)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--log-interval", type=nonnegative_int, default=0, metavar="N",
                   help="when stdout is not a terminal (a log file), print a progress line every N steps "
                        "(0: none; on a terminal tqdm bars show progress)")
    g.add_argument("--export", action="append", choices=EXPORT_FORMATS, default=None,
                   help=f"at the end of a finished run, write {BEST_NAME}'s weights into <out>/{EXPORT_DIR}/: "
                        "safetensors (model.safetensors + config.json, loads with YYNet.from_pretrained and timm), "
                        "onnx (model.onnx); repeat for both")
    g.add_argument("--tensorboard", action="store_true",
                   help="also log the epoch metrics to <out>/tb for TensorBoard (needs: pip install tensorboard)")


def _int_at_least(minimum: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer" if minimum == 1
                                         else f"{value} is negative")
    return value


def nonnegative_int(text: str) -> int:
    return _int_at_least(0, text)


def positive_int(text: str) -> int:
    return _int_at_least(1, text)


def fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Resolve the per-preset defaults (recipe, image size, output folder)."""
    epochs, batch, lr = recipe_defaults(args.model)
    args.epochs = epochs if args.epochs is None else args.epochs
    args.batch_size = batch if args.batch_size is None else args.batch_size
    args.lr = lr if args.lr is None else args.lr
    args.image_size = INPUT_SIZES[args.model][1] if args.image_size is None else args.image_size
    args.out = os.path.join("runs", args.model) if args.out is None else args.out
    return args


def parse(argv: Optional[List[str]] = None):
    """Parse ``argv``; with ``--resume`` and a checkpoint, unspecified options take its saved values.

    Returns ``(args, checkpoint or None)``; raises ``SystemExit`` (via the parser) on bad options.
    """
    parser = build_parser()
    args = fill_defaults(parser.parse_args(argv))
    checkpoint = None
    ckpt_path = os.path.join(args.out, CHECKPOINT_NAME)
    if args.resume:
        if not os.path.isfile(ckpt_path):
            parser.error(f"--resume: there is no checkpoint {ckpt_path} to continue (is --out {args.out!r} right?); "
                         "leave out --resume to start a new run")
        try:
            checkpoint = load_checkpoint(ckpt_path)
        except (ValueError, FileNotFoundError) as exc:
            parser.error(f"--resume: {exc}")
        saved = checkpoint.get("args")
        if isinstance(saved, dict):
            saved = {**SAVED_BEFORE_OPTION, **saved}
        if not isinstance(saved, dict) or any(k not in saved for k in MUST_MATCH_ON_RESUME):
            parser.error(f"--resume: {ckpt_path} was not written by python -m yyfast.train (no saved options)")
        explicit = fill_defaults(parser.parse_args(argv))
        parser.set_defaults(**{k: v for k, v in saved.items() if k not in NOT_INHERITED_ON_RESUME})
        args = fill_defaults(parser.parse_args(argv))
        # Compare parsed values, not spellings: an option given on the command line that
        # contradicts the checkpoint is an error; anything not given comes from the checkpoint.
        given = _given_options(parser, argv)
        changed = [k for k in MUST_MATCH_ON_RESUME if k in given and getattr(explicit, k) != saved.get(k)]
        changed += [k for k in MUST_MATCH_ON_RESUME if k not in changed and getattr(args, k) != saved.get(k)]
        if changed:
            parser.error("--resume: these options differ from the checkpoint's and would change the run: " +
                         ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)!r} (saved {saved.get(k)!r})"
                                   for k in changed))
    if args.data is None:
        parser.error("--data is required (or set YYFAST_DATA / YYFAST_CIFAR10): an image-folder tree, its .tar.gz, "
                     "or cifar-10-batches-py")
    for key in ("head_dropout", "mbconv_dropout"):
        value = getattr(args, key)
        if value is not None and not 0.0 <= value < 1.0:
            parser.error(f"--{key.replace('_', '-')} {value} is not valid; it must be in [0, 1)")
    _check_optional_packages(parser, args)
    if args.lr <= 0 or args.wd_factor < 0 or args.clip <= 0:
        parser.error("--lr and --clip must be positive and --wd-factor non-negative")
    if not 0.0 <= args.ema_avg_weight < 1.0 or args.ema_start < 0:
        parser.error("--ema-avg-weight must be in [0, 1) and --ema-start >= 0")
    return args, checkpoint


def _check_optional_packages(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Before training starts, not after hours of it: the packages the chosen outputs need."""
    needs = {"safetensors": "safetensors", "onnx": "onnx"}
    wanted = [(f"--export {f}", needs[f]) for f in (getattr(args, "export", None) or [])]
    if getattr(args, "tensorboard", False):
        wanted.append(("--tensorboard", "tensorboard"))
    for option, module in wanted:
        try:
            __import__(module)
        except ImportError:
            parser.error(f"{option} needs the {module!r} package, which is not installed: pip install {module}")


def _given_options(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> set:
    argv = sys.argv[1:] if argv is None else argv
    given = set()
    for action in parser._actions:
        for opt in action.option_strings:
            if any(a == opt or a.startswith(opt + "=") for a in argv):
                given.add(action.dest)
    return given


def main(argv: Optional[List[str]] = None) -> int:
    args, checkpoint = parse(argv)
    from .data import DatasetError
    from .loop import train

    try:
        train(args, checkpoint)
    except (DatasetError, ValueError) as exc:
        # Bad data or options found while setting up: one clear line, exit status 2 as argparse does.
        print(f"python -m yyfast.train: error: {exc}", file=sys.stderr)
        return 2
    return 0
