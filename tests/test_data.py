"""Dataset layouts (image folder, its tar.gz, CIFAR-10 python batches), subsets, cache, errors."""
import io
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from yyfast.train.cache import cache_key, load_dataset
from yyfast.train.data import DatasetError, quotas, read_dataset

REPO = Path(__file__).resolve().parents[1]


def cifar_tar():
    path = os.environ.get("YYFAST_CIFAR10") or str(REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz")
    if not os.path.isfile(path):
        pytest.skip(f"CIFAR-10 tar.gz not found at {path} (set YYFAST_CIFAR10)")
    return path


def _png(rgb, size=(32, 32), fmt="PNG"):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format=fmt)
    return buf.getvalue()


def make_tree(root: Path, classes=("cat", "dog", "emu"), per_class=3, test_dir="test", size=(32, 32)):
    """train/<class>/NN.png of a flat colour encoding (class, index), so every image is known."""
    for split, n in (("train", per_class), (test_dir, 2)):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{i:02d}.png").write_bytes(_png((40 * k, 10 * i, 200), size))
    return root


def make_cifar_batches(root: Path, per_batch=20, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, num_classes, per_batch)]
        batches[name] = (data, labels)
        (d / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels, b"batch_label": name.encode()}))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{k}".encode() for k in range(num_classes)]}))
    return d, batches


def test_quotas_spread_the_subset_evenly():
    assert quotas([5, 5, 5], None) == [5, 5, 5]
    assert quotas([5, 5, 5], 7) == [3, 2, 2]
    assert quotas([1, 5, 5], 9) == [1, 3, 3]  # a small class gives what it has


def test_image_folder_tree_is_read_sorted_with_labels(tmp_path):
    root = make_tree(tmp_path / "tree")
    ds = read_dataset(str(root))
    assert ds.classes == ["cat", "dog", "emu"] and ds.layout == "folder"
    train = ds.splits["train"]
    assert train.images.shape == (9, 3, 32, 32) and train.images.dtype == np.uint8
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Pixel (R, G, B) = (40*class, 10*index, 200): decoding and channel order are right.
    assert train.images[4, :, 0, 0].tolist() == [40, 10, 200]
    assert len(ds.splits["test"]) == 6


def test_subset_is_balanced_and_takes_the_first_names(tmp_path):
    root = make_tree(tmp_path / "tree", per_class=4)
    ds = read_dataset(str(root), subsets={"train": 5, "test": 3})
    train = ds.splits["train"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2]
    assert train.images[:, 1, 0, 0].tolist() == [0, 10, 0, 10, 0]  # green = 10 * file index
    assert ds.splits["test"].labels.tolist() == [0, 1, 2]


def test_val_folder_and_other_image_sizes_are_resized(tmp_path):
    root = make_tree(tmp_path / "imagenet_like", test_dir="val", size=(48, 40))
    ds = read_dataset(str(root), image_size=16)
    assert ds.splits["train"].images.shape == (9, 3, 16, 16)
    assert ds.splits["test"].images.shape == (6, 3, 16, 16)
    assert ds.splits["train"].images[3, :, 8, 8].tolist() == [40, 0, 200]  # flat colours survive resizing


@pytest.mark.parametrize("prefix", ["", "cifar10/"])
def test_tar_gz_reads_like_the_folder(tmp_path, prefix):
    root = make_tree(tmp_path / "tree", per_class=4)
    tar_path = tmp_path / "tree.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        for split in ("test", "train"):  # archive order must not matter
            tf.add(root / split, arcname=prefix + split)
    for subsets in ({}, {"train": 5, "test": 4}):
        a = read_dataset(str(root), subsets=subsets)
        b = read_dataset(str(tar_path), subsets=subsets)
        assert a.classes == b.classes and b.layout == "tar"
        for s in ("train", "test"):
            np.testing.assert_array_equal(a.splits[s].images, b.splits[s].images)
            np.testing.assert_array_equal(a.splits[s].labels, b.splits[s].labels)


def test_cifar_python_batches(tmp_path):
    folder, batches = make_cifar_batches(tmp_path / "c")
    for path in (folder, tmp_path / "c"):  # the batch folder itself or the folder holding it
        ds = read_dataset(str(path))
        assert ds.layout == "cifar_batches" and ds.classes == [f"c{k}" for k in range(10)]
        train = ds.splits["train"]
        assert train.images.shape == (100, 3, 32, 32)
        data, labels = batches["data_batch_2"]
        np.testing.assert_array_equal(train.images[20], data[0].reshape(3, 32, 32))  # rows are CHW planes
        assert train.labels[20:40].tolist() == labels
        np.testing.assert_array_equal(ds.splits["test"].images[0], batches["test_batch"][0][0].reshape(3, 32, 32))
    sub = read_dataset(str(folder), subsets={"train": 10})
    counts = np.bincount(sub.splits["train"].labels, minlength=10)
    all_labels = np.concatenate([np.asarray(batches[f"data_batch_{i}"][1]) for i in range(1, 6)])
    expected = [min(1, int((all_labels == k).sum())) for k in range(10)]
    assert counts.tolist() == expected
    # The official cifar-10-python.tar.gz layout is read straight from the archive too.
    tar_path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        tf.add(folder, arcname="cifar-10-batches-py")
    from_tar = read_dataset(str(tar_path))
    np.testing.assert_array_equal(from_tar.splits["train"].images, ds.splits["train"].images)


