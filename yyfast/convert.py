"""Convert the authors' CIFAR YYNet checkpoints to yyfast's layout.

``python -m yyfast.convert IN.pt OUT.pt`` or ``yyfast.convert_original_checkpoint(sd)``.
The authors' model (SiLU, sigmoid SE gate, mean Yin input, ``mul`` fusion) maps onto
``create_model("yynet_small_<C>", act="silu", fusion="mul", yin_input="mean", se_gate="sigmoid")``;
C is read off the first Yin convolution.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Mapping

import torch

#: The options of the authors' CIFAR notebook model.
AUTHORS_OPTIONS = dict(act="silu", fusion="mul", yin_input="mean", se_gate="sigmoid")

_RESIDUAL = {"conv1": "conv.0", "bn1": "conv.1", "conv2": "conv.3", "bn2": "conv.4", "shortcut": "conv2"}
_MBCONV = {"bn_in": "conv.0", "expand": "conv.1", "bn_expand": "conv.2", "span.conv": "conv.4",
           "span.bn": "conv.5", "span.se.fc1": "conv.8.gate.1", "span.se.fc2": "conv.8.gate.3",
           "project": "conv.9", "bn_project": "conv.10", "shortcut.1": "proj.1"}
_PARTS = {"yin": "yingyang.ying.0", "yang": "yingyang.yang.0", "single_path": "reduction.0"}
_HEAD = {"head.fc": "head.2", "head.classifier": "cls"}


def authors_key(key: str) -> str:
    """The authors' name for one of our state_dict keys (CIFAR layout)."""
    for ours, theirs in _HEAD.items():
        if key.startswith(ours + "."):
            return theirs + key[len(ours):]
    match = re.fullmatch(r"(yin|yang|single_path)\.(\d+)\.(.+)\.(\w+)", key)
    if not match:
        raise KeyError(key)
    part, block, module, leaf = match.groups()
    table = _RESIDUAL if module in _RESIDUAL and int(block) == 0 else _MBCONV
    return f"{_PARTS[part]}.{block}.{table[module]}.{leaf}"


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
    key = "yingyang.ying.0.0.conv.0.weight"
    if key not in state_dict:
        raise ValueError(f"not an authors' CIFAR YYNet state_dict: missing key {key!r} "
                         f"(first keys: {list(state_dict)[:3]})")
    return int(state_dict[key].shape[0])


def convert_original_checkpoint(state_dict: Mapping) -> "OrderedDict[str, torch.Tensor]":
    """Map an authors' CIFAR state_dict onto ``yynet_small_<C>`` with the authors' options.

    Raises ``ValueError`` naming the first missing or unexpected key, or a mismatched shape.
    """
    from .model import create_model

    source = _strip_wrappers(state_dict)
    width = infer_width(source)
    preset = f"yynet_small_{width}"
    from .config import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"the checkpoint has width {width}; presets exist for 16, 32 and 64 channels")
    target = create_model(preset, backend="reference", **AUTHORS_OPTIONS).state_dict()
    names = OrderedDict((ours, authors_key(ours)) for ours in target)
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
        source = load_checkpoint(path, what="checkpoint (expected an authors' CIFAR state_dict saved with torch.save)")
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from exc
    if isinstance(source.get("format"), str) and source["format"].startswith("yyfast-train"):
        raise ValueError(f"{path!r} is a python -m yyfast.train checkpoint, already in yyfast's layout: nothing to "
                         "convert; load it with python -m yyfast.predict / yyfast.evaluate, or take its 'model' entry")
    return source


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yyfast.convert", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
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
    except (ValueError, RuntimeError) as exc:
        print(f"python -m yyfast.convert: error: {args.input}: {exc}", file=sys.stderr)
        return 2
    width = infer_width(_strip_wrappers(source))
    from .train.checkpoint import atomic_write

    try:
        atomic_write(args.output, lambda fh: torch.save(converted, fh))
    except OSError as exc:
        print(f"python -m yyfast.convert: error: cannot write {args.output!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    options = ", ".join(f'{k}="{v}"' for k, v in AUTHORS_OPTIONS.items())
    print(f"wrote {args.output}: {len(converted)} tensors; load it into "
          f'yyfast.create_model("yynet_small_{width}", {options})')
    return 0


if __name__ == "__main__":
    sys.exit(main())
