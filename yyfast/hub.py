"""Weights that travel: ``save_pretrained`` / ``from_pretrained`` folders and Hugging Face Hub repos.

A folder holds ``model.safetensors`` (the state_dict) and ``config.json`` in timm's Hub layout
(``architecture``, ``num_classes``, ``num_features``, ``model_args``, ``pretrained_cfg``), so the
same folder, or a Hub repo uploaded from it, also loads with
``timm.create_model("local-dir:PATH" or "hf-hub:ID", pretrained=True)``. ``model_args`` holds the
``YYNetConfig`` fields that differ from the ``architecture`` preset (``yynet``: from the default
``YYNetConfig``). Loading never unpickles: only safetensors is read.

Needs the ``hub`` extra (``safetensors``; ``huggingface_hub`` for Hub ids).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .config import PRESETS, YYNetConfig, get_config, list_models

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: The architecture name for a configuration that is not a preset: ``YYNetConfig()`` plus ``model_args``.
GENERIC_ARCH = "yynet"
#: Options that change training only, not what the weights compute: a loaded model may differ in them.
TRAINING_ONLY = ("head_dropout", "mbconv_dropout", "bn_momentum")
#: Keys of ``model_args`` that are run-time choices, not part of the weights' configuration.
RUNTIME_ARGS = ("backend",)

PathLike = Union[str, os.PathLike]


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise ImportError(f"this needs the {module!r} package: pip install 'yyfast[hub]' "
                          f"(or pip install {module.replace('_', '-')})") from exc


def architecture_of(config: YYNetConfig) -> str:
    return config.name if config.name in PRESETS else GENERIC_ARCH


def _base_config(architecture: str) -> YYNetConfig:
    return YYNetConfig() if architecture == GENERIC_ARCH else PRESETS[architecture]


def model_args_of(config: YYNetConfig) -> Dict[str, Any]:
    """The fields of ``config`` that differ from its architecture's preset (JSON-ready)."""
    base = _base_config(architecture_of(config))
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.name != "name" and getattr(config, f.name) != getattr(base, f.name)}


def hub_config(model: torch.nn.Module) -> Dict[str, Any]:
    """``config.json``'s content for ``model`` (timm's Hub layout)."""
    from . import __version__

    cfg = model.config
    pretrained_cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in model.pretrained_cfg.items()
                      if v is not None and k in ("input_size", "pool_size", "fixed_input_size", "mean", "std",
                                                 "crop_pct", "crop_mode", "interpolation", "first_conv",
                                                 "classifier", "paper_ids")}
    pretrained_cfg["num_classes"] = cfg.num_classes
    return {"architecture": architecture_of(cfg), "num_classes": cfg.num_classes, "num_features": cfg.out_width,
            "global_pool": "avg", "model_args": model_args_of(cfg), "pretrained_cfg": pretrained_cfg,
            "yyfast_version": __version__}


