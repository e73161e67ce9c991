"""The paper's CIFAR-10 augmentation, on batched uint8 tensors wherever the data lives.

``RandomCrop(S, padding=4, padding_mode="reflect") -> RandomHorizontalFlip() ->
ColorJitter(brightness=0.01) -> Normalize(mean, std)``, done for a whole batch at once with
tensor ops, so the same code runs on the GPU (no per-image Python) and on the CPU.

The random numbers (crop offsets, flips, brightness factors) come from a CPU
``torch.Generator`` the caller owns and are drawn in a fixed order, so an epoch's augmentation
depends only on that generator's seed: the same on any device, and reproducible on resume.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..config import NORMALIZE_MEAN as CIFAR10_MEAN
from ..config import NORMALIZE_STD as CIFAR10_STD


class BatchAugment:
    """Augment (training) or only normalise (evaluation) uint8 (N, 3, H, W) batches.

    ``brightness=b`` multiplies each image by a factor drawn uniformly from [1-b, 1+b] and
    clamps to [0, 1], as torchvision's ``ColorJitter(brightness=b)`` does.
    """

    def __init__(self, crop: int, padding: int = 4, flip: bool = True, brightness: float = 0.01,
                 mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD,
                 channels_last: bool = False):
        if padding < 0:
            raise ValueError(f"padding={padding!r} is not valid; it must be >= 0")
        if not 0.0 <= brightness < 1.0:
            raise ValueError(f"brightness={brightness!r} is not valid; it must be in [0, 1)")
        self.crop, self.padding, self.flip, self.brightness = crop, padding, flip, brightness
        self.mean, self.std = tuple(mean), tuple(std)
        self.channels_last = channels_last

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def eval(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalised float32, no randomness."""
        return self._normalize(images.float().div_(255.0))

    def train(self, images: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """uint8 (N, C, H, W) with H, W >= crop -> augmented, normalised float32 (N, C, crop, crop)."""
        n, c, h, w = images.shape
        p, s = self.padding, self.crop
        # All random numbers first, on the CPU, always the same count: a fixed stream per seed.
        offset_y = torch.randint(0, h + 2 * p - s + 1, (n,), generator=generator)
        offset_x = torch.randint(0, w + 2 * p - s + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        factor = 1.0 + (torch.rand(n, generator=generator) * 2.0 - 1.0) * self.brightness
        dev = images.device
        offset_y, offset_x, flip, factor = (t.to(dev, non_blocking=True) for t in (offset_y, offset_x, flip, factor))

        x = images.float().div_(255.0)
        if p > 0:
            x = F.pad(x, (p, p, p, p), mode="reflect")
        ar = torch.arange(s, device=dev)
        rows = (offset_y[:, None] + ar)[:, None, :, None].expand(n, c, s, x.shape[3])
        x = x.gather(2, rows)
        cols = offset_x[:, None] + ar
        if self.flip:  # a flipped crop is the crop read right to left
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        x = x.gather(3, cols[:, None, None, :].expand(n, c, s, s))
        if self.brightness > 0:
            x = (x * factor.view(n, 1, 1, 1)).clamp_(0.0, 1.0)
        return self._normalize(x)
