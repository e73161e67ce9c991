"""Atomic checkpoint files and the random-number state they carry.

Every file is written to a temporary name in the same folder, flushed to disk, then moved over
the old one with ``os.replace`` (atomic on POSIX and Windows): a run killed at any moment, even
with ``kill -9`` in the middle of a write, leaves either the previous complete file or the new
one, never a torn file. The temporary file of a killed write is removed at the next start
(``remove_stale_temp_files``).

Checkpoints hold plain types only (tensors, dicts, lists, str, int, float, bool, None), so they
load with ``torch.load(path)`` and its default ``weights_only=True``: loading one never runs code
from the file. The random-number states are stored in that form too (``rng_state``).
"""
from __future__ import annotations

import io
import json
import os
import random
import re
import tempfile
import time
from typing import Any, Callable, Dict, List

import numpy as np
import torch

CHECKPOINT_NAME = "last.pt"
#: The weights with the best reported test accuracy (raw or EMA), beside ``last.pt``.
BEST_NAME = "best.pt"
#: ``--export`` writes into this folder of the run's ``--out``.
EXPORT_DIR = "export"


def _file_mode() -> int:
    """The mode ``open()`` would give a new file (mkstemp makes 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


#: Marks the temporary files of ``atomic_write``: ``.<name>.tmp-<random>`` beside the target.
TEMP_MARK = ".tmp-"


def atomic_write(path: str, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TEMP_MARK}", dir=folder)
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_temp_files(folder: str, min_age_s: float = 0.0) -> List[str]:
    """Delete the temporary files a killed ``atomic_write`` left in ``folder``; returns their paths.

    ``min_age_s``: only files not modified for that long (a folder other processes may be writing
    into, like the shared data cache, must not lose a temporary file that is still being written).
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not (name.startswith(".") and TEMP_MARK in name):
            continue
        path = os.path.join(folder, name)
        try:
            if os.path.isfile(path) and now - os.path.getmtime(path) >= min_age_s:
                os.remove(path)
                removed.append(path)
        except OSError:
            pass  # gone already, or not ours to remove: harmless
    return removed


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str, map_location="cpu", what: str = "yyfast checkpoint") -> Dict[str, Any]:
    """Read a checkpoint (a dict) with ``weights_only=True``: no code in the file can run.

    ``ValueError`` on anything else, ``FileNotFoundError`` if there is no file; ``what`` names the
    expected kind in the message."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        with torch.serialization.safe_globals(OLD_CHECKPOINT_GLOBALS):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for foreign, truncated or unsafe files
        raise ValueError(f"{path!r} is not a readable {what}: {one_line(exc)}") from exc
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path!r} is not a {what} (it holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def one_line(exc: BaseException, limit: int = 200) -> str:
    """What went wrong in ``exc``, on one line (torch's unpickling errors span a dozen lines of advice)."""
    text = str(exc)
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return (f"it refers to {refused.group(1)}, which a file of tensors and plain values never needs "
                "(refused without running it)")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:limit]}{'...' if len(first) > limit else ''}"


def _numpy_array_globals() -> list:
    """What a numpy ndarray pickles to: the constructor, the array and the dtype classes only.

    Checkpoints written before the plain-type format held ``np.random.get_state()`` (a uint32
    array); these names let ``weights_only`` read them without allowing anything callable beyond
    building an array. New checkpoints need none of them.
    """
    names = [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            mod = __import__(module, fromlist=["_reconstruct"])
            names.append(mod._reconstruct)
        except (ImportError, AttributeError):
            pass
    return names


OLD_CHECKPOINT_GLOBALS = _numpy_array_globals()


def rng_state() -> Dict[str, Any]:
    """Python, numpy, torch CPU and (when present) every CUDA device's generator state, as plain types."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "state": list(py_state), "gauss": gauss},
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    if isinstance(py, dict):
        random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    else:  # a checkpoint from before the plain-type format: the tuple itself
        random.setstate(py)
    if isinstance(npy, dict):
        np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                             npy["cached_gaussian"]))
    else:
        np.random.set_state(npy)
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda = state["torch_cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # another GPU count than when saved: restore what matches
            for i, s in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
