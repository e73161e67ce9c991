"""One training epoch and one evaluation pass over device-resident uint8 data."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .augment import BatchAugment
from .distributed import World, all_reduce_sum, shard
from .ema import ModelEMA
from .recipe import Precision

_MASK64 = (1 << 63) - 1


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for (run seed, epoch, stream): data order is stream 0, rank r's
    augmentation stream 1 + r. Each epoch's generators are rebuilt from this, so the data RNG
    state at an epoch boundary is just the epoch number and a resumed run replays it exactly."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return (x * 0xD6E8FEB86659FD93) & _MASK64


def steps_per_epoch(num_train: int, batch_size: int, world: World) -> int:
    """Optimizer steps in one epoch; ``batch_size`` is the global batch, split over the ranks.

    The last, partial batch is kept (as a DataLoader without drop_last does) unless it would
    hold a single image per rank, which BatchNorm cannot train on.
    """
    per_rank = num_train // world.size
    local_batch = batch_size // world.size
    full, rest = divmod(per_rank, local_batch)
    return full + (1 if rest >= 2 else 0)


@dataclass
class EpochResult:
    loss: float
    acc: float
    images: int
    seconds: float


def cached_batches(images: torch.Tensor, labels: torch.Tensor, augment: BatchAugment, *, epoch: int, seed: int,
                   batch_size: int, world: World) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """This rank's augmented training batches of one epoch from device-resident uint8 data."""
    device = images.device
    order = torch.Generator().manual_seed(stream_seed(seed, epoch, 0))
    aug_gen = torch.Generator().manual_seed(stream_seed(seed, epoch, 1 + world.rank))
    idx = shard(torch.randperm(images.shape[0], generator=order), world)
    local_batch = batch_size // world.size
    for s in range(steps_per_epoch(images.shape[0], batch_size, world)):
        batch_idx = idx[s * local_batch:(s + 1) * local_batch].to(device, non_blocking=True)
        yield augment.train(images[batch_idx], aug_gen), labels[batch_idx]


def loader_batches(loader, device: torch.device, channels_last: bool = False
                   ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """A DataLoader's (already augmented and normalised) batches, moved to ``device``."""
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y.to(device, non_blocking=True)


def train_batches(model: nn.Module, raw_model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                  steps: int, optimizer, scheduler, scaler, precision: Precision, ema: Optional[ModelEMA], *,
                  epoch: int, first_step: int, clip_norm: float, world: World, device: torch.device,
                  progress: Optional[Callable] = None, log_interval: int = 0,
                  log: Optional[Callable[[str], None]] = None) -> EpochResult:
    """One epoch of optimizer steps over ``batches`` (``steps`` of them, the same count on every rank).
    ``model`` is what runs forward (DDP/compiled), ``raw_model`` the plain YYNet (clipping, EMA).
    ``log_interval`` > 0 with ``log``: a progress line every that many steps (for logs, where tqdm is off).
    Returns the epoch's mean training loss/accuracy over all ranks."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    bar = progress(total=steps, desc=f"epoch {epoch + 1}", unit="step") if progress else None
    start = time.perf_counter()
    for s, (x, y) in enumerate(batches):
        with precision.autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), clip_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(raw_model, first_step + s)
        with torch.no_grad():
            loss_sum += loss.detach().double() * y.shape[0]
            correct += (logits.argmax(1) == y).sum()
        seen += y.shape[0]
        if bar is not None:
            bar.update(1)
            if s % 10 == 0 or s == steps - 1:  # .item() syncs the GPU: not every step
                rate = seen * world.size / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{rate:.0f}")
        if log is not None and log_interval > 0 and ((s + 1) % log_interval == 0 or s == steps - 1):
            rate = seen * world.size / max(time.perf_counter() - start, 1e-9)
            log(f"epoch {epoch + 1} step {s + 1}/{steps}  loss {loss.item():.4f}  "
                f"lr {optimizer.param_groups[0]['lr']:.2e}  {rate:.0f} img/s")
    if bar is not None:
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)])
    totals = all_reduce_sum(totals, world).tolist()
    n = max(totals[2], 1.0)
    return EpochResult(totals[0] / n, totals[1] / n, int(totals[2]), seconds)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, augment: BatchAugment,
             precision: Precision, batch_size: int = 500, world: Optional[World] = None,
             progress: Optional[Callable] = None, desc: str = "eval"):
    """Mean cross-entropy and accuracy over every image (each rank takes every ``size``-th one;
    ``world`` None: a single process)."""
    world = world or World()
    idx = torch.arange(images.shape[0])[world.rank::world.size]
    chunks = [idx[b * batch_size:(b + 1) * batch_size].to(images.device)
              for b in range(math.ceil(idx.numel() / batch_size))]
    batches = ((augment.eval(images[bi]), labels[bi]) for bi in chunks)
    return evaluate_batches(model, batches, len(chunks), precision, world, images.device, progress, desc)


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]], num_batches: int,
                     precision: Precision, world: World, device: torch.device, progress: Optional[Callable] = None,
                     desc: str = "eval", on_logits: Optional[Callable[[torch.Tensor, torch.Tensor], None]] = None):
    """Mean cross-entropy and accuracy over ``batches`` (this rank's share), summed over the ranks.
    ``on_logits(logits, labels)``, if given, sees every batch (more metrics without a second pass)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    if progress is not None:
        batches = progress(batches, total=num_batches, desc=desc, unit="batch", leave=False)
    for x, y in batches:
        with precision.autocast(device):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        count += y.shape[0]
        if on_logits is not None:
            on_logits(logits, y)
    totals = all_reduce_sum(torch.stack([loss_sum, correct.double(), count]), world).tolist()
    model.train(was_training)
    n = max(totals[2], 1.0)
    return totals[0] / n, totals[1] / n
