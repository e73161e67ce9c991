"""Read an image-classification dataset into uint8 arrays, once.

Three layouts are understood (``--data PATH``):

* an image-folder tree: ``PATH/train/<class>/*.jpg`` and ``PATH/test/<class>/*.jpg``
  (``val/`` instead of ``test/`` for an ImageNet-like tree; any PIL-readable image);
* the ``.tar.gz`` (``.tgz``/``.tar``) of such a tree, read member by member with ``tarfile``
  (nothing is extracted to disk; a leading folder inside the archive is allowed);
* the CIFAR-10 python batches: a ``cifar-10-batches-py`` folder (pickled dicts with ``b"data"``
  and ``b"labels"``), the folder that holds it, or the official ``cifar-10-python.tar.gz``.

A subset (``subset=N``) is the first N images of a split, balanced over the classes: class k
(in sorted class order) gets ``N // K`` images plus one for the first ``N % K`` classes, and the
"first" images of a class are those with the smallest file names (the order of the batches for
the CIFAR python format), so a folder tree and its tarball give the same subset.

Images whose size is not ``image_size`` x ``image_size`` are resized to it (bilinear, a stretch:
the paper recipe's evaluation geometry, ``yyfast.preprocess``, as the authors' ImageNet script).
"""
from __future__ import annotations

import heapq
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
#: The evaluation split's folder name, in order of preference ("val" for ImageNet-like trees).
EVAL_SPLIT_NAMES = ("test", "val")
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
CIFAR_BATCH_DIR = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"


class DatasetError(ValueError):
    """A missing or malformed dataset; the message says what was expected where."""


@dataclass
class Split:
    """One split in memory: ``images`` (N, 3, S, S) uint8, ``labels`` (N,) int64 class indices."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    """The decoded splits (``"train"``, ``"test"``) and the class names; labels index ``classes``."""

    splits: Dict[str, Split]
    classes: List[str]
    source: str
    layout: str
    fingerprint: Optional[Dict[str, object]] = None  # the source's content (``fingerprint.py``), when known


def detect_layout(path: str) -> str:
    """``"folder"``, ``"tar"`` or ``"cifar_batches"``; raises ``DatasetError`` saying what was expected."""
    if not os.path.exists(path):
        raise DatasetError(f"--data {path!r}: no such file or directory. Expected an image-folder tree "
                           "(train/<class>/*.jpg, test/<class>/*.jpg), its .tar.gz, or a cifar-10-batches-py folder.")
    if os.path.isfile(path):
        if path.endswith(TAR_SUFFIXES):
            return "tar"
        raise DatasetError(f"--data {path!r} is a file but not a .tar.gz/.tgz/.tar archive; expected an archive of "
                           "train/<class>/*.jpg and test/<class>/*.jpg, or a folder.")
    if _cifar_batch_dir(path) is not None:
        return "cifar_batches"
    if os.path.isdir(os.path.join(path, "train")):
        return "folder"
    raise DatasetError(f"--data {path!r}: expected train/<class>/*.jpg and test/<class>/*.jpg (or val/<class>/*) under "
                       f"{path}, or CIFAR-10 python batches ({CIFAR_BATCH_DIR}/data_batch_1..5, test_batch); "
                       f"found: {', '.join(sorted(os.listdir(path))[:10]) or 'an empty folder'}")


def _cifar_batch_dir(path: str) -> Optional[str]:
    for candidate in (path, os.path.join(path, CIFAR_BATCH_DIR)):
        if os.path.isfile(os.path.join(candidate, "data_batch_1")) or os.path.isfile(
                os.path.join(candidate, CIFAR_TEST_BATCH)):
            return candidate
    return None


def quotas(num_items_per_class: Sequence[int], subset: Optional[int]) -> List[int]:
    """Images to take per class: all of them, or ``subset`` spread evenly (first classes get the remainder)."""
    if subset is None:
        return list(num_items_per_class)
    k = len(num_items_per_class)
    return [min(n, subset // k + (1 if c < subset % k else 0)) for c, n in enumerate(num_items_per_class)]


def _check_subset(name: str, subset: Optional[int]) -> None:
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ValueError(f"{name}={subset!r} is not valid; it must be a positive integer or None")


# --- decoding ---------------------------------------------------------------------------------
def decode_image(data: bytes, image_size: int, what: str) -> np.ndarray:
    """Encoded image bytes -> (3, S, S) uint8, resized and centre-cropped to ``image_size`` if needed."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            return _to_square(img, image_size)
    except Exception as exc:  # PIL raises several types for corrupt files
        raise DatasetError(f"cannot decode image {what}: {type(exc).__name__}: {exc}") from exc


