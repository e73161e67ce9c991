"""Registers, spills and shared memory per kernel: the Triton cubins (compiled ahead of time for
sm_80 and sm_90 by bench/triton_aot.py) and the nvcc-built CUDA kernels in ``yyfast/_C*.so``.

``python bench/resources.py [--arch 80,90] [--subset cover|representative|all] [--md PATH] [--json PATH]``

Defaults write ``bench/results/resources-sm80-sm90.md`` and ``.json``. Every number is read from
the cubin by ``cuobjdump --dump-resource-usage`` (the CUDA toolkit's, else the one Triton ships):
``REG`` registers/thread, ``STACK`` bytes of stack frame, ``LOCAL`` bytes of local memory per
thread (register spills land here: 0 means no spills), ``SHARED`` static shared memory per block
(Triton's dynamic shared memory, ``metadata.shared``, is added for its kernels). No GPU is needed.
"""
from __future__ import annotations

import os

# The Triton kernels must be imported as compilable JITFunctions, not as the interpreter's functions.
if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "0"

import argparse
import glob
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton_aot  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REG_LIMIT = 64  # registers/thread above which a kernel needs a reason (occupancy: 65,536 regs / SM)

_FUNC = re.compile(r"^\s*Function (\S+):\s*$")
_ARCH = re.compile(r"^arch = sm_(\d+)")
_FIELDS = re.compile(r"(REG|STACK|SHARED|LOCAL):(\d+)")


