"""ONNX export of the BatchNorm-folded YYNet: ``yyfast.export_onnx(model, "yynet.onnx")``; ``python -m yyfast.export``.

What is exported is ``InferenceYYNet`` in its ``"plain"`` graph: the folded convolutions, GELU/SiLU,
the SE as ReduceMean/Gemm/Sigmoid/Mul, the fusion as Mul/Add: only standard ONNX operators, no
yyfast custom op, so any ONNX runtime can run it. The TorchScript-based exporter
(``dynamo=False``) is tried first because its graphs load in the widest range of runtimes; the
dynamo exporter (onnxscript) is the fallback where the former is missing or fails.

With ``check=True`` the file is validated with ``onnx.checker`` and run by onnxruntime on random
inputs (two batch sizes through the dynamic batch dimension), compared with PyTorch.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Dict, List, Optional

import torch
from torch import nn

INPUT_NAME, OUTPUT_NAME = "images", "logits"


def _rel_err(out, ref) -> float:
    out, ref = torch.as_tensor(out).double(), torch.as_tensor(ref).double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def plain_inference_model(model: nn.Module) -> nn.Module:
    """A float32 CPU ``InferenceYYNet`` in its plain-operator graph, from a YYNet or an inference model."""
    from .inference import CUDAGraphForward, InferenceYYNet, optimize_for_inference
    from .reference_model import ReferenceYYNet

    if isinstance(model, CUDAGraphForward):
        model = model.model
    if isinstance(model, ReferenceYYNet):
        # Folding reads the weights into float64 on the CPU; ``model`` itself is not moved or changed.
        folded = optimize_for_inference(model, dtype=torch.float32, channels_last=False, backend="reference")
    elif isinstance(model, InferenceYYNet):
        import copy

        folded = copy.deepcopy(model).to(device="cpu", dtype=torch.float32)
        folded.channels_last, folded.backend = False, "reference"
    else:
        raise ValueError(f"model must be a yyfast YYNet, ReferenceYYNet or InferenceYYNet, got {type(model).__name__}")
    folded.graph = "plain"
    return folded.to(device="cpu", dtype=torch.float32)


def _export_torchscript(model, x, path, opset, dynamic) -> None:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about the input-shape checks being constant
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)


def _export_dynamo(model, x, path, opset, dynamic) -> None:
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=65536)}} if dynamic else None
    program = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=shapes)
    program.save(path, external_data=False)


def check_onnx(path: str, model: nn.Module, input_shape, batches: List[int], tol: float = 1e-4) -> List[Dict[str, Any]]:
    """Run the file with onnxruntime on random inputs; compare with ``model``. Raises if off by ``tol``."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(path))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    results = []
    for n in batches:
        x = torch.randn(n, *input_shape[1:])
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        with torch.no_grad():
            ref = model(x)
        err = _rel_err(torch.from_numpy(out), ref)
        results.append({"batch": n, "rel_err": err})
        if not err < tol:
            raise RuntimeError(f"ONNX check failed: onnxruntime differs from PyTorch by a relative error of "
                               f"{err:.3e} (tolerance {tol:.0e}) at batch {n}; file {path!r}")
    return results


def _check_writable(path: str) -> bool:
    """A clear ``ValueError`` now if ``path`` cannot be written (the exporters bury the cause under dozens of
    lines); creates its folder. Returns whether an empty file was created at ``path`` by the check."""
    if os.path.isdir(path):
        raise ValueError(f"path={path!r} is a folder; pass the .onnx file to write")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        existed = os.path.exists(path)
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ValueError(f"path={path!r} cannot be written: {exc.strerror or exc}") from exc
    return not existed


def export_onnx(model: nn.Module, path: str, batch: Optional[int] = None, opset: int = 17, check: bool = True,
                image_size: Optional[int] = None, exporter: str = "auto") -> Dict[str, Any]:
    """Export the folded ``model`` to ONNX at ``path``; returns a report dict.

    ``batch=None`` makes the batch dimension dynamic; an int fixes it. ``image_size``: the input's
    H = W (default: the preset's input size, 32 for custom configs). ``exporter``: ``"auto"``
    (TorchScript, then dynamo), ``"torchscript"`` or ``"dynamo"``. With ``check`` the report lists
    onnxruntime's relative error against PyTorch (< 1e-4 or ``RuntimeError``).
    """
    from .config import INPUT_SIZES

    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch={batch!r} is not valid; it must be None (dynamic) or a positive integer")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        raise ValueError(f"opset={opset!r} is not valid; it must be an integer >= 13")
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ValueError(f"exporter={exporter!r} is not valid; allowed values: 'auto', 'torchscript', 'dynamo'")
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file path, got {type(path).__name__}")
    path = os.fspath(path)
    plain = plain_inference_model(model)
    cfg = plain.config
    size = image_size or INPUT_SIZES.get(cfg.name, (3, 32, 32))[1]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image_size={image_size!r} is not valid; it must be a positive integer")
    input_shape = (batch or 2, cfg.in_chans, size, size)
    x = torch.randn(*input_shape)
    created = _check_writable(path)
    errors, used = [], None
    order = {"auto": ("torchscript", "dynamo"), "torchscript": ("torchscript",), "dynamo": ("dynamo",)}[exporter]
    for name in order:
        try:
            (_export_torchscript if name == "torchscript" else _export_dynamo)(plain, x, path, opset, batch is None)
            used = name
            break
        except Exception as exc:  # a removed or failing exporter: try the next one
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    if used is None:
        if created:
            os.remove(path)  # the empty file _check_writable made
        raise RuntimeError("ONNX export failed with every exporter:\n" + "\n".join(errors))
    import onnx

    proto = onnx.load(path)
    graph = proto.graph
    # The dynamo exporter may keep a newer opset when it cannot convert down: report the file's.
    file_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    report: Dict[str, Any] = {
        "path": path, "exporter": used, "opset": file_opset, "requested_opset": opset, "dynamic_batch": batch is None,
        "input": INPUT_NAME, "output": OUTPUT_NAME, "input_shape": ["batch" if batch is None else batch,
                                                                   *input_shape[1:]],
        "ops": sorted({node.op_type for node in graph.node}),
        "custom_domains": sorted({node.domain for node in graph.node if node.domain not in ("", "ai.onnx")}),
        "size_bytes": os.path.getsize(path), "exporter_errors": errors,
    }
    if check:
        batches = [batch] if batch is not None else [1, 3]
        report["checks"] = check_onnx(path, plain, input_shape, batches)
        report["max_rel_err"] = max(c["rel_err"] for c in report["checks"])
    return report


