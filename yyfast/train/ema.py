"""The exponential moving average of the paper: from 25% of training, ``avg = 0.1*avg + 0.9*param``.

What this trainer does: the EMA starts at optimizer step ``round(0.25 * total_steps)`` (25% of
training, as the paper says); at that step the average is a copy of the model, and after every
later step ``avg = avg_weight * avg + (1 - avg_weight) * value`` with ``avg_weight = 0.1``, for
every floating parameter *and* BatchNorm running statistic (integer buffers such as
``num_batches_tracked`` are copied). Both the raw and the EMA model are evaluated and reported.

What the authors' CIFAR code does differently (YYNET.md): its EMA starts at *batch index*
``epochs // 4`` (a step count, e.g. step 10 for 40 epochs, not 25% of training), and its
evaluation uses the raw model, not the EMA. Its reported accuracy is the best over epochs; this
trainer reports the last-epoch and the best accuracy of each model, saying which is which.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, start_step: int, avg_weight: float = 0.1):
        if not 0.0 <= avg_weight < 1.0:
            raise ValueError(f"avg_weight={avg_weight!r} is not valid; it must be in [0, 1)")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.start_step = int(start_step)
        self.avg_weight = float(avg_weight)
        self.started = False
        self._pairs = None
        self._source = None

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Call after optimizer step number ``step`` (0-based) with the raw (unwrapped) model."""
        if step < self.start_step:
            return
        if self._pairs is None or self._source is not model:
            # state_dict() tensors share storage with the live parameters and buffers (the
            # optimizer updates them in place), so the pairing is built once, not every step.
            src = model.state_dict()
            pairs = [(avg, src[name]) for name, avg in self.module.state_dict().items()]
            floats = [(a, v) for a, v in pairs if a.is_floating_point()]
            self._pairs = ([a for a, _ in floats], [v for _, v in floats],
                           [(a, v) for a, v in pairs if not a.is_floating_point()])
            self._source = model
        floats_avg, floats_src, others = self._pairs
        if not self.started:
            torch._foreach_copy_(floats_avg, floats_src)
        else:
            torch._foreach_mul_(floats_avg, self.avg_weight)
            torch._foreach_add_(floats_avg, floats_src, alpha=1.0 - self.avg_weight)
        for avg, value in others:  # num_batches_tracked: copied, not averaged
            avg.copy_(value)
        self.started = True

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "start_step": self.start_step, "avg_weight": self.avg_weight,
                "started": self.started}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.start_step = int(state["start_step"])
        self.avg_weight = float(state["avg_weight"])
        self.started = bool(state["started"])

    def model(self) -> Optional[nn.Module]:
        """The averaged model once the EMA has started, else None (nothing to evaluate yet)."""
        return self.module if self.started else None