def cuobjdump() -> str:
    """The cuobjdump to use: $CUDA_HOME/bin, the PATH, else the one bundled with Triton."""
    candidates = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "cuobjdump"]
    found = shutil.which("cuobjdump")
    if found:
        candidates.append(Path(found))
    import triton
    candidates.append(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise RuntimeError("cuobjdump not found in $CUDA_HOME/bin, on PATH, or in Triton's backends/nvidia/bin")


def parse_resource_usage(text: str) -> List[Dict]:
    """``cuobjdump --dump-resource-usage`` output -> [{arch, function, reg, stack, shared, local}]."""
    rows, arch, func = [], None, None
    for line in text.splitlines():
        m = _ARCH.match(line.strip())
        if m:
            arch = int(m.group(1))
            continue
        m = _FUNC.match(line)
        if m:
            func = m.group(1)
            continue
        if func and "REG:" in line:
            vals = {k.lower(): int(v) for k, v in _FIELDS.findall(line)}
            rows.append({"arch": arch, "function": func, **vals})
            func = None
    return rows


def demangle(names: Sequence[str]) -> Dict[str, str]:
    """Mangled -> readable, through c++filt when present (else the names unchanged)."""
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def _short_cuda_name(readable: str) -> str:
    """``void yyfast::(anonymous namespace)::gx_kernel<c10::BFloat16, float>(...)`` -> ``gx_kernel<bf16>``."""
    name = readable.replace("(anonymous namespace)::", "").split("(")[0]
    name = name.replace("void ", "").replace("yyfast::", "")
    for long, short in (("c10::BFloat16", "bf16"), ("c10::Half", "fp16"), ("float", "fp32"), ("double", "fp64")):
        name = name.replace(long, short)
    return name.replace(", fp32>", ">").replace(" ", "")


def cuda_rows(so_path: Optional[str] = None) -> List[Dict]:
    """The nvcc-built kernels of yyfast._C, per architecture in the fat binary."""
    if so_path is None:
        found = sorted(glob.glob(str(ROOT / "yyfast" / "_C*.so")))
        if not found:
            raise RuntimeError("yyfast/_C*.so is not built; run `pip install -e . --no-build-isolation`")
        so_path = found[0]
    text = subprocess.run([cuobjdump(), "--dump-resource-usage", so_path], capture_output=True, text=True,
                          check=True).stdout
    rows = parse_resource_usage(text)
    names = demangle(sorted({r["function"] for r in rows}))
    for r in rows:
        r["kernel"] = _short_cuda_name(names[r["function"]])
        r["source"] = "cuda"
    return rows


def triton_rows(archs: Sequence[int], subset: str) -> List[Dict]:
    """Each chosen Triton specialisation compiled for each arch, its cubin measured."""
    specs = triton_aot.distinct(triton_aot.record_launches())
    specs = {"all": list, "representative": triton_aot.representative, "cover": triton_aot.cover}[subset](specs)
    rows, tool = [], cuobjdump()
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            for spec in specs:
                compiled = triton_aot.compile_spec(spec, arch)
                path = Path(tmp) / f"{spec.name}.cubin"
                path.write_bytes(compiled.asm["cubin"])
                text = subprocess.run([tool, "--dump-resource-usage", str(path)], capture_output=True, text=True,
                                      check=True).stdout
                (usage,) = parse_resource_usage(text)
                usage.update(arch=arch, kernel=spec.short(), source="triton",
                             shared=usage["shared"] + int(compiled.metadata.shared),
                             num_warps=int(compiled.metadata.num_warps))
                rows.append(usage)
    return rows


#: Why a kernel family needs more than REG_LIMIT registers/thread (read off the kernels' source; the
#: occupancy figures are for 65,536 registers and 64 warps per SM, allocation in 256-register units).
WHY_OVER_LIMIT = {
    "triton span kernels (dw_*_kernel)": (
        "a program owns BLOCK_P x BLOCK_C tile elements with 4 warps: on the GPU the launch code picks "
        "2,048-element tiles (32 x 64), 16 elements a thread. Every element keeps its float32 value or "
        "accumulator, its mask and, for each of the 3x3 taps, a 64-bit address (the kernels index in int64 "
        "so tensors over 2^31 elements work); with stride 2 (rows not contiguous) and fp16/bf16 (no 16-byte "
        "vector loads) the compiler keeps more of these addresses live: 185-254 registers, against 56-144 "
        "for the 1,024-element tiles (BLOCK_P=16). No spills, but at 254 registers an SM holds 8 warps of "
        "64 (12.5% occupancy), little for memory-bound kernels; worth measuring on a GPU against "
        "num_warps=8 or 1,024-element tiles (kernels/dw_bn_act_se.py `_pick_blocks`)."),
    "bn_finalize_kernel (TRAINING=True)": (
        "two [BLOCK_R=32, BLOCK_C=64] float32 accumulators (sums, then centred moments): 16 + 16 values a "
        "thread plus the loaded rows. One program per 64 channels, launched once a forward: irrelevant."),
    "CUDA gz_gw_kernel, bn_partial_kernel": (
        "a thread holds one channel's 9 depthwise weights, the 9 input taps of the current pixel "
        "(recomputed z) and, in gz_gw, 9 weight-gradient accumulators, plus 64-bit indices and the BN/SE "
        "constants: 68-72 registers (fp32/fp16/bf16), 110-114 for the float64 instantiations. At 72, blocks "
        "of 256 threads fit 3 per SM (24 warps, 37.5%) instead of 4 at 64 registers (50%)."),
    "CUDA float64 kernels (<fp64,fp64>)": (
        "every accumulator and weight is a double, two registers each; float64 runs only when asked for."),
}


def markdown(rows: List[Dict], head: Dict) -> str:
    lines = ["# Kernel resources, sm_80 and sm_90", "",
             f"Written by `{head['command']}` ({head['date']}, triton {head['triton']}, "
             f"{head['cuobjdump']}). Registers/thread (REG), stack and local bytes/thread "
             f"(LOCAL > 0 would be spills), shared memory bytes/block. "
             f"Triton: {head['triton_specialisations']} specialisations ({head['subset']}).", ""]
    over = [r for r in rows if r["reg"] > REG_LIMIT]
    spills = [r for r in rows if r.get("local", 0) or r.get("stack", 0)]
    lines += [f"Summary: {len(rows)} kernel binaries; {len(spills)} with stack/local memory (spills); "
              f"{len(over)} over {REG_LIMIT} registers/thread.", ""]
    for source in ("cuda", "triton"):
        sel = [r for r in rows if r["source"] == source]
        if not sel:
            continue
        lines += [f"## {'CUDA (yyfast._C, nvcc)' if source == 'cuda' else 'Triton (AOT)'}", "",
                  "| kernel | arch | REG | STACK | LOCAL | SHARED |" + (" warps |" if source == "triton" else ""),
                  "|---|---|---|---|---|---|" + ("---|" if source == "triton" else "")]
        for r in sorted(sel, key=lambda r: (r["kernel"], r["arch"])):
            cells = [r["kernel"], f"sm_{r['arch']}", r["reg"], r.get("stack", 0), r.get("local", 0), r["shared"]]
            if source == "triton":
                cells.append(r["num_warps"])
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    if over:
        lines += [f"## Why some kernels use more than {REG_LIMIT} registers/thread", ""]
        lines += [f"* **{name}**: {why}" for name, why in WHY_OVER_LIMIT.items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="80,90", help="compute capabilities for Triton, comma-separated")
    p.add_argument("--subset", choices=("cover", "representative", "all"), default="representative",
                   help="which Triton specialisations (bench/triton_aot.py); default representative")
    p.add_argument("--no-triton", action="store_true", help="only the CUDA kernels of yyfast._C")
    p.add_argument("--so", help="the extension to read (default yyfast/_C*.so)")
    p.add_argument("--md", default=str(RESULTS / "resources-sm80-sm90.md"))
    p.add_argument("--json", default=str(RESULTS / "resources-sm80-sm90.json"))
    args = p.parse_args(argv)
    archs = triton_aot.parse_archs(args.arch, "resources.py")
    if archs is None:
        return 2
    try:
        t0 = time.perf_counter()
        rows = cuda_rows(args.so)
        triton_rows_ = [] if args.no_triton else triton_rows(archs, args.subset)
    except RuntimeError as exc:
        print(f"resources.py: error: {exc}", file=sys.stderr)
        return 2
    import datetime

    import triton
    given = sys.argv[1:] if argv is None else list(argv)
    head = {"command": " ".join(["python bench/resources.py"] + given),
            "date": datetime.date.today().isoformat(), "triton": triton.__version__, "cuobjdump": cuobjdump(),
            "subset": args.subset, "triton_specialisations": len({r["kernel"] for r in triton_rows_}),
            "seconds": round(time.perf_counter() - t0, 1)}
    head["cuobjdump"] = "cuobjdump " + ("from Triton" if "triton" in head["cuobjdump"] else "from the CUDA toolkit")
    rows += triton_rows_
    Path(args.json).write_text(json.dumps({"header": head, "rows": rows}, indent=1) + "\n")
    Path(args.md).write_text(markdown(rows, head))
    print(markdown(rows, head).split("\n## ")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
