"""The streaming data path (``yyfast.train.stream``) and the one preprocessing definition it shares."""
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from yyfast.preprocess import (CIFAR10_MEAN, IMAGENET_MEAN, EvalTransform, eval_array, eval_image,
                               preprocessing, train_transform)
from yyfast.train.distributed import World

torchvision = pytest.importorskip("torchvision", reason="the streaming path is torchvision's (optional extra)")
from yyfast.train.stream import StreamData  # noqa: E402

SIZES = [(48, 40), (30, 64), (32, 32), (100, 60)]


def make_jpeg_tree(root: Path, classes=("ant", "bee", "cow"), train=5, val=3, seed=0):
    """Real JPEGs of mixed sizes; pixel (0, 0)'s red value encodes (class, index)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = SIZES[(k + i) % len(SIZES)]
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="JPEG", quality=90)
                (root / split / c / f"{i:03d}.jpg").write_bytes(buf.getvalue())
    return root


def test_presets_have_their_recipes():
    cifar, imnet = preprocessing("yynet_small_64"), preprocessing("yynet_imagenet")
    assert (cifar.image_size, cifar.mean, cifar.resize) == (32, CIFAR10_MEAN, "stretch")
    # the authors' ImageNet script: Resize((224, 224)) and their CIFAR stats
    assert (imnet.image_size, imnet.mean, imnet.resize) == (224, CIFAR10_MEAN, "stretch")
    std = preprocessing("yynet_imagenet", "imagenet")
    assert (std.mean, std.resize, std.crop_pct) == (IMAGENET_MEAN, "shorter", 0.875)
    with pytest.raises(ValueError, match="recipe='foo' is not valid"):
        preprocessing("yynet_small_64", "foo")


def test_eval_geometry():
    from PIL import Image

    img = Image.new("RGB", (300, 250))
    assert eval_image(img, preprocessing("yynet_imagenet")).size == (224, 224)
    assert eval_image(img, preprocessing("yynet_imagenet", "imagenet")).size == (224, 224)
    # shorter side to 224/0.875 = 256, centre crop: a 300x250 image is scaled by 256/250
    # (a horizontal ramp, value x // 2): the centre stays the centre, and the crop drops the edges
    ramp = Image.fromarray(np.tile((np.arange(300) // 2).astype(np.uint8)[None, :, None], (250, 1, 3)))
    out = eval_array(ramp, preprocessing("yynet_imagenet", "imagenet")).astype(int)
    assert out.shape == (3, 224, 224)
    assert abs(out[0, 112, 112] - 75) <= 1
    left = (round(300 * 256 / 250) - 224) // 2  # 41 columns of the 307-wide resize are cut
    assert abs(out[0, 0, 0] - (left + 0.5) * 250 / 256 / 2) <= 1.5
    stretched = eval_array(ramp, preprocessing("yynet_imagenet")).astype(int)  # the paper's stretch keeps them
    assert stretched[0, 0, 0] <= 1 and stretched[0, 0, -1] >= 148


def test_streamed_eval_images_equal_the_shared_eval_transform(tmp_path):
    from PIL import Image

    root = make_jpeg_tree(tmp_path / "tree")
    prep = preprocessing("yynet_small_16", image_size=32)
    data = StreamData(str(root), prep, World(), workers=0)
    assert data.classes == ["ant", "bee", "cow"]
    x, y = next(iter(data.eval_loader(batch_size=4)))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    path, label = data.eval_set.samples[0]  # noqa
    with Image.open(path) as img:
        torch.testing.assert_close(x[0], EvalTransform(prep)(img), rtol=0, atol=0)
    assert y[0].item() == label


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_share_the_data_without_overlap(tmp_path, world_size):
    root = make_jpeg_tree(tmp_path / "tree", train=7)
    prep = preprocessing("yynet_small_16", image_size=16)
    seen_train, seen_eval, steps = [], [], set()
    for rank in range(world_size):
        data = StreamData(str(root), prep, World(rank, world_size), workers=0)
        loader = data.train_loader(batch_size=2 * world_size, epoch=1, seed=5)
        seen_train += list(loader.sampler)
        steps.add((len(loader), data.steps_per_epoch(2 * world_size)))
        seen_eval += list(data.eval_loader(batch_size=4).dataset.indices)
    n = len(data.train_set)
    (loader_len, steps_n), = steps  # every rank has the same loader length and step count ...
    assert loader_len >= steps_n == n // (2 * world_size)  # ... full global batches: world-size independent
    assert set(seen_train) == set(range(n))  # every image, padded to equal shares
    assert len(seen_train) == -(-n // world_size) * world_size
    assert sorted(seen_eval) == list(range(len(data.eval_set)))  # eval: each image exactly once


def test_epoch_order_depends_only_on_seed_and_epoch(tmp_path):
    root = make_jpeg_tree(tmp_path / "tree")
    prep = preprocessing("yynet_small_16", image_size=16)
    data = StreamData(str(root), prep, World(), workers=0)
    a = [y.tolist() for _, y in data.train_loader(4, epoch=2, seed=1)]
    b = [y.tolist() for _, y in data.train_loader(4, epoch=2, seed=1)]
    c = [y.tolist() for _, y in data.train_loader(4, epoch=3, seed=1)]
    xa = [x for x, _ in data.train_loader(4, epoch=2, seed=1)]
    xb = [x for x, _ in data.train_loader(4, epoch=2, seed=1)]
    assert a == b and a != c
    for p, q in zip(xa, xb):  # the augmentation too
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_workers_give_the_same_batches(tmp_path):
    root = make_jpeg_tree(tmp_path / "tree")
    prep = preprocessing("yynet_small_16", image_size=16)
    data = StreamData(str(root), prep, World(), workers=2)
    batches = list(data.train_loader(4, epoch=0, seed=0))
    assert len(batches) >= data.steps_per_epoch(4) and all(x.shape == (4, 3, 16, 16) for x, _ in batches)
    serial = StreamData(str(root), prep, World(), workers=0)
    for (x, y), (xs, ys) in zip(batches, serial.train_loader(4, epoch=0, seed=0)):  # workers change nothing
        torch.testing.assert_close(x, xs, rtol=0, atol=0)
        assert y.tolist() == ys.tolist()


def test_train_transform_paper_and_imagenet():
    from PIL import Image

    img = Image.new("RGB", (60, 45), (10, 200, 30))
    for recipe in ("paper", "imagenet"):
        out = train_transform(preprocessing("yynet_small_16", recipe, image_size=24))(img)
        assert out.shape == (3, 24, 24) and out.dtype == torch.float32


def test_archive_is_refused_with_one_line(tmp_path):
    from yyfast.train.data import DatasetError

    (tmp_path / "x.tar.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match="needs an image-folder tree"):
        StreamData(str(tmp_path / "x.tar.gz"), preprocessing("yynet_small_16"), World())


def test_auto_mode_streams_only_large_sets(tmp_path):
    from yyfast.train.stream import choose_data_mode, count_images

    root = make_jpeg_tree(tmp_path / "tree")
    assert count_images(str(root)) == 15
    assert choose_data_mode("auto", str(root), 32) == "cache"
    assert choose_data_mode("auto", str(root), 32, threshold=15 * 3 * 32 * 32 - 1) == "stream"
    assert choose_data_mode("auto", str(root), 32, subset=2, threshold=15 * 3 * 32 * 32 - 1) == "cache"
    assert choose_data_mode("stream", str(root), 32) == "stream"
    assert choose_data_mode("auto", str(tmp_path / "x.tar.gz"), 32) == "cache"
    from yyfast.train.data import DatasetError
    with pytest.raises(DatasetError, match="--data-mode 'fast' is not valid"):
        choose_data_mode("fast", str(root), 32)