def _to_square(img, size: int) -> np.ndarray:
    """The evaluation geometry of the paper recipe (``yyfast.preprocess``: a stretch to S x S, as the
    authors' ``Resize((224, 224))``), the one ``predict`` and ``evaluate`` use too."""
    from ..preprocess import eval_array, preprocessing

    return eval_array(img, preprocessing("", "paper", image_size=size))


def _decode_all(items: Sequence[Tuple[bytes, int, str]], image_size: int, desc: str, progress) -> Split:
    images = np.empty((len(items), 3, image_size, image_size), dtype=np.uint8)
    labels = np.empty((len(items),), dtype=np.int64)
    for n, (data, label, what) in enumerate(progress(items, desc=desc, unit="img")):
        images[n] = decode_image(data, image_size, what)
        labels[n] = label
    return Split(images, labels)


def _no_progress(iterable, **_):
    return iterable


# --- image-folder tree ------------------------------------------------------------------------
def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def _folder_split(root: str, split: str) -> Dict[str, List[str]]:
    split_dir = os.path.join(root, split)
    classes = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
    if not classes:
        raise DatasetError(f"--data {root!r}: expected {split}/<class>/*.jpg under {root}, but {split_dir} has no "
                           "class folders")
    files = {c: sorted(f for f in os.listdir(os.path.join(split_dir, c)) if _is_image(f)) for c in classes}
    empty = [c for c, f in files.items() if not f]
    if empty:
        raise DatasetError(f"--data {root!r}: expected {split}/<class>/*.jpg under {root}, but class folder(s) "
                           f"{', '.join(empty[:5])} in {split_dir} hold no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def eval_split_name(root: str) -> str:
    """The evaluation split's folder under ``root``: ``test/``, else ``val/`` (``EVAL_SPLIT_NAMES``)."""
    for name in EVAL_SPLIT_NAMES:
        if os.path.isdir(os.path.join(root, name)):
            return name
    raise DatasetError(f"--data {root!r}: expected test/<class>/*.jpg (or val/<class>/*) under {root}; "
                       "there is no test/ or val/ folder")


def _read_folder(root: str, splits: Sequence[str], subsets: Dict[str, Optional[int]], image_size: int,
                 progress) -> Dataset:
    names = {"train": "train", "test": eval_split_name(root) if "test" in splits else "test"}
    if "train" in splits and not os.path.isdir(os.path.join(root, "train")):
        raise DatasetError(f"--data {root!r}: expected train/<class>/*.jpg under {root}; there is no train/ folder")
    listing = {s: _folder_split(root, names[s]) for s in splits}
    classes = _class_names(listing)
    def read(s, c, f):
        path = os.path.join(root, names[s], c, f)
        with open(path, "rb") as fh:
            return fh.read(), path

    return Dataset(_decode_splits(listing, classes, splits, subsets, image_size, progress, read), classes, root,
                   "folder")


def _decode_splits(listing: Dict[str, Dict[str, list]], classes: Sequence[str], splits: Sequence[str],
                   subsets: Dict[str, Optional[int]], image_size: int, progress, read) -> Dict[str, Split]:
    """Per split, the first ``quotas`` entries of each class (the --subset-* spread evenly), read with
    ``read(split, class, entry) -> (encoded bytes, description)`` and decoded."""
    out = {}
    for s in splits:
        counts = [len(listing[s].get(c, [])) for c in classes]
        items = []
        for k, (c, q) in enumerate(zip(classes, quotas(counts, subsets.get(s)))):
            for entry in listing[s].get(c, [])[:q]:
                data, desc = read(s, c, entry)
                items.append((data, k, desc))
        out[s] = _decode_all(items, image_size, f"decoding {s}", progress)
    return out


def _class_names(listing: Dict[str, Dict[str, list]]) -> List[str]:
    """Classes come from train when it is read; the evaluation split must not add new ones."""
    if "train" in listing:
        classes = sorted(listing["train"])
        extra = sorted(set(listing.get("test", {})) - set(classes))
        if extra:
            raise DatasetError(f"the test split has classes that train lacks: {', '.join(extra[:5])}")
        return classes
    return sorted(next(iter(listing.values())))


# --- tar archive of an image-folder tree ------------------------------------------------------
def _split_of_member(name: str) -> Optional[Tuple[str, str]]:
    """``(.../)train/<class>/<file>`` -> ("train", class); the eval split is called "test"."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if len(parts) < 3 or not _is_image(parts[-1]):
        return None
    split, cls = parts[-3], parts[-2]
    if split == "train":
        return "train", cls
    if split in EVAL_SPLIT_NAMES:
        return "test", cls
    return None


def _read_tar(path: str, splits: Sequence[str], subsets: Dict[str, Optional[int]], image_size: int,
              progress) -> Dataset:
    """One streaming pass over the archive.

    Per (split, class) only the ``quota`` smallest file names seen so far are kept (a bounded
    max-heap), so memory stays proportional to the subset while the selection is exactly "the
    first names in sorted order" - the same images a folder tree gives. Quotas need the number
    of classes, which is known only at the end, so with a subset every class keeps up to
    ``subset`` names and the final quotas are applied after the pass.
    """
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"--data {path!r}: cannot read it as a tar archive: it is truncated or corrupt "
                           f"({exc})") from exc
    kept: Dict[str, Dict[str, list]] = {s: {} for s in splits}
    cifar_members: Dict[str, bytes] = {}
    with tf:
        try:
            members = progress(tf, desc=f"reading {os.path.basename(path)}", unit="file")
            for member in members:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                if base in CIFAR_TRAIN_BATCHES + (CIFAR_TEST_BATCH, "batches.meta"):
                    cifar_members[base] = tf.extractfile(member).read()
                    continue
                where = _split_of_member(member.name)
                if where is None or where[0] not in kept:
                    continue
                split, cls = where
                limit = subsets.get(split)
                heap = kept[split].setdefault(cls, [])
                entry = (_Desc(base), member.name)
                if limit is not None and len(heap) >= limit:
                    if not entry[0] > heap[0][0]:  # not smaller than the largest kept name
                        continue
                    heapq.heapreplace(heap, entry + (tf.extractfile(member).read(),))
                else:
                    heapq.heappush(heap, entry + (tf.extractfile(member).read(),))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DatasetError(f"--data {path!r}: the archive is truncated or corrupt ({exc})") from exc
    if cifar_members and not any(kept[s] for s in splits):
        return _cifar_from_blobs(cifar_members, splits, subsets, image_size, path)
    for s in splits:
        if not kept[s]:
            folder = "train" if s == "train" else "test (or val)"
            raise DatasetError(f"--data {path!r}: expected {folder}/<class>/*.jpg inside the archive {path}; "
                               f"found no such image files")
    listing = {s: {c: sorted(kept[s][c], key=lambda e: e[0].name) for c in kept[s]} for s in splits}
    classes = _class_names(listing)
    return Dataset(_decode_splits(listing, classes, splits, subsets, image_size, progress,
                                  lambda s, c, entry: (entry[2], f"{entry[1]} in {path}")), classes, path, "tar")


class _Desc:
    """A file name ordered backwards, so ``heapq`` (a min-heap) keeps the largest name on top."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __lt__(self, other: "_Desc") -> bool:
        return self.name > other.name

    def __gt__(self, other: "_Desc") -> bool:
        return self.name < other.name

    def __eq__(self, other) -> bool:
        return isinstance(other, _Desc) and self.name == other.name


# --- CIFAR-10 python batches ------------------------------------------------------------------
#: What a CIFAR batch pickles to: dicts, lists, bytes, ints, and numpy arrays. A pickle naming any
#: other global is refused before anything is called, so a crafted "batch" cannot run code.
_CIFAR_PICKLE_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                         ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never holds; "
                                         "refusing to load it")
        if module == "numpy.core.multiarray":  # written by numpy 1.x; numpy 2 moved it (and warns on the old name)
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _unpickle(blob: bytes, what: str) -> dict:
    try:
        d = _CifarUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:
        raise DatasetError(f"{what} is not a CIFAR-10 python batch (pickle failed: {exc})") from exc
    if not isinstance(d, dict):
        raise DatasetError(f"{what} is not a CIFAR-10 python batch (expected a pickled dict)")
    return d


