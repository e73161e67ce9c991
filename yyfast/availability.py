"""Which kernel backends exist on this machine: ``yyfast.backends()`` and the ``auto`` choice.

``built`` means the backend's code is compiled or importable; ``available`` that it can run on
at least one device here now; ``devices`` lists those devices; ``reason`` is a sentence whenever
something is missing. Nothing here decides by what the *build* machine had: the CUDA extension is
compiled whenever torch is a CUDA build and nvcc is found, and checked for GPUs only at run time.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Dict, List

import torch


def _gpu_present() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def _import_error(module: str):
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # an ImportError, or an undefined symbol in a stale .so
        return None, f"{type(exc).__name__}: {exc}"


def _reference() -> Dict:
    return {"available": True, "built": True, "devices": ["cpu"] + (["cuda"] if _gpu_present() else []),
            "reason": None}


def _triton() -> Dict:
    triton, err = _import_error("triton")
    if triton is None:
        return {"available": False, "built": False, "devices": [], "reason": f"Triton is not installed ({err})."}
    ops, err = _import_error("yyfast.ops.triton_ops")
    if ops is None:
        return {"available": False, "built": False, "devices": [],
                "reason": f"the yyfast Triton ops failed to import ({err})."}
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    devices = ["cpu"] if interpret else (["cuda"] if _gpu_present() else [])
    reason = None
    if interpret:
        reason = "TRITON_INTERPRET=1: the kernels run on CPU tensors in Triton's interpreter (slow; for tests)."
    elif not devices:
        reason = "no GPU is visible (set TRITON_INTERPRET=1 to run the kernels on the CPU in Triton's interpreter)."
    return {"available": bool(devices), "built": True, "devices": devices, "reason": reason,
            "version": getattr(triton, "__version__", None)}


def _cuda() -> Dict:
    ext, err = _import_error("yyfast._C")
    if ext is None:
        return {"available": False, "built": False, "devices": [],
                "reason": "the extension yyfast._C is not built or failed to load "
                          f"({err}); reinstall with `pip install -e . --no-build-isolation`."}
    ops, err = _import_error("yyfast.ops.cuda_ops")
    if ops is None:
        return {"available": False, "built": True, "devices": [],
                "reason": f"yyfast._C loaded but its Python registrations failed ({err})."}
    cuda_built = bool(ext.cuda_built())
    devices = ["cpu"] + (["cuda"] if cuda_built and _gpu_present() else [])
    if not cuda_built:
        reason = "yyfast._C was built without CUDA kernels (CPU-only torch or no nvcc); its C++ CPU kernels run."
    elif not _gpu_present():
        reason = "yyfast._C has CUDA kernels, but no GPU is visible; its C++ CPU kernels run on CPU tensors."
    else:
        reason = None
    return {"available": True, "built": True, "devices": devices, "reason": reason, "cuda_kernels": cuda_built,
            "cpu_isa": ext.cpu_isa()}


@functools.lru_cache(maxsize=None)
def _cached(interpret: str) -> Dict[str, Dict]:
    return {"reference": _reference(), "triton": _triton(), "cuda": _cuda()}


def backends() -> Dict[str, Dict]:
    """``{"reference"|"triton"|"cuda": {"available", "built", "devices", "reason", ...}}``."""
    report = _cached(os.environ.get("TRITON_INTERPRET", "0"))
    return {name: dict(info, devices=list(info["devices"])) for name, info in report.items()}


#: What ``backend="auto"`` picks, per device type and mode, in order of preference. It follows the
#: committed benchmark results (bench/results/, the README's results section):
#: * GPU: the CUDA ops, then Triton (no GPU measurement is committed yet; revisit with the first one).
#: * CPU eval: the C++ ops (vectorised span kernels, plus the eval BatchNorm folding and oneDNN
#:   post-ops every fused backend does): 2.04x the eager reference for yynet_small_64 at batch 256
#:   (cpu-2core-2026-11-27-throughput.json), and 1.50x with glibc told to keep freed memory
#:   (cpu-2core-2026-11-27-throughput-malloc-retain.json).
#: * CPU training: the C++ ops, 1.15x eager for the batch-64 training step in the same run (1.13x with
#:   freed memory kept; 1.00-1.37x in earlier runs): never slower.
AUTO_PREFERENCE = {
    ("cuda", True): ("cuda", "triton", "reference"),
    ("cuda", False): ("cuda", "triton", "reference"),
    ("cpu", True): ("cuda", "reference"),
    ("cpu", False): ("cuda", "reference"),
}


def resolve_device(name: str) -> torch.device:
    """A ``--device`` value: ``auto`` is the GPU when one is visible, else the CPU; ``cuda`` (or
    ``cuda:N``) without a visible GPU is a ``ValueError``."""
    if name == "auto":
        return torch.device("cuda" if _gpu_present() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r} is not valid ({exc}); use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not _gpu_present():
        raise ValueError(f"--device {name!r}: no CUDA GPU is visible; use --device cpu (or auto)")
    return device


def auto_candidates(device: torch.device, training: bool) -> List[str]:
    """The available backends for tensors on ``device``, in ``auto``'s order, ending with the
    reference: where ``auto`` falls back to when one fails its self-check (``yyfast.self_check``)."""
    report = backends()
    names = [name for name in AUTO_PREFERENCE.get((device.type, bool(training)), ())
             if name != "reference" and device.type in report[name]["devices"]]
    return names + ["reference"]


def auto_backend(device: torch.device, training: bool) -> str:
    """The preferred available backend for tensors on ``device`` in training or eval mode."""
    return auto_candidates(device, training)[0]
