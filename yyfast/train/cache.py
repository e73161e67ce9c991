"""Decode a dataset once and keep the uint8 arrays in a ``.npz`` cache file.

The key is a hash of the source's content (``fingerprint.py``: names, sizes and SHA-256 of every
file the readers may read, not modification times), the splits, the subsets and the image size,
so a changed source, even one overwritten in place with its old mtime, or another subset gives
another file. Files are written atomically (temporary file, then
``os.replace``), so a run killed while caching leaves no half-written cache behind.

Default location: ``$YYFAST_CACHE_DIR``, else ``$XDG_CACHE_HOME/yyfast``, else
``~/.cache/yyfast`` (one decoded CIFAR-10 is 184 MB, too much to copy beside every run).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Iterable, Optional

import numpy as np

from .checkpoint import atomic_write, remove_stale_temp_files
from .data import Dataset, Split, read_dataset
from .fingerprint import fingerprint

#: Bump when the decoded content for the same key would change (resize rule, subset rule, ...).
CACHE_FORMAT = 2
#: A temporary cache file untouched this long belongs to a killed writer (writing one takes seconds).
STALE_TEMP_S = 3600.0


def default_cache_dir() -> str:
    if os.environ.get("YYFAST_CACHE_DIR"):
        return os.environ["YYFAST_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "yyfast")


def cache_key(path: str, splits: Iterable[str], subsets: Dict[str, Optional[int]], image_size: int,
              source_fingerprint: Optional[Dict] = None) -> str:
    """``source_fingerprint``: ``fingerprint(path)`` if already computed (it reads every file)."""
    fp = source_fingerprint or fingerprint(path)
    desc = {"format": CACHE_FORMAT, "source": fp, "splits": sorted(splits),
            "subsets": {k: subsets.get(k) for k in sorted(splits)}, "image_size": image_size}
    return hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:20]


def cache_path(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, f"yyfast-data-{key}.npz")


def save(path: str, dataset: Dataset) -> None:
    arrays = {"classes": np.array(dataset.classes), "source": np.array(dataset.source),
              "layout": np.array(dataset.layout)}
    for name, split in dataset.splits.items():
        arrays[f"{name}_images"] = split.images
        arrays[f"{name}_labels"] = split.labels
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))  # uncompressed: loading is a plain read


def load(path: str, splits: Iterable[str]) -> Dataset:
    with np.load(path, allow_pickle=False) as z:
        out = {s: Split(z[f"{s}_images"], z[f"{s}_labels"]) for s in splits}
        return Dataset(out, [str(c) for c in z["classes"]], str(z["source"]), str(z["layout"]))


def load_dataset(path: str, splits: Iterable[str] = ("train", "test"), subsets: Optional[Dict[str, int]] = None,
                 image_size: int = 32, cache_dir: Optional[str] = None, use_cache: bool = True,
                 progress=None, log=print) -> Dataset:
    """``read_dataset`` through the cache: decode on a miss (with progress), load on a hit.

    The result's ``fingerprint`` is the source's content fingerprint (also with ``use_cache=False``),
    which the trainer stores in its checkpoint and ``--resume`` compares. An unreadable cache file
    (truncated, another format) is decoded again and replaced; a cache
    folder that cannot be written only costs the caching, with a note through ``log``.
    """
    splits = tuple(splits)
    subsets = dict(subsets or {})
    source_fp = fingerprint(path)  # a clear DatasetError first if the path is not a dataset
    if not use_cache:
        dataset = read_dataset(path, splits, subsets, image_size, progress)
        dataset.fingerprint = source_fp
        return dataset
    folder = cache_dir or default_cache_dir()
    remove_stale_temp_files(folder, min_age_s=STALE_TEMP_S)
    file = cache_path(folder, cache_key(path, splits, subsets, image_size, source_fp))
    if os.path.isfile(file):
        try:
            dataset = load(file, splits)
            dataset.fingerprint = source_fp
            return dataset
        except Exception as exc:  # a damaged cache is rebuilt, never trusted
            log(f"data cache {file} is unreadable ({type(exc).__name__}: {exc}); decoding again")
    dataset = read_dataset(path, splits, subsets, image_size, progress)
    dataset.fingerprint = source_fp
    try:
        save(file, dataset)
        log(f"data cache written: {file}")
    except OSError as exc:
        log(f"could not write the data cache {file} ({exc}); continuing without it")
    return dataset
