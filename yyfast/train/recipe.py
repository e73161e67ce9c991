"""The paper's training recipe (YYNET.md "Training recipe", paper Table 2 and section 4.1).

* AdamW with ``amsgrad=True`` (the authors' code), OneCycle schedule stepped every batch over
  ``epochs * steps_per_epoch`` steps (PyTorch's defaults: 30% warm-up, cosine, beta1 cycled);
* weight decay ``max_lr * 1.56`` at the start, then set to ``lr * 1.56`` at the end of every epoch;
* gradient clipping to global norm 1.0;
* mixed precision on the GPU (bf16 autocast where supported, else fp16 with a GradScaler);
* EMA from 25% of training, see ``yyfast.train.ema``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

#: Per-preset recipe defaults: (epochs, batch size, max lr). ImageNet: paper Table 2.
CIFAR_RECIPE = (40, 64, 1e-2)
IMAGENET_RECIPE = (300, 32, 1.8e-4)
WEIGHT_DECAY_FACTOR = 1.56
GRAD_CLIP_NORM = 1.0
EMA_START_FRACTION = 0.25
EMA_AVG_WEIGHT = 0.1  # avg = 0.1 * avg + 0.9 * param


def recipe_defaults(model_name: str):
    """``(epochs, batch_size, max_lr)`` of the paper for this preset."""
    return IMAGENET_RECIPE if model_name == "yynet_imagenet" else CIFAR_RECIPE


def build_optimizer(params, max_lr: float, wd_factor: float = WEIGHT_DECAY_FACTOR) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=max_lr, weight_decay=max_lr * wd_factor, amsgrad=True)


def build_scheduler(optimizer, max_lr: float, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    if total_steps < 2:
        raise ValueError(f"the OneCycle schedule needs at least 2 steps, got {total_steps} "
                         "(increase --epochs or the training set, or lower --batch-size)")
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps)


def current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def update_weight_decay(optimizer, wd_factor: float = WEIGHT_DECAY_FACTOR) -> float:
    """The end-of-epoch rule: ``weight_decay = lr * wd_factor``; returns the new value."""
    wd = current_lr(optimizer) * wd_factor
    for group in optimizer.param_groups:
        group["weight_decay"] = wd
    return wd


@dataclass
class Precision:
    """How the forward runs: ``dtype`` None means float32, no autocast."""

    name: str
    dtype: Optional[torch.dtype]
    use_scaler: bool

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=self.dtype)


def choose_precision(amp: str, device: torch.device) -> Precision:
    """``amp``: ``auto`` (bf16 on a GPU that supports it, fp16 on older GPUs, fp32 on the CPU),
    ``bf16``, ``fp16`` or ``off``. fp16 uses a GradScaler; bf16 needs none."""
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"amp={amp!r} is not valid; allowed values: 'auto', 'bf16', 'fp16', 'off'")
    if amp == "auto":
        if device.type != "cuda":
            amp = "off"  # CPU autocast is slower than fp32 here, and fp32 keeps resumes bit-exact
        else:
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "off":
        return Precision("fp32", None, False)
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device (use 'bf16' or 'off' on the CPU)")
        return Precision("fp16", torch.float16, True)
    return Precision("bf16", torch.bfloat16, False)