def test_real_cifar10_tar_subset_and_cache(tmp_path_factory):
    path = cifar_tar()
    cache = tmp_path_factory.getbasetemp() / "yyfast-data-cache"
    logs = []
    ds = load_dataset(path, subsets={"train": 30, "test": 20}, cache_dir=str(cache), log=logs.append)
    assert ds.classes == sorted(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                 "truck"])
    assert ds.splits["train"].images.shape == (30, 3, 32, 32)
    assert np.bincount(ds.splits["train"].labels).tolist() == [3] * 10
    assert np.bincount(ds.splits["test"].labels).tolist() == [2] * 10
    # The first training image is the smallest name of the first class, decoded as PIL does.
    from PIL import Image

    # Names are 4-digit and start at 0000; stream only until that member (no full second pass).
    with tarfile.open(path, "r:gz") as tf:
        member = next(m for m in tf if m.name == "train/airplane/0000.jpg")
        want = np.asarray(Image.open(io.BytesIO(tf.extractfile(member).read())).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(ds.splits["train"].images[0], want)
    # Second load: from the cache, identical, nothing decoded.
    logs.clear()
    again = load_dataset(path, subsets={"train": 30, "test": 20}, cache_dir=str(cache), log=logs.append,
                         progress=lambda *a, **k: pytest.fail("decoded although cached"))
    np.testing.assert_array_equal(again.splits["train"].images, ds.splits["train"].images)
    assert logs == []


def test_cache_key_follows_source_and_subset(tmp_path):
    root = make_tree(tmp_path / "tree")
    k1 = cache_key(str(root), ("train", "test"), {"train": 3}, 32)
    assert k1 == cache_key(str(root), ("train", "test"), {"train": 3}, 32)
    assert k1 != cache_key(str(root), ("train", "test"), {"train": 4}, 32)
    assert k1 != cache_key(str(root), ("train", "test"), {"train": 3}, 16)
    (root / "train" / "cat" / "99.png").write_bytes(_png((1, 2, 3)))
    os.utime(root / "train" / "cat", ns=(1, 1))  # a new file changes its folder's mtime
    assert k1 != cache_key(str(root), ("train", "test"), {"train": 3}, 32)


def test_damaged_cache_is_rebuilt(tmp_path):
    root = make_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    load_dataset(str(root), cache_dir=str(cache), log=lambda *a: None)
    (npz,) = cache.glob("*.npz")
    npz.write_bytes(b"not a zip")
    logs = []
    ds = load_dataset(str(root), cache_dir=str(cache), log=logs.append)
    assert len(ds.splits["train"]) == 9 and any("unreadable" in m for m in logs)


def _bad(tmp_path, what):
    if what == "missing":
        return tmp_path / "nope", "no such file or directory"
    if what == "empty":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", "expected train/<class>/*.jpg"
    if what == "no_test":
        (tmp_path / "t" / "train" / "a").mkdir(parents=True)
        (tmp_path / "t" / "train" / "a" / "0.png").write_bytes(_png((0, 0, 0)))
        return tmp_path / "t", "expected test/<class>/*.jpg"
    if what == "no_images":
        root = make_tree(tmp_path / "t")
        for f in (root / "train" / "dog").iterdir():
            f.unlink()
        return root, "hold no image files"
    if what == "corrupt_image":
        root = make_tree(tmp_path / "t")
        (root / "train" / "cat" / "00.png").write_bytes(b"garbage")
        return root, "cannot decode image"
    if what == "not_archive":
        (tmp_path / "x.txt").write_text("hello")
        return tmp_path / "x.txt", "not a .tar.gz"
    if what == "tar_without_images":
        p = tmp_path / "x.tar.gz"
        with tarfile.open(p, "w:gz") as tf:
            info = tarfile.TarInfo("readme.txt")
            info.size = 2
            tf.addfile(info, io.BytesIO(b"hi"))
        return p, "expected train/<class>/*.jpg inside the archive"
    if what == "truncated_tar":
        root = make_tree(tmp_path / "t")
        p = tmp_path / "x.tar.gz"
        with tarfile.open(p, "w:gz") as tf:
            tf.add(root / "train", arcname="train")
        p.write_bytes(p.read_bytes()[:200])
        return p, "truncated or corrupt"
    if what == "bad_cifar_batch":
        d = tmp_path / "cifar-10-batches-py"
        d.mkdir()
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (d / name).write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
        return d, "N x 3072"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["missing", "empty", "no_test", "no_images", "corrupt_image", "not_archive",
                                  "tar_without_images", "truncated_tar", "bad_cifar_batch"])
def test_bad_datasets_say_what_was_expected(tmp_path, what):
    path, message = _bad(tmp_path, what)
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_dataset(str(path))


def test_bad_arguments_name_themselves(tmp_path):
    root = make_tree(tmp_path / "tree")
    with pytest.raises(ValueError, match="subset_train"):
        read_dataset(str(root), subsets={"train": 0})
    with pytest.raises(ValueError, match="image_size"):
        read_dataset(str(root), image_size=2)
    with pytest.raises(ValueError, match="splits"):
        read_dataset(str(root), splits=("valid",))


def test_cifar_batches_are_unpickled_with_numpy_arrays_only():
    """The official batches were pickled by numpy 1.x (``numpy.core.multiarray``); they still read, and a
    batch naming any other global is refused before it is called."""
    from yyfast.train.data import _unpickle

    blob = pickle.dumps({b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"labels": [0, 1]}, protocol=2)
    numpy1 = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert numpy1 != blob
    d = _unpickle(numpy1, "data_batch_1")
    assert d[b"data"].tolist() == [[0, 1, 2], [3, 4, 5]] and d[b"labels"] == [0, 1]
    with pytest.raises(DatasetError, match=r"data_batch_1 is not a CIFAR-10 python batch.*os\.system"):
        _unpickle(b"cos\nsystem\n(S'true'\ntR.", "data_batch_1")
