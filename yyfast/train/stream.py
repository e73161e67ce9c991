"""Streaming data for image-folder datasets too large to decode into memory (ImageNet).

``train/<class>/*`` and ``val/<class>/*`` (or ``test/``) are read by torchvision's
``ImageFolder`` in ``torch.utils.data.DataLoader`` workers, one image at a time, with the
transforms of ``yyfast.preprocess`` (the same eval geometry as the decode cache, ``evaluate`` and
``predict``). Training batches are sharded over every rank of every node by
``DistributedSampler`` (seeded by the run seed, reshuffled per epoch); evaluation takes every
``world.size``-th image on each rank, so no image is counted twice. Batches are pinned when the
model trains on a GPU. Nothing is decoded ahead: memory stays at a few batches per worker.

An epoch's order depends only on (run seed, epoch), and image i's augmentation in that epoch only
on (run seed, epoch, i): each sample's transform runs under its own seeded torch RNG. So a resumed
run replays its epochs exactly, whatever the number of workers or ranks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import torch

from ..preprocess import EvalTransform, Preprocessing, train_transform
from .data import DatasetError, eval_split_name
from .distributed import World
from .engine import stream_seed


def _image_folder(root: str, split: str, transform):
    try:
        from torchvision.datasets import ImageFolder
    except ImportError as exc:  # an optional extra
        raise DatasetError("--data-mode stream needs torchvision: pip install 'yyfast[stream]' "
                           f"(or torchvision matching your torch) ({exc})") from exc
    path = os.path.join(root, split)
    try:
        return ImageFolder(path, transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DatasetError(f"--data {root!r}: cannot stream {split}/: {exc}") from exc


class SeededTransform(torch.utils.data.Dataset):
    """``dataset[i]`` transformed under torch's CPU RNG seeded by (seed, epoch, i), restored after."""

    def __init__(self, dataset, transform, seed: int = 0):
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        img, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.seed, self.epoch, 1_000_003 + index))
            return self.transform(img), label


@dataclass
class StreamData:
    """The streamed splits of an image-folder tree, and loaders for one rank."""

    root: str
    prep: Preprocessing
    world: World
    workers: int = 2
    pin_memory: bool = False

    def __post_init__(self):
        if not os.path.isdir(os.path.join(self.root, "train")):
            raise DatasetError(f"--data {self.root!r}: --data-mode stream needs an image-folder tree "
                               "(train/<class>/*, val/<class>/*), not an archive")
        self.train_set = SeededTransform(_image_folder(self.root, "train", None), train_transform(self.prep))
        self.eval_set = _image_folder(self.root, eval_split_name(self.root), EvalTransform(self.prep))
        if self.train_set.dataset.classes != self.eval_set.classes:
            raise DatasetError(f"--data {self.root!r}: train/ and {eval_split_name(self.root)}/ have different classes")

    @property
    def classes(self) -> List[str]:
        return list(self.eval_set.classes)

    def _loader(self, dataset, batch_size: int, sampler, drop_last: bool):
        workers = self.workers
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                           pin_memory=self.pin_memory, drop_last=drop_last,
                                           persistent_workers=False, prefetch_factor=4 if workers else None)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps per epoch for the global ``batch_size``: full global batches only, so the
        count (and with it the learning-rate schedule) does not depend on the number of processes and
        a run resumes on another world size with the same global batch. Each rank's loader has at least
        this many batches (``DistributedSampler`` pads the shares); the loop takes this many."""
        return len(self.train_set) // batch_size

    def train_loader(self, batch_size: int, epoch: int, seed: int):
        """Epoch ``epoch``'s training batches for this rank (``batch_size`` is the global batch)."""
        sampler = torch.utils.data.DistributedSampler(self.train_set, num_replicas=self.world.size,
                                                      rank=self.world.rank, shuffle=True, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        self.train_set.seed, self.train_set.epoch = seed, epoch  # before the workers fork
        return self._loader(self.train_set, batch_size // self.world.size, sampler, drop_last=True)

    def eval_loader(self, batch_size: int):
        """This rank's evaluation batches: every ``world.size``-th image, none twice over the ranks."""
        indices = list(range(self.world.rank, len(self.eval_set), self.world.size))
        return self._loader(torch.utils.data.Subset(self.eval_set, indices), batch_size, None, drop_last=False)


#: ``--data-mode auto`` streams when the decoded training split would exceed this many bytes
#: (uint8, 3 x S x S per image): CIFAR-10 at 32 px is 0.15 GB and stays cached on the device,
#: ImageNet-1k at 224 px (~193 GB) streams.
AUTO_STREAM_BYTES = 4 << 30


def count_images(root: str, split: str = "train") -> int:
    """Image files under ``root/split/<class>/`` (one ``scandir`` per class folder: ~1 s for ImageNet)."""
    from .data import _is_image

    total, base = 0, os.path.join(root, split)
    with os.scandir(base) as classes:
        for c in classes:
            if c.is_dir():
                with os.scandir(c.path) as files:
                    total += sum(1 for f in files if f.is_file() and _is_image(f.name))
    return total


def choose_data_mode(mode: str, data: str, image_size: int, subset: "int | None" = None,
                     threshold: int = AUTO_STREAM_BYTES) -> str:
    """``"cache"`` or ``"stream"`` for ``--data-mode mode`` (``auto`` decides by the decoded size;
    archives and CIFAR batch files are always cached: they are small or cannot be streamed)."""
    if mode not in ("auto", "cache", "stream"):
        raise DatasetError(f"--data-mode {mode!r} is not valid; allowed values: 'auto', 'cache', 'stream'")
    if mode != "auto":
        return mode
    if not os.path.isdir(os.path.join(data, "train")):
        return "cache"
    n = count_images(data)
    if subset is not None:
        n = min(n, subset)
    return "stream" if n * 3 * image_size * image_size > threshold else "cache"
