"""Where a training run's batches come from: the decoded cache on the device, or streamed files.

* ``cached_source``: the whole split decoded once into uint8 (``cache.load_dataset``), kept on the
  training device, augmented there a batch at a time (``augment.BatchAugment``): the fastest path
  for CIFAR-sized data. One process per node decodes (``LOCAL_RANK`` 0); the others of that node
  then read its cache file, so no node decodes twice and none waits for another node's disk.
* ``stream_source``: ``stream.StreamData``, DataLoader workers reading image files one at a time,
  for datasets that do not fit in memory (ImageNet).

Both give the same interface to the loop: classes, counts, a fingerprint for ``--resume``, steps
per epoch, and per-epoch training / evaluation batch iterators.
"""
from __future__ import annotations

import argparse
import functools
import itertools
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Tuple

import torch

from ..preprocess import preprocessing
from . import distributed as dist_utils
from .augment import CIFAR10_MEAN, CIFAR10_STD, BatchAugment
from .cache import load_dataset
from .data import DatasetError
from .distributed import World
from .engine import cached_batches, loader_batches, steps_per_epoch

Batches = Iterator[Tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Source:
    mode: str  #: "cache" or "stream"
    classes: List[str]
    num_train: int
    num_test: int
    fingerprint: Dict
    description: str
    steps: Callable[[int], int]                      #: global batch -> optimizer steps per epoch
    train_batches: Callable[[int], Batches]          #: epoch -> this rank's batches
    eval_batches: Callable[[], Tuple[Batches, int]]  #: -> (this rank's batches, how many)


def cached_source(args: argparse.Namespace, world: World, device: torch.device, progress, log) -> Source:
    subsets = {"train": args.subset_train, "test": args.subset_test}
    load = functools.partial(load_dataset, args.data, ("train", "test"), subsets, args.image_size,
                             cache_dir=args.cache_dir, use_cache=not args.no_cache, progress=progress, log=log)
    first = world.local_rank == 0  # one decoder per node: the cache folder is node-local
    if first:
        dataset = load()
    dist_utils.barrier(world)
    if not first:
        dataset = load()
    train_x = torch.from_numpy(dataset.splits["train"].images).to(device)
    train_y = torch.from_numpy(dataset.splits["train"].labels).to(device)
    test_x = torch.from_numpy(dataset.splits["test"].images).to(device)
    test_y = torch.from_numpy(dataset.splits["test"].labels).to(device)
    augment = BatchAugment(crop=args.image_size, padding=4, brightness=0.01, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                           channels_last=args.channels_last)

    def eval_batches():
        idx = torch.arange(test_x.shape[0])[world.rank::world.size]
        chunks = [idx[b:b + args.eval_batch_size].to(device) for b in range(0, idx.numel(), args.eval_batch_size)]
        return ((augment.eval(test_x[bi]), test_y[bi]) for bi in chunks), len(chunks)

    return Source("cache", dataset.classes, len(train_y), len(test_y), dataset.fingerprint,
                  f"{dataset.layout} {dataset.source} (decoded, on {device})",
                  lambda batch: steps_per_epoch(len(train_y), batch, world),
                  lambda epoch: cached_batches(train_x, train_y, augment, epoch=epoch, seed=args.seed,
                                               batch_size=args.batch_size, world=world),
                  eval_batches)


def stream_source(args: argparse.Namespace, world: World, device: torch.device, log) -> Source:
    from .fingerprint import fingerprint
    from .stream import StreamData

    if args.subset_train or args.subset_test:
        raise DatasetError("--subset-train/--subset-test select from the decoded cache; with --data-mode stream, "
                           "point --data at a smaller image-folder tree instead")
    prep = preprocessing(args.model, args.recipe, args.image_size)
    data = StreamData(args.data, prep, world, workers=args.workers, pin_memory=device.type == "cuda")

    def eval_batches():
        loader = data.eval_loader(args.eval_batch_size)
        return loader_batches(loader, device, args.channels_last), len(loader)

    return Source("stream", data.classes, len(data.train_set), len(data.eval_set),
                  fingerprint(args.data, content=False),
                  f"image folder {args.data} (streamed by {args.workers} worker(s) per process, {prep.recipe} recipe)",
                  data.steps_per_epoch,
                  lambda epoch: itertools.islice(loader_batches(data.train_loader(args.batch_size, epoch, args.seed),
                                                                device, args.channels_last),
                                                 data.steps_per_epoch(args.batch_size)),
                  eval_batches)


def make_source(args: argparse.Namespace, world: World, device: torch.device, progress, log) -> Source:
    """The source ``--data-mode`` asks for (``auto``: stream above ``stream.AUTO_STREAM_BYTES``)."""
    from .stream import choose_data_mode

    mode = choose_data_mode(args.data_mode, args.data, args.image_size, args.subset_train)
    if args.recipe != "paper" and mode != "stream":
        raise DatasetError(f"--recipe {args.recipe} augments each image in DataLoader workers (RandomResizedCrop): "
                           "it needs --data-mode stream and an image-folder tree")
    if mode == "stream":
        return stream_source(args, world, device, log)
    return cached_source(args, world, device, progress, log)
