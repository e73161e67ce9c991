"""Convert the authors' YYNet checkpoints (their CIFAR notebook and their ImageNet script) to yyfast's layout.

``python -m yyfast.convert IN.pt OUT.pt`` or ``yyfast.convert_original_checkpoint(sd)``. The layout
is detected from the keys:

* CIFAR notebook (``yingyang.ying.0.0.conv.0.weight``, ...): SiLU, sigmoid SE gate, mean Yin input,
  ``mul`` fusion, onto ``create_model("yynet_small_<C>", act="silu", fusion="mul", yin_input="mean",
  se_gate="sigmoid")``; C is read off the first Yin convolution.
* ImageNet script ``YY_ImageNet.py`` (``yingyang.ying.0.1.expand_conv.0.weight``,
  ``reduction.2.0.conv3.weight``, ``head.5.weight``, ...; its d2l trainer saved
  ``{'model_state_dict': ...}``): onto ``create_model("yynet_imagenet")``, the preset that is that
  script (MBConv input BN computed and discarded); a classifier for other than 1000 classes keeps
  the script's head width ``classes // 2``.
"""
from __future__ import annotations

import re
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Tuple

import torch

#: The options of the authors' CIFAR notebook model.
AUTHORS_OPTIONS = dict(act="silu", fusion="mul", yin_input="mean", se_gate="sigmoid")

# Our module names (inside a block) -> the authors' ones, per layout and block kind.
_CIFAR_RESIDUAL = {"conv1": "conv.0", "bn1": "conv.1", "conv2": "conv.3", "bn2": "conv.4", "shortcut": "conv2"}
_CIFAR_MBCONV = {"bn_in": "conv.0", "expand": "conv.1", "bn_expand": "conv.2", "span.conv": "conv.4",
                 "span.bn": "conv.5", "span.se.fc1": "conv.8.gate.1", "span.se.fc2": "conv.8.gate.3",
                 "project": "conv.9", "bn_project": "conv.10", "shortcut.1": "proj.1"}
_IMAGENET_RESIDUAL = {"conv1": "conv1", "bn1": "bn1", "conv2": "conv2", "bn2": "bn2", "shortcut": "conv3"}
_IMAGENET_MBCONV = {"bn_in": "bn", "expand": "expand_conv.0", "bn_expand": "expand_conv.1", "span.conv": "dw_conv.0",
                    "span.bn": "dw_conv.1", "span.se.fc1": "se.gate.1", "span.se.fc2": "se.gate.3",
                    "project": "out_conv.0", "bn_project": "out_conv.1", "shortcut": "proj", "shortcut.1": "proj.1"}


def _block_key(key: str, heads: Mapping[str, str], block_prefix: Callable[[str, int], str],
               residual: Mapping[str, str], mbconv: Mapping[str, str], is_residual: Callable[[str, int], bool]) -> str:
    for ours, theirs in heads.items():
        if key.startswith(ours + "."):
            return theirs + key[len(ours):]
    match = re.fullmatch(r"(yin|yang|single_path)\.(\d+)\.(.+)\.(\w+)", key)
    if not match:
        raise KeyError(key)
    part, block, module, leaf = match.groups()
    table = residual if is_residual(part, int(block)) else mbconv
    return f"{block_prefix(part, int(block))}.{table[module]}.{leaf}"


def authors_key(key: str) -> str:
    """The authors' CIFAR-notebook name for one of our state_dict keys (one single-path stage)."""
    parts = {"yin": "yingyang.ying.0", "yang": "yingyang.yang.0", "single_path": "reduction.0"}
    return _block_key(key, {"head.fc": "head.2", "head.classifier": "cls"}, lambda p, b: f"{parts[p]}.{b}",
                      _CIFAR_RESIDUAL, _CIFAR_MBCONV, lambda p, b: b == 0)


def imagenet_script_key(key: str, blocks_per_stage: int = 3) -> str:
    """The ImageNet script's name for one of our state_dict keys: ``single_path.<j>`` is the script's
    ``reduction.<j // blocks_per_stage>.<j % blocks_per_stage>`` (a Residual then the stage's MBConvs)."""
    def prefix(part: str, block: int) -> str:
        if part == "single_path":
            return f"reduction.{block // blocks_per_stage}.{block % blocks_per_stage}"
        return f"yingyang.{'ying' if part == 'yin' else 'yang'}.0.{block}"

    def is_residual(part: str, block: int) -> bool:
        return (block % blocks_per_stage if part == "single_path" else block) == 0

    return _block_key(key, {"head.fc": "head.2", "head.classifier": "head.5"}, prefix, _IMAGENET_RESIDUAL,
                      _IMAGENET_MBCONV, is_residual)


@dataclass(frozen=True)
class Layout:
    """One of the authors' checkpoint layouts: how to recognise it and what it converts to."""

    name: str
    marker: str  #: a key only this layout has
    #: (state_dict) -> (preset, create_model overrides)
    target: Callable[[Mapping], Tuple[str, Dict[str, Any]]]
    key: Callable[[str], str]  #: our key -> theirs


def _cifar_target(state_dict: Mapping) -> Tuple[str, Dict[str, Any]]:
    width = infer_width(state_dict)
    from .config import PRESETS

    if f"yynet_small_{width}" not in PRESETS:
        raise ValueError(f"the checkpoint has width {width}; presets exist for 16, 32 and 64 channels")
    return f"yynet_small_{width}", dict(AUTHORS_OPTIONS)


