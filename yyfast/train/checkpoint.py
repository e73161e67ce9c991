"""Atomic checkpoint files and the random-number state they carry.

Every file is written to a temporary name in the same folder, flushed to disk, then moved over
the old one with ``os.replace`` (atomic on POSIX and Windows): a run killed at any moment, even
with ``kill -9`` in the middle of a write, leaves either the previous complete file or the new
one, never a torn file.
"""
from __future__ import annotations

import io
import json
import os
import random
import tempfile
from typing import Any, Callable, Dict

import numpy as np
import torch

CHECKPOINT_NAME = "last.pt"


def _file_mode() -> int:
    """The mode ``open()`` would give a new file (mkstemp makes 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def atomic_write(path: str, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=folder)
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


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str, map_location="cpu") -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        # The checkpoint holds numpy RNG state and plain Python objects next to tensors; it is
        # a file this trainer wrote, so full unpickling is acceptable (never load foreign ones).
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise ValueError(f"checkpoint {path!r} is not a readable yyfast checkpoint ({type(exc).__name__}: {exc})") \
            from exc


def rng_state() -> Dict[str, Any]:
    """Python, numpy, torch CPU and (when present) every CUDA device's generator state."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda = state["torch_cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # another GPU count than when saved: restore what matches
            for i, s in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
