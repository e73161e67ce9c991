"""Multi-process training under ``torchrun``: process group, data shards, reductions.

``torchrun --nproc_per_node=K -m yyfast.train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; this module then joins the process group (``nccl`` on GPUs, ``gloo`` on the
CPU), gives each rank its own GPU, and offers the few collectives the trainer needs. A plain
``python -m yyfast.train`` is a world of one and never touches ``torch.distributed``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def init(world: World, device: torch.device) -> torch.device:
    """Join the process group when ``world.size > 1``; returns this rank's device."""
    if not world.distributed:
        return device
    if device.type == "cuda":
        if torch.cuda.device_count() < 1:
            raise RuntimeError("device cuda was asked for, but no GPU is visible to this process")
        device = torch.device("cuda", world.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shard(indices: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's share of a (shared, identically shuffled) index list: every ``size``-th one.

    The list is first cut to a multiple of the world size so every rank runs the same number of
    steps (a rank with one batch more would wait forever in the gradient all-reduce).
    """
    if not world.distributed:
        return indices
    usable = indices.numel() - indices.numel() % world.size
    return indices[:usable][world.rank::world.size]


def all_reduce_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module, world: World, src: int = 0) -> None:
    """Make every rank's BatchNorm statistics rank ``src``'s (they drift apart within a step),
    so all ranks evaluate the same model and checkpoints match what was evaluated."""
    if not world.distributed:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src)