def export_program(model: nn.Module, path: str, batch: Optional[int] = None,
                   image_size: Optional[int] = None) -> Dict[str, Any]:
    """``torch.export`` the folded plain-graph model and save it with ``torch.export.save`` (``.pt2``); the
    saved program is loaded back and compared with the model (relative error < 1e-5)."""
    from .config import INPUT_SIZES

    plain = plain_inference_model(model)
    size = image_size or INPUT_SIZES.get(plain.config.name, (3, 32, 32))[1]
    x = torch.randn(batch or 2, plain.config.in_chans, size, size)
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=65536)}} if batch is None else None
    program = torch.export.export(plain, (x,), dynamic_shapes=shapes)
    _check_writable(path)
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    checks = []
    for n in ([batch] if batch is not None else [1, 3]):
        xb = torch.randn(n, *x.shape[1:])
        with torch.no_grad():
            err = _rel_err(loaded(xb), plain(xb))
        checks.append({"batch": n, "rel_err": err})
        if not err < 1e-5:
            raise RuntimeError(f"torch.export check failed: the saved program differs by {err:.3e} at batch {n}")
    return {"path": path, "exporter": "torch.export", "dynamic_batch": batch is None,
            "input_shape": ["batch" if batch is None else batch, *x.shape[1:]], "size_bytes": os.path.getsize(path),
            "checks": checks, "max_rel_err": max(c["rel_err"] for c in checks)}


def load_any(source: str, ema: bool = False) -> nn.Module:
    """A YYNet from a yyfast.train checkpoint (or state_dict) file, a ``save_pretrained`` folder, or a preset
    name (random weights: for trying the export). ``ValueError`` says which of these ``source`` is not."""
    from .config import list_models
    from .model import YYNet, create_model

    if os.path.isdir(source):
        return YYNet.from_pretrained(source)
    if os.path.isfile(source):
        from .predict import load_model

        return load_model(source, ema=ema).model
    if source in list_models():
        return create_model(source)
    raise ValueError(f"SOURCE {source!r} is neither a checkpoint file, a save_pretrained folder nor a preset "
                     f"name ({', '.join(list_models())})")


EXAMPLES = """
  python -m yyfast.export runs/s16/best.pt yynet.onnx                  # dynamic batch, checked by onnxruntime
  python -m yyfast.export runs/s16/export yynet.pt2                    # a save_pretrained folder, torch.export
  python -m yyfast.export yynet_small_64 fixed.onnx --batch-size 8     # a preset with random weights
"""


def build_parser():
    from .cli_help import parser as make_parser
    from .train.cli import positive_int

    p = make_parser("export", "Export a YYNet (BatchNorm folded, standard operators only) to ONNX or torch.export.",
                    EXAMPLES)
    p.add_argument("source", help="a yyfast.train checkpoint (best.pt/last.pt), a save_pretrained folder, or a "
                                  "preset name (random weights)")
    p.add_argument("output", help="the file to write: .onnx or .pt2")
    p.add_argument("--format", choices=("onnx", "export"), default=None,
                   help="onnx or export (torch.export, .pt2); default: from the output's suffix")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch-size", type=positive_int, default=None, help="a fixed batch size")
    g.add_argument("--dynamic-batch", action="store_true", help="a dynamic batch dimension (what happens "
                                                                   "without --batch-size)")
    p.add_argument("--image-size", type=positive_int, default=None, help="H = W of the input (default: the "
                                                                           "model's input size)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 13)")
    p.add_argument("--ema", action="store_true", help="a training checkpoint's EMA weights")
    p.add_argument("--no-check", action="store_true", help="skip the numerical check of the written file")
    return p


def main(argv=None) -> int:
    import json

    args = build_parser().parse_args(argv)
    fmt = args.format or {".onnx": "onnx", ".pt2": "export"}.get(os.path.splitext(args.output)[1].lower())
    try:
        if fmt is None:
            raise ValueError(f"OUTPUT {args.output!r}: cannot tell the format from its suffix; name it .onnx or .pt2, "
                             "or pass --format onnx|export")
        model = load_any(args.source, ema=args.ema)
        if fmt == "onnx":
            report = export_onnx(model, args.output, batch=args.batch_size, opset=args.opset, check=not args.no_check,
                                 image_size=args.image_size)
        else:
            report = export_program(model, args.output, batch=args.batch_size, image_size=args.image_size)
    except (ValueError, ImportError) as exc:
        print(f"python -m yyfast.export: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # an exporter failure or a failed numerical check: not a usage error
        print(f"python -m yyfast.export: failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: report[k] for k in ("path", "exporter", "dynamic_batch", "input_shape", "size_bytes",
                                             "max_rel_err") if k in report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
