"""Replay a captured CUDA graph of an inference model's forward for one fixed batch shape.

A CUDA graph removes the per-kernel launch cost (YYNet at small batches is launch-bound: about
a hundred small kernels per forward). The graph reads a static input buffer and writes a static
output buffer, so a call copies the batch in, replays, and returns a clone of the output (the
next replay overwrites the buffer). Any other shape, dtype or device runs the model eagerly.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class CUDAGraphForward(nn.Module):
    """``model``'s forward, replayed from a CUDA graph for inputs of batch size ``batch_size``.

    The graph is captured on the first CUDA call whose batch size is ``batch_size`` (or, if it
    is None, on the first CUDA call at all), for that call's (C, H, W), dtype and device.
    Eval-only like the model it wraps: ``.train()`` raises.
    """

    def __init__(self, model: nn.Module, batch_size: Optional[int] = None, warmup: int = 3):
        super().__init__()
        self.model = model
        self.batch_size = batch_size
        self.warmup = warmup
        self._graph = None
        self._static_in: Optional[torch.Tensor] = None
        self._static_out: Optional[torch.Tensor] = None
        super().train(False)

    def train(self, mode: bool = True) -> "CUDAGraphForward":
        if mode:
            raise RuntimeError("CUDAGraphForward wraps an eval-only inference model; .train() is not supported.")
        return super().train(False)

    @property
    def config(self):
        return self.model.config

    @property
    def captured_shape(self):
        return None if self._static_in is None else tuple(self._static_in.shape)

    def _matches(self, x: torch.Tensor) -> bool:
        s = self._static_in
        return s is not None and x.shape == s.shape and x.dtype == s.dtype and x.device == s.device

    def _capture(self, x: torch.Tensor) -> None:
        static_in = x.detach().clone()
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):  # warm up outside the graph (lazy inits, cuDNN/Triton autotuning)
            for _ in range(self.warmup):
                self.model(static_in)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.model(static_in)
        self._graph, self._static_in, self._static_out = graph, static_in, static_out

    def reset(self) -> None:
        """Forget the captured graph (e.g. after moving the model); the next call recaptures."""
        self._graph = self._static_in = self._static_out = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (isinstance(x, torch.Tensor) and x.is_cuda) or torch.compiler.is_compiling():
            return self.model(x)
        if self._graph is None and (self.batch_size is None or x.shape[0] == self.batch_size):
            self._capture(x)
        if not self._matches(x):
            return self.model(x)
        self._static_in.copy_(x)
        self._graph.replay()
        return self._static_out.clone()
