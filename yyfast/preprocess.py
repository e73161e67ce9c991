"""Image preprocessing, one definition per preset and recipe, shared by training, ``evaluate`` and ``predict``.

Two recipes:

* ``"paper"`` (default): what the authors trained with. CIFAR: the images as they are (32x32),
  ``RandomCrop(32, padding=4, reflect)``, flip, ``ColorJitter(brightness=0.01)``, the CIFAR-10
  mean/std. ImageNet (their ``YY_ImageNet.py``): ``Resize((224, 224))`` (a stretch, no crop), the
  same jitter/crop/flip, and again the CIFAR-10 mean/std (the script's ``stats``). Evaluation:
  the same resize, then normalise.
* ``"imagenet"``: the standard ImageNet pipeline: ``RandomResizedCrop(S)``, flip, ImageNet mean/std;
  evaluation resizes the shorter side to ``S / crop_pct`` (``crop_pct = 0.875``) and centre-crops S.

The evaluation geometry (:func:`eval_image`) is the one function every path uses: the decode cache
of ``yyfast.train`` stores its output, ``predict`` and ``evaluate`` call it, and the streaming
loader's eval transform wraps it. The streaming training transforms are torchvision's (v2), built
by :func:`train_transform`; torchvision is imported only there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

#: The authors' normalisation, used by both of their scripts (CIFAR and ImageNet).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RECIPES = ("paper", "imagenet")


@dataclass(frozen=True)
class Preprocessing:
    """What an image goes through before the model. ``resize``: ``"stretch"`` (to S x S) or
    ``"shorter"`` (shorter side to ``S / crop_pct``, then a centre crop of S)."""

    recipe: str
    image_size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    resize: str
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    #: the paper recipe's training augmentation: reflect padding of the random crop, brightness jitter
    padding: int = 4
    brightness: float = 0.01


def preprocessing(model_name: str, recipe: str = "paper", image_size: Optional[int] = None) -> Preprocessing:
    """The preprocessing of preset ``model_name`` under ``recipe`` (``"paper"`` or ``"imagenet"``)."""
    from .config import INPUT_SIZES

    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r} is not valid; allowed values: {', '.join(map(repr, RECIPES))}")
    size = int(image_size) if image_size is not None else INPUT_SIZES.get(model_name, (3, 32, 32))[1]
    if isinstance(image_size, bool) or size < 1:
        raise ValueError(f"image_size={image_size!r} is not valid; it must be a positive integer")
    if recipe == "imagenet":
        return Preprocessing("imagenet", size, IMAGENET_MEAN, IMAGENET_STD, "shorter", crop_pct=0.875)
    return Preprocessing("paper", size, CIFAR10_MEAN, CIFAR10_STD, "stretch")


def eval_image(img, prep: Preprocessing):
    """The evaluation geometry: a PIL image (any mode) -> an RGB PIL image of ``S x S``."""
    from PIL import Image

    img = img.convert("RGB")
    size = prep.image_size
    w, h = img.size
    if prep.resize == "stretch":
        return img if (w, h) == (size, size) else img.resize((size, size), Image.BILINEAR)
    short = round(size / prep.crop_pct)
    scale = short / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def eval_array(img, prep: Preprocessing) -> np.ndarray:
    """``eval_image`` as a (3, S, S) uint8 array (what the decode cache stores)."""
    return np.asarray(eval_image(img, prep), dtype=np.uint8).transpose(2, 0, 1).copy()


def normalize(x, prep: Preprocessing):
    """A float tensor (..., 3, H, W) in [0, 1] -> normalised with the recipe's mean/std."""
    import torch

    mean = torch.tensor(prep.mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def eval_tensor(img, prep: Preprocessing):
    """A PIL image -> the model's normalised float32 (3, S, S) input."""
    import torch

    return normalize(torch.from_numpy(eval_array(img, prep)).float().div_(255.0), prep)


class EvalGeometry:
    """``eval_image`` as a picklable transform (PIL -> PIL) for ``torch.utils.data`` workers."""

    def __init__(self, prep: Preprocessing):
        self.prep = prep

    def __call__(self, img):
        return eval_image(img, self.prep)


class EvalTransform:
    """``eval_tensor`` as a picklable transform for ``torch.utils.data`` workers."""

    def __init__(self, prep: Preprocessing):
        self.prep = prep

    def __call__(self, img):
        return eval_tensor(img, self.prep)


def train_transform(prep: Preprocessing):
    """The training augmentation for a streamed PIL image, as torchvision v2 transforms."""
    import torch
    from torchvision.transforms import v2

    tail = [v2.RandomHorizontalFlip(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(prep.mean, prep.std)]
    if prep.recipe == "imagenet":
        return v2.Compose([v2.RandomResizedCrop(prep.image_size, antialias=True), *tail])
    # the paper's order (YY_ImageNet.py): resize, brightness jitter, padded random crop, flip
    return v2.Compose([EvalGeometry(prep), v2.ColorJitter(brightness=prep.brightness),
                       v2.RandomCrop(prep.image_size, padding=prep.padding, padding_mode="reflect"), *tail])