def _imagenet_target(state_dict: Mapping) -> Tuple[str, Dict[str, Any]]:
    classes = int(state_dict["head.5.weight"].shape[0])
    return "yynet_imagenet", ({} if classes == 1000 else {"num_classes": classes, "head_width": classes // 2})


LAYOUTS = (Layout("CIFAR notebook", "yingyang.ying.0.0.conv.0.weight", _cifar_target, authors_key),
           Layout("ImageNet script", "yingyang.ying.0.0.conv1.weight", _imagenet_target, imagenet_script_key))


def strip_prefixes(state_dict: Mapping) -> Dict[str, torch.Tensor]:
    """Drop a ``module.`` (DataParallel/DDP) or ``_orig_mod.`` (torch.compile) prefix on every key."""
    keys = list(state_dict)
    for prefix in ("module.", "_orig_mod."):
        if keys and all(k.startswith(prefix) for k in keys):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
            keys = list(state_dict)
    return dict(state_dict)


def _strip_wrappers(state_dict: Mapping) -> Dict[str, torch.Tensor]:
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
    return strip_prefixes(state_dict)


def infer_width(state_dict: Mapping) -> int:
    key = LAYOUTS[0].marker
    if key not in state_dict:
        raise ValueError(f"not an authors' CIFAR YYNet state_dict: missing key {key!r} "
                         f"(first keys: {list(state_dict)[:3]})")
    return int(state_dict[key].shape[0])


def detect_layout(state_dict: Mapping) -> Layout:
    """The authors' layout of ``state_dict`` (wrappers and prefixes stripped), or ``ValueError``."""
    source = _strip_wrappers(state_dict)
    for layout in LAYOUTS:
        if layout.marker in source:
            return layout
    raise ValueError(f"missing key {LAYOUTS[0].marker!r}: not one of the authors' YYNet layouts "
                     f"({', '.join(layout.name for layout in LAYOUTS)}; first keys: {list(source)[:3]})")


def original_model(state_dict: Mapping) -> Tuple[str, Dict[str, Any]]:
    """``(preset, overrides)`` for ``create_model`` that the authors' ``state_dict`` converts onto."""
    return detect_layout(state_dict).target(_strip_wrappers(state_dict))


def convert_original_checkpoint(state_dict: Mapping) -> "OrderedDict[str, torch.Tensor]":
    """Map an authors' state_dict (CIFAR notebook or ImageNet script, detected) onto yyfast's layout
    (``original_model(state_dict)`` says which model it loads into).

    Raises ``ValueError`` naming the first missing or unexpected key, or a mismatched shape.
    """
    from .model import create_model

    source = _strip_wrappers(state_dict)
    layout = detect_layout(source)
    preset, overrides = layout.target(source)
    target = create_model(preset, backend="reference", **overrides).state_dict()
    names = OrderedDict((ours, layout.key(ours)) for ours in target)
    expected = set(names.values())
    missing: List[str] = [theirs for theirs in names.values() if theirs not in source]
    unexpected: List[str] = [k for k in source if k not in expected]
    if missing:
        raise ValueError(f"missing key {missing[0]!r} in the authors' checkpoint ({len(missing)} missing in all)")
    if unexpected:
        raise ValueError(f"unexpected key {unexpected[0]!r} in the authors' checkpoint "
                         f"({len(unexpected)} unexpected in all)")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for ours, theirs in names.items():
        value = source[theirs]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"key {theirs!r} holds a {type(value).__name__}, not a tensor")
        if value.shape != target[ours].shape:
            raise ValueError(f"key {theirs!r} has shape {tuple(value.shape)}, expected {tuple(target[ours].shape)} "
                             f"for {preset}")
        out[ours] = value.detach().clone()
    return out


def _read_authors_file(path: str) -> Mapping:
    """The state_dict in ``path`` (``weights_only``: nothing in the file can run); ``ValueError`` says why not."""
    from .train.checkpoint import load_checkpoint

    try:
        source = load_checkpoint(path, what="checkpoint (expected an authors' state_dict saved with torch.save)")
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from exc
    if isinstance(source.get("format"), str) and source["format"].startswith("yyfast-train"):
        raise ValueError(f"{path!r} is a python -m yyfast.train checkpoint, already in yyfast's layout: nothing to "
                         "convert; load it with python -m yyfast.predict / yyfast.evaluate, or take its 'model' entry")
    return source


EXAMPLES = """
  python -m yyfast.convert yinyang_cifar10.pt yynet_small_64.pt
  python -m yyfast.predict yynet_small_64.pt cat.png --model yynet_small_64 --act silu
"""


def main(argv=None) -> int:
    from .cli_help import parser as make_parser

    parser = make_parser("convert", "Convert the authors' Yin Yang ConvNet checkpoint into a yyfast state_dict.",
                         EXAMPLES)
    parser.add_argument("input", help="the authors' checkpoint (a state_dict saved with torch.save)")
    parser.add_argument("output", help="where to write the yyfast state_dict")
    args = parser.parse_args(argv)
    try:
        source = _read_authors_file(args.input)
    except ValueError as exc:
        print(f"python -m yyfast.convert: error: {exc}", file=sys.stderr)
        return 2
    try:
        converted = convert_original_checkpoint(source)
        preset, overrides = original_model(source)
    except (ValueError, RuntimeError) as exc:
        print(f"python -m yyfast.convert: error: {args.input}: {exc}", file=sys.stderr)
        return 2
    from .train.checkpoint import atomic_write

    try:
        atomic_write(args.output, lambda fh: torch.save(converted, fh))
    except OSError as exc:
        print(f"python -m yyfast.convert: error: cannot write {args.output!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    options = "".join(f", {k}={v!r}" for k, v in overrides.items())
    print(f"wrote {args.output} ({detect_layout(source).name} layout): {len(converted)} tensors; load it into "
          f'yyfast.create_model("{preset}"{options})')
    return 0


if __name__ == "__main__":
    sys.exit(main())