def save_pretrained(model: torch.nn.Module, save_directory: PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for ``model`` into ``save_directory`` (created)."""
    _need("safetensors")
    from safetensors.torch import save_file

    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    # safetensors wants contiguous CPU tensors that share no memory
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    with open(out / CONFIG_NAME, "w", encoding="utf-8") as fh:
        json.dump(hub_config(model), fh, indent=2)
        fh.write("\n")
    return out


def resolve_files(source: PathLike, revision: Optional[str] = None, cache_dir: Optional[PathLike] = None,
                  local_files_only: bool = False) -> Tuple[Path, Path]:
    """``(config.json, model.safetensors)`` of a local folder, or of a Hub repo id (downloaded or cached)."""
    path = Path(source)
    if path.is_dir():
        files = (path / CONFIG_NAME, path / WEIGHTS_NAME)
        for f in files:
            if not f.is_file():
                raise ValueError(f"{str(source)!r} has no {f.name}: not a folder written by save_pretrained")
        return files
    text = str(source)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/")):
        raise ValueError(f"pretrained={text!r} is neither a folder written by save_pretrained nor a Hugging Face "
                         "Hub repo id ('owner/name')")
    _need("huggingface_hub")
    from huggingface_hub import hf_hub_download

    try:
        return tuple(Path(hf_hub_download(text, name, revision=revision, cache_dir=cache_dir,
                                          local_files_only=local_files_only)) for name in (CONFIG_NAME, WEIGHTS_NAME))
    except Exception as exc:  # the Hub's errors (offline, unknown repo, missing file) are many classes
        raise ValueError(f"cannot get {text!r} from the Hugging Face Hub: {type(exc).__name__}: {exc}") from exc


def config_from_json(data: Any, where: str) -> YYNetConfig:
    """The ``YYNetConfig`` a ``config.json`` describes; ``ValueError`` names the bad key."""
    from .timm_interface import translate_timm_kwargs

    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    arch = data.get("architecture")
    allowed = list_models() + [GENERIC_ARCH]
    if arch not in allowed:
        raise ValueError(f"{where}: architecture={arch!r} is not a yyfast model; allowed values: {', '.join(allowed)}")
    args = data.get("model_args", {})
    if not isinstance(args, dict):
        raise ValueError(f"{where}: model_args must be an object, got {type(args).__name__}")
    args = translate_timm_kwargs({k: v for k, v in args.items() if k not in RUNTIME_ARGS})
    if "num_classes" in data:
        if args.get("num_classes", data["num_classes"]) != data["num_classes"]:
            raise ValueError(f"{where}: num_classes={data['num_classes']!r} disagrees with "
                             f"model_args.num_classes={args['num_classes']!r}")
        args["num_classes"] = data["num_classes"]
    try:
        config = get_config(_base_config(arch), **args)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    return config if arch != GENERIC_ARCH else config.replace(name="custom")


def read_config(config_file: Path) -> YYNetConfig:
    try:
        with open(config_file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config_file}: not readable as JSON ({exc})") from exc
    return config_from_json(data, str(config_file))


def load_weights(model: torch.nn.Module, weights_file: Path) -> None:
    """Load ``weights_file`` (safetensors) into ``model`` strictly; ``ValueError`` names the first
    missing, unexpected or mis-shaped key."""
    _need("safetensors")
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_file), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{weights_file}: not a readable safetensors file ({exc})") from exc
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    if missing:
        raise ValueError(f"{weights_file}: missing key {missing[0]!r} ({len(missing)} missing in all) for "
                         f"{model.config.name}")
    if unexpected:
        raise ValueError(f"{weights_file}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected in all) "
                         f"for {model.config.name}")
    for k in target:  # in the model's order: the first wrong key is the earliest layer
        if state[k].shape != target[k].shape:
            raise ValueError(f"{weights_file}: key {k!r} has shape {tuple(state[k].shape)}, the configuration in "
                             f"config.json expects {tuple(target[k].shape)}")
    model.load_state_dict(state)


def check_compatible(saved: YYNetConfig, wanted: YYNetConfig, source: str) -> None:
    """``wanted`` may differ from the weights' configuration only in training-only options and
    ``num_classes`` (a new classifier); anything else is a different network."""
    for f in dataclasses.fields(saved):
        key = f.name
        if key in ("name", "num_classes") + TRAINING_ONLY:
            continue
        if getattr(saved, key) != getattr(wanted, key):
            raise ValueError(f"the weights in {source!r} are for {key}={getattr(saved, key)!r}, but the model asks "
                             f"{key}={getattr(wanted, key)!r} ({saved.name} vs {wanted.name})")


def load_pretrained(build, source: PathLike, wanted: Optional[YYNetConfig] = None,
                    overrides: Optional[Dict[str, Any]] = None, revision: Optional[str] = None,
                    cache_dir: Optional[PathLike] = None, local_files_only: bool = False) -> torch.nn.Module:
    """``build(config)`` -> model with the weights of ``source`` (folder or Hub id).

    ``wanted``: the configuration the caller asked for (``create_model(name, pretrained=...)``),
    checked against the saved one; else the saved one with ``overrides``. A different
    ``num_classes`` loads the saved classifier's shape and then resets the classifier.
    """
    config_file, weights_file = resolve_files(source, revision, cache_dir, local_files_only)
    saved = read_config(config_file)
    if wanted is None:
        from .timm_interface import translate_timm_kwargs

        wanted = saved.replace(**translate_timm_kwargs(overrides or {}))
    check_compatible(saved, wanted, str(source))
    model = build(wanted.replace(num_classes=saved.num_classes))
    load_weights(model, weights_file)
    if wanted.num_classes != saved.num_classes:
        model.reset_classifier(wanted.num_classes)
    return model


class PretrainedMixin:
    """``model.save_pretrained(dir)`` and ``Class.from_pretrained(dir_or_hub_id)``."""

    def save_pretrained(self, save_directory: PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (timm's Hub layout) into ``save_directory``."""
        return save_pretrained(self, save_directory)

    @classmethod
    def from_pretrained(cls, source: PathLike, *, revision: Optional[str] = None,
                        cache_dir: Optional[PathLike] = None, local_files_only: bool = False, **kwargs: Any):
        """A model from a ``save_pretrained`` folder or a Hugging Face Hub repo id.

        ``kwargs``: constructor arguments (``backend=`` for ``yyfast.YYNet``) and option overrides
        that keep the weights valid: ``num_classes`` (new classifier), ``head_dropout``/``drop_rate``,
        ``mbconv_dropout``, ``bn_momentum``. Any other difference raises ``ValueError`` naming the key.
        """
        ctor = {k: kwargs.pop(k) for k in ("backend",) if k in kwargs}
        return load_pretrained(lambda config: cls(config, **ctor), source, overrides=kwargs, revision=revision,
                               cache_dir=cache_dir, local_files_only=local_files_only)