def _cifar_arrays(blob: bytes, what: str) -> Tuple[np.ndarray, np.ndarray]:
    d = _unpickle(blob, what)
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels", d.get(b"fine_labels")))
    if data is None or labels is None:
        raise DatasetError(f"{what}: expected a pickled dict with b'data' (N x 3072 uint8) and b'labels'; "
                           f"found keys {sorted(map(str, d))[:6]}")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(labels):
        raise DatasetError(f"{what}: b'data' must be N x 3072 uint8 with N = len(b'labels') = {len(labels)}, "
                           f"got shape {data.shape}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _cifar_from_blobs(blobs: Dict[str, bytes], splits: Sequence[str], subsets: Dict[str, Optional[int]],
                      image_size: int, where: str) -> Dataset:
    wanted = {"train": CIFAR_TRAIN_BATCHES, "test": (CIFAR_TEST_BATCH,)}
    out = {}
    num_classes = 0
    raw = {}
    for s in splits:
        missing = [b for b in wanted[s] if b not in blobs]
        if missing:
            raise DatasetError(f"--data {where!r}: expected CIFAR-10 python batches {', '.join(wanted[s])} in "
                               f"{where}; missing {', '.join(missing)}")
        arrays = [_cifar_arrays(blobs[b], f"{b} in {where}") for b in wanted[s]]
        raw[s] = (np.concatenate([a for a, _ in arrays]), np.concatenate([lab for _, lab in arrays]))
        num_classes = max(num_classes, int(raw[s][1].max()) + 1)
    classes = [str(i) for i in range(num_classes)]
    if "batches.meta" in blobs:
        meta = _unpickle(blobs["batches.meta"], f"batches.meta in {where}")
        names = meta.get(b"label_names", meta.get("label_names"))
        if names and len(names) >= num_classes:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    for s in splits:
        images, labels = raw[s]
        counts = [int((labels == k).sum()) for k in range(len(classes))]
        take = []
        for k, q in enumerate(quotas(counts, subsets.get(s))):
            take.append(np.flatnonzero(labels == k)[:q])
        idx = np.sort(np.concatenate(take))
        images, labels = images[idx], labels[idx]
        if image_size != 32:
            from PIL import Image

            images = np.stack([_to_square(Image.fromarray(im.transpose(1, 2, 0)), image_size) for im in images])
        out[s] = Split(np.ascontiguousarray(images), labels)
    return Dataset(out, classes, where, "cifar_batches")


