"""Compile every Triton kernel specialisation the model and the benchmarks launch, ahead of time,
for real GPUs (sm_80, sm_90), on a machine without one.

``python bench/triton_aot.py [--arch 80,90] [--subset all|representative|cover] [--json PATH]``

The specialisations are not a hand-kept list: the real launch code (``kernels/*.py``:
``forward``/``backward``) is run on fake CUDA tensors (``FakeTensorMode``, so ``x.is_cuda`` is
true and the GPU tile sizes and layouts are chosen) with ``JITFunction.__getitem__`` replaced by a
recorder that keeps ``kernel[grid](*args, **meta)`` instead of launching. Each launch is then
specialised exactly as Triton's own launcher does (its binder: pointer dtypes, 16-divisibility,
integers equal to 1 folded to constants, i32/i64 by value) for a ``GPUTarget("cuda", cc, 32)``
and compiled by ``triton.compile``. Pointers are taken as 16-byte aligned (every tensor the
launch code passes is a fresh allocation or a ``.contiguous()`` copy; PyTorch's CUDA allocator
aligns to 512 bytes).

What is driven: every span (C, H, W, stride) and fusion shape of every model preset (read off the
model by ``bench/kernels.py``'s ``model_shapes``), at the batch sizes the GPU benchmarks use
(``bench/throughput.py``: train 64/256, eval 1024; ``bench/kernels.py``: 64/256), float32,
float16 and bfloat16, train and eval, forward and backward, act gelu and silu (the SE gate runs in
torch, so it does not reach a kernel), NCHW and channels_last inputs.
"""
from __future__ import annotations

import os

# The kernels must be imported as compilable JITFunctions, not as the interpreter's functions.
if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "0"

import argparse
import contextlib
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from yyfast.activations import ACTIVATIONS as ACTS

sys.path.insert(0, str(Path(__file__).resolve().parent))

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LAYOUTS = (torch.contiguous_format, torch.channels_last)
#: GPU batch sizes of bench/throughput.py (train 64 and 256, eval 1024) and bench/kernels.py (64, 256).
TRAIN_BATCHES = (64, 256)
EVAL_BATCHES = (64, 256, 1024)
ARCHS = (80, 90)


