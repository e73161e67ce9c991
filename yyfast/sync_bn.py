"""BatchNorm synchronised across processes, on any device and process-group backend (gloo included).

``SyncBatchNorm2d`` is an ``nn.BatchNorm2d`` (same parameters, buffers and state_dict keys) whose
training forward normalises with the statistics of the *global* batch: each rank's per-channel
``sum``, ``sum of squares`` and count are all-reduced (``torch.distributed.nn.functional.all_reduce``,
which is differentiable: its backward all-reduces the gradient, so the per-channel gradient sums of
the backward are global too). With equal or unequal per-rank batches it equals one BatchNorm over
the union of the batches, including the running statistics (unbiased variance, momentum).

``torch.nn.SyncBatchNorm`` only trains on GPUs; this one also runs on CPU processes (gloo), which is
how the tests prove it. ``convert_sync_batchnorm(model)`` swaps every ``nn.BatchNorm2d`` in place,
the fused spans' included: a ``yyfast.YYNet`` span whose BatchNorm is synchronised runs its
composed (reference) form in training, because the fused kernels compute their batch statistics
inside one call with no point to all-reduce them (eval mode, where statistics are fixed, stays fused).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import nn


def _all_reduce(t: torch.Tensor, group) -> torch.Tensor:
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t, group=group) if t.requires_grad else _all_reduce_plain(t, group)


def _all_reduce_plain(t: torch.Tensor, group) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t, group=group)
    return t


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with global-batch statistics in training when a process group is up."""

    def __init__(self, *args, process_group: Optional[object] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _syncing(self) -> bool:
        return (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._syncing():
            return super().forward(x)
        if x.dim() != 4:
            raise ValueError(f"SyncBatchNorm2d expects a 4-D input, got shape {tuple(x.shape)}")
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        xf = x.to(acc)
        count = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=acc, device=x.device)
        stats = torch.cat([xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3)), count])
        stats = _all_reduce(stats, self.process_group)
        c = self.num_features
        total = stats[2 * c]
        mean = stats[:c] / total
        var = (stats[c:2 * c] / total - mean * mean).clamp_min(0)  # biased: what normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                unbiased = var.detach() * (total / (total - 1))
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = (1, c, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.to(acc).view(shape) + self.bias.to(acc).view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, process_group: Optional[object] = None) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` under ``module`` by a ``SyncBatchNorm2d`` sharing its parameters
    and buffers (so the state_dict and any optimizer already built stay valid); returns ``module``."""
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, process_group=process_group)
            sync.weight, sync.bias = child.weight, child.bias
            sync.running_mean, sync.running_var = child.running_mean, child.running_var
            sync.num_batches_tracked = child.num_batches_tracked
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child, process_group)
    return module


__all__ = ["SyncBatchNorm2d", "convert_sync_batchnorm"]