def _read_cifar_dir(path: str, splits: Sequence[str], subsets: Dict[str, Optional[int]],
                    image_size: int) -> Dataset:
    folder = _cifar_batch_dir(path)
    blobs = {}
    for name in CIFAR_TRAIN_BATCHES + (CIFAR_TEST_BATCH, "batches.meta"):
        file = os.path.join(folder, name)
        if os.path.isfile(file):
            with open(file, "rb") as fh:
                blobs[name] = fh.read()
    return _cifar_from_blobs(blobs, splits, subsets, image_size, folder)


# --- entry point ------------------------------------------------------------------------------
def read_dataset(path: str, splits: Iterable[str] = ("train", "test"), subsets: Optional[Dict[str, int]] = None,
                 image_size: int = 32, progress=None) -> Dataset:
    """Decode ``splits`` of the dataset at ``path`` (no caching; see ``yyfast.train.cache``).

    ``subsets``: ``{"train": N, "test": M}``, the first N (M) images balanced over classes;
    ``progress``: a tqdm-like callable (``progress(iterable, desc=..., unit=...)``) or None.
    """
    splits = tuple(splits)
    for s in splits:
        if s not in ("train", "test"):
            raise ValueError(f"splits={splits!r} is not valid; allowed values: 'train', 'test'")
    subsets = dict(subsets or {})
    for s, n in subsets.items():
        _check_subset(f"subset_{s}", n)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size={image_size!r} is not valid; it must be an integer >= 8")
    progress = progress or _no_progress
    path = os.path.abspath(os.path.expanduser(path))
    layout = detect_layout(path)
    if layout == "tar":
        return _read_tar(path, splits, subsets, image_size, progress)
    if layout == "cifar_batches":
        return _read_cifar_dir(path, splits, subsets, image_size)
    return _read_folder(path, splits, subsets, image_size, progress)