class _Pointer:
    """What Triton's binder sees of a tensor argument: its dtype and an aligned address."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    @staticmethod
    def data_ptr() -> int:
        return 0


@dataclasses.dataclass
class Launch:
    """One recorded ``kernel[grid](*args, **meta)``: tensors replaced by their dtypes."""
    kernel: object                 # the JITFunction
    args: Tuple
    meta: Dict

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__


@contextlib.contextmanager
def recording():
    """Inside: every Triton launch is appended to the yielded list instead of running."""
    from triton.runtime.jit import JITFunction

    launches: List[Launch] = []
    from yyfast.kernels import dw_bn_act_se_kernels
    if not isinstance(dw_bn_act_se_kernels.dw_stats_kernel, JITFunction):
        raise RuntimeError("the Triton kernels were imported under TRITON_INTERPRET=1 (interpreter functions, "
                           "not compilable); run with TRITON_INTERPRET=0")

    def getitem(kernel, grid):
        def record(*args, **meta):
            args = tuple(_Pointer(a.dtype) if isinstance(a, torch.Tensor) else a for a in args)
            launches.append(Launch(kernel, args, dict(meta)))
        return record

    saved = JITFunction.__getitem__
    JITFunction.__getitem__ = getitem
    try:
        yield launches
    finally:
        JITFunction.__getitem__ = saved


def _span_launches(C, H, W, stride, batch, dtype, layout, training, act) -> None:
    """Run kernels/dw_bn_act_se.py's forward and backward (the launch code) on fake CUDA tensors."""
    from yyfast.kernels import dw_bn_act_se as k

    dev = "cuda"
    hidden = max(C // 4, 1)
    x = torch.empty((batch, C, H, W), dtype=dtype, device=dev).contiguous(memory_format=layout)
    p = lambda *shape: torch.empty(shape, dtype=dtype, device=dev)  # noqa: E731
    dw, g, b, rm, rv = p(C, 1, 3, 3), p(C), p(C), p(C), p(C)
    w1, b1, w2, b2 = p(hidden, C), p(hidden), p(C, hidden), p(C)
    y, mean, var, pooled = k.forward(x, dw, g, b, rm, rv, w1, b1, w2, b2, stride, 1e-5, training, act, "sigmoid")
    gy = torch.empty_like(y)
    k.backward(gy, x, dw, g, b, mean, var, pooled, w1, b1, w2, b2, stride, 1e-5, training, act, "sigmoid")


def _fuse_launches(C, H, W, batch, dtype, layout) -> None:
    from yyfast.kernels import yinyang_fuse as k

    a = torch.empty((batch, C, H, W), dtype=dtype, device="cuda").contiguous(memory_format=layout)
    i = torch.empty_like(a)
    k.forward(a, i, 1.0, 0.0, 0.0)
    k.backward(torch.empty_like(a), a, i, 1.0, 0.0, 0.0)


def model_shapes_all() -> Tuple[List[Tuple[int, int, int, int]], List[Tuple[int, int, int]]]:
    """Distinct span and fusion shapes over every model preset (bench/kernels.py's reading of them)."""
    import kernels as bench_kernels  # bench/kernels.py
    from yyfast.config import list_models

    spans, fuses = [], []
    for name in list_models():
        # On the meta device the models are built and run without memory or arithmetic: 5 s for
        # all presets instead of 21 s on the CPU (the ImageNet one at 224x224); only shapes are read.
        with torch.device("meta"):
            s, f = bench_kernels.model_shapes(name)
        spans += [x for x in s if x not in spans]
        fuses += [x for x in f if x not in fuses]
    return spans, fuses


def record_launches(spans=None, fuses=None, dtypes: Sequence = DTYPES, acts: Sequence[str] = ACTS,
                    layouts: Sequence = LAYOUTS, train_batches: Sequence[int] = TRAIN_BATCHES,
                    eval_batches: Sequence[int] = EVAL_BATCHES) -> List[Launch]:
    """Every launch the launch code makes for these shapes and settings (all presets by default)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if spans is None or fuses is None:
        all_spans, all_fuses = model_shapes_all()
        spans = all_spans if spans is None else spans
        fuses = all_fuses if fuses is None else fuses
    with recording() as launches, FakeTensorMode():
        for (C, H, W, stride), dtype, layout, act in itertools.product(spans, dtypes, layouts, acts):
            for training, batches in ((True, train_batches), (False, eval_batches)):
                for batch in batches:
                    _span_launches(C, H, W, stride, batch, dtype, layout, training, act)
        for (C, H, W), dtype, layout in itertools.product(fuses, dtypes, layouts):
            for batch in sorted(set(train_batches) | set(eval_batches)):
                _fuse_launches(C, H, W, batch, dtype, layout)
    return launches


@dataclasses.dataclass
class Specialisation:
    """A kernel with Triton's signature, constants and attributes for one target."""
    kernel: object
    signature: Dict[str, str]
    constexprs: Dict
    attrs: Dict
    options: Dict

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__

    def key(self) -> str:
        """Stable text identifying the compiled binary (target apart)."""
        const = {self.kernel.arg_names[p[0]]: v for p, v in self.constexprs.items()}
        attrs = {self.kernel.arg_names[p[0]]: v for p, v in self.attrs.items()}
        return json.dumps([self.name, self.signature, const, attrs, self.options], sort_keys=True, default=str)

    def short(self) -> str:
        """The kernel name with its constants and the pointer dtypes, for tables."""
        const = ",".join(f"{self.kernel.arg_names[p[0]]}={v}" for p, v in sorted(self.constexprs.items())
                         if self.kernel.arg_names[p[0]].isupper())
        dtypes = sorted({t[1:] for t in self.signature.values() if t.startswith("*")} - {"fp32"})
        return f"{self.name}[{const}{';' + '/'.join(dtypes) if dtypes else ''}]"


def _backend(arch: int):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    target = GPUTarget("cuda", arch, 32)
    return target, make_backend(target)


def specialise(launch: Launch, arch: int = 80) -> Specialisation:
    """Triton's own binding of the launch's arguments (``JITFunction.run`` up to the compile)."""
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    _, backend = _backend(arch)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    _, spec, options = binder(*launch.args, **launch.meta)
    signature = {name: s[0] for name, s in zip(kernel.arg_names, spec)}
    constexprs, attrs = {}, {}
    for i, (name, s) in enumerate(zip(kernel.arg_names, spec)):
        if s[0] == "constexpr":
            constexprs[(i,)] = launch.meta[name] if name in launch.meta else launch.args[i]
        elif isinstance(s[1], str):
            attrs[(i,)] = backend.parse_attr(s[1])
    return Specialisation(kernel, signature, constexprs, attrs, dict(options))


def distinct(launches: Iterable[Launch]) -> List[Specialisation]:
    """The distinct specialisations, in first-launch order."""
    seen: Dict[str, Specialisation] = {}
    for launch in launches:
        spec = specialise(launch)
        seen.setdefault(spec.key(), spec)
    return list(seen.values())


def representative(specs: Sequence[Specialisation]) -> List[Specialisation]:
    """One specialisation per (kernel, constants, argument types), ignoring divisibility attributes:
    every code path of every kernel, deterministic (the first one launched)."""
    seen: Dict[str, Specialisation] = {}
    for spec in specs:
        const = {spec.kernel.arg_names[p[0]]: v for p, v in spec.constexprs.items()}
        key = json.dumps([spec.name, spec.signature, const], sort_keys=True, default=str)
        seen.setdefault(key, spec)
    return list(seen.values())


def _features(spec: Specialisation) -> set:
    const = {spec.kernel.arg_names[p[0]]: v for p, v in spec.constexprs.items()}
    ptrs = tuple(sorted(t for t in spec.signature.values() if t.startswith("*")))
    feats = {("ptrs", ptrs)} | {(name, value) for name, value in const.items() if name.isupper()}
    return {(spec.name,) + f for f in feats}


def cover(specs: Sequence[Specialisation]) -> List[Specialisation]:
    """A small deterministic subset in which, per kernel, every pointer-dtype combination and every
    value of every constant (ACT, STRIDE, TRAINING, BLOCK_*) the launch code uses occurs at least
    once (greedy set cover, ties to the first launched): what the tests compile each run."""
    todo = set().union(*(_features(s) for s in specs)) if specs else set()
    chosen = []
    while todo:
        best = max(specs, key=lambda s: len(_features(s) & todo))
        chosen.append(best)
        todo -= _features(best)
    return chosen


def compile_spec(spec: Specialisation, arch: int):
    """``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))``: the compiled kernel
    (``.asm["cubin"]``, ``.metadata``, ``.n_regs``/``.n_spills`` on it)."""
    import triton
    from triton.compiler import ASTSource

    target, _ = _backend(arch)
    src = ASTSource(spec.kernel, spec.signature, spec.constexprs, spec.attrs)
    return triton.compile(src, target=target, options=spec.options)


def resources(compiled) -> Dict[str, int]:
    """Shared memory (bytes) and warps from the compiled kernel's metadata. Registers and spills
    (``n_regs``, ``n_spills``) Triton fills in only when a GPU loads the cubin; without one
    bench/resources.py reads them from the cubin with cuobjdump."""
    md = compiled.metadata
    return {"shared": int(getattr(md, "shared", 0)), "num_warps": int(getattr(md, "num_warps", 0))}


def parse_archs(text: str, prog: str) -> Optional[list]:
    """``--arch 80,90`` as ints; None after printing one error line (the caller exits 2)."""
    try:
        return [int(a) for a in text.split(",")]
    except ValueError:
        print(f"{prog}: error: --arch {text!r} is not valid; use e.g. 80,90", file=sys.stderr)
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="80,90", help="compute capabilities, comma-separated (default 80,90)")
    p.add_argument("--subset", choices=("all", "representative", "cover"), default="all",
                   help="all distinct specialisations (default); one per kernel, constants and argument "
                        "types; or the small cover the tests compile")
    p.add_argument("--quick", action="store_true",
                   help="drive one batch size per mode (64 train, 1024 eval): fewer divisibility variants, "
                        "the same kernels and constants (what the tests use with --subset cover)")
    p.add_argument("--json", help="write the list of compiled specialisations here")
    args = p.parse_args(argv)
    archs = parse_archs(args.arch, "triton_aot.py")
    if archs is None:
        return 2
    t0 = time.perf_counter()
    batches = dict(train_batches=(64,), eval_batches=(1024,)) if args.quick else {}
    launches = record_launches(**batches)
    specs = distinct(launches)
    if args.subset == "representative":
        specs = representative(specs)
    elif args.subset == "cover":
        specs = cover(specs)
    t_rec = time.perf_counter() - t0
    print(f"{len(launches)} launches recorded, {len(specs)} distinct specialisations ({t_rec:.1f} s)")
    rows = []
    for arch in archs:
        t1 = time.perf_counter()
        for spec in specs:
            ck = compile_spec(spec, arch)
            rows.append({"arch": arch, "name": spec.name, "kernel": spec.short(), "key": spec.key(),
                         "dtypes": sorted({t[1:] for t in spec.signature.values() if t.startswith("*")}),
                         "cubin_bytes": len(ck.asm["cubin"]), **resources(ck)})
        print(f"sm_{arch}: {len(specs)} compiled in {time.perf_counter() - t1:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
