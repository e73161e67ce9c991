#!/usr/bin/env bash
# One command for the GPU machine: build, report, kernel resources, GPU tests, compute-sanitizer, both benchmarks
# and a short training run, all inside one time budget (default 450 s, GPU_CHECK_BUDGET_S; 8 minutes with packing).
#
#   bench/gpu_check.sh RESULTS_DIR
#
# Every step runs under `timeout` (its own limit, cut to what is left of the budget), failures do
# not stop the run, and each step's exit code and duration go into RESULTS_DIR/steps.json with a
# header (device from nvidia-smi, versions, commit). RESULTS_DIR gets at most 8 flat files (what
# the GPU machine hands back): steps.json, junit.xml, logs.tar.gz (every step's log and the training
# output) and <device-slug>-<date>-throughput.{json,md,png}, <device-slug>-<date>-kernels.{json,md},
# named as in bench/results/ so they can be copied there unchanged.
# Without a GPU it degrades: the GPU tests skip, the sanitizer steps are recorded as skipped.
#
# Environment: PYTHON (default python), GPU_CHECK_BUDGET_S, GPU_CHECK_PYTEST_K (the -k expression,
# default "cuda or gpu"), GPU_CHECK_THROUGHPUT_ARGS, GPU_CHECK_KERNELS_ARGS, YYFAST_CIFAR10 (the
# CIFAR-10 JPEG archive, default .carry/cifar10-jpeg.tar.gz), GPU_CHECK_SKIP_BUILD=1 (reuse the
# installed package).
set -u

if [ $# -ne 1 ]; then
    echo "usage: $0 RESULTS_DIR" >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd) || { echo "error: cannot create RESULTS_DIR $1" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
PY=${PYTHON:-python}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
LOGS=$(mktemp -d)
STEPS="$LOGS/steps.tsv"
: > "$STEPS"
START=$(date +%s)
RESERVE=15  # seconds kept for packing the results

remaining() { echo $(( BUDGET - ($(date +%s) - START) - RESERVE )); }
cap() { local left; left=$(remaining); [ "$1" -lt "$left" ] && echo "$1" || echo $(( left > 0 ? left : 0 )); }

# step NAME LIMIT_S CMD...: run CMD with its output in $LOGS/NAME.log, limited to LIMIT_S seconds
# or what is left of the budget, whichever is smaller; record name, rc, seconds, limit, note.
step() {
    local name=$1 limit=$2; shift 2
    local left; left=$(remaining)
    if [ "$left" -lt 10 ]; then
        printf '%s\t\t0\t0\tskipped: time budget spent\n' "$name" >> "$STEPS"
        echo "== $name: skipped (time budget spent)"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit}s): $*"
    local t0; t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    local dt=$(( $(date +%s) - t0 ))
    local note=""
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && note="timed out after ${limit}s"
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$dt" "$limit" "$note" >> "$STEPS"
    echo "   rc=$rc ${dt}s $note"
    tail -n 3 "$LOGS/$name.log" | sed 's/^/   | /'
}

skip() {  # skip NAME REASON
    printf '%s\t\t0\t0\tskipped: %s\n' "$1" "$2" >> "$STEPS"
    echo "== $1: skipped ($2)"
}

HAS_GPU=0
if command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi -L > /dev/null 2>&1; then HAS_GPU=1; fi

# 1. build (the GPU image has no registry: no build isolation, no dependencies)
if [ "${GPU_CHECK_SKIP_BUILD:-0}" = "1" ]; then
    skip build "GPU_CHECK_SKIP_BUILD=1"
else
    export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
    [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ] && export CUDA_HOME=/usr/local/cuda
    step build 200 "$PY" -m pip install -e . --no-build-isolation --no-deps
fi

# 2. what is built and usable
step info 30 "$PY" -m yyfast.info --json
cp "$LOGS/info.log" "$LOGS/info.json" 2>/dev/null

# 2b. registers, spills and shared memory of the CUDA kernels as built here (cuobjdump on yyfast/_C*.so;
#     the Triton kernels' table, compiled ahead of time, is bench/results/resources-sm80-sm90.md),
#     into logs.tar.gz
step resources 30 "$PY" bench/resources.py --no-triton --md "$LOGS/resources.md" --json "$LOGS/resources.json"

# 3. the GPU tests (parametrised with device "cuda"; they skip without a GPU, saying why)
step tests 120 "$PY" -m pytest -x -q -rs tests -k "${GPU_CHECK_PYTEST_K:-cuda or gpu}" \
    --junitxml="$OUT/junit.xml" -p no:cacheprovider

# 4. compute-sanitizer on both ops, forward and backward, train and eval, small awkward shapes
if ! command -v compute-sanitizer > /dev/null 2>&1; then
    skip memcheck "compute-sanitizer not found"
    skip racecheck "compute-sanitizer not found"
elif [ "$HAS_GPU" != "1" ]; then
    skip memcheck "no GPU visible"
    skip racecheck "no GPU visible"
else
    step memcheck 45 compute-sanitizer --tool memcheck --error-exitcode 3 --target-processes all \
        "$PY" bench/sanitize_ops.py --device cuda
    step racecheck 45 compute-sanitizer --tool racecheck --error-exitcode 3 --target-processes all \
        "$PY" bench/sanitize_ops.py --device cuda
fi

# Result files carry the names bench/results/ uses (<device-slug>-<date>-<kind>.*), so they can be
# copied there as they are.
STEM=$("$PY" -c "import sys; sys.path.insert(0, 'bench'); import common, torch
print(common.result_stem(common.pick_device('auto'), 'X').name[:-2])" 2>/dev/null) || STEM="unknown-$(date +%F)"
TP="$OUT/$STEM-throughput"; KN="$OUT/$STEM-kernels"

# 5. benchmarks; the GPU defaults are cut to the goal configurations (bf16; train 64, eval 1024) to fit
#    the budget. Uncompiled rows run first and no configuration starts after --deadline-s (the step's
#    limit less a margin for the one in flight); a timeout (SIGTERM) still writes what was measured.
#    Without a GPU the scripts' own (small) CPU defaults apply.
TP_ARGS=""
[ "$HAS_GPU" = "1" ] && TP_ARGS="--dtypes bf16 --train-batch 64 --eval-batch 1024"
LIM=$(cap 170)
# shellcheck disable=SC2086
step throughput "$LIM" "$PY" bench/throughput.py --no-progress --json "$TP.json" --md "$TP.md" --plot "$TP.png" \
    --deadline-s $(( LIM > 90 ? LIM - 60 : LIM / 3 )) ${GPU_CHECK_THROUGHPUT_ARGS:-$TP_ARGS}
LIM=$(cap 60)
# shellcheck disable=SC2086
step kernels "$LIM" "$PY" bench/kernels.py --no-progress --json "$KN.json" --md "$KN.md" \
    --deadline-s $(( LIM * 2 / 3 )) ${GPU_CHECK_KERNELS_ARGS:-}

# 6. a short training run on a CIFAR-10 subset
CIFAR=${YYFAST_CIFAR10:-.carry/cifar10-jpeg.tar.gz}
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('yyfast.train') is None)" \
        > /dev/null 2>&1; then
    skip train "yyfast.train does not exist yet"
elif [ ! -f "$CIFAR" ]; then
    skip train "no CIFAR-10 archive at $CIFAR (set YYFAST_CIFAR10)"
else
    DEVICE=cpu; [ "$HAS_GPU" = "1" ] && DEVICE=cuda
    step train 60 "$PY" -m yyfast.train --data "$CIFAR" --model yynet_small_64 --epochs 2 --batch-size 64 \
        --subset-train 5000 --subset-test 1000 --out "$LOGS/train" --device "$DEVICE" --no-progress
fi

# 7. header + steps.json, then everything else into logs.tar.gz
GPU_NAME=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
COMMIT=${YYFAST_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
GPU_NAME="$GPU_NAME" COMMIT="$COMMIT" STEPS="$STEPS" LOGS="$LOGS" BUDGET="$BUDGET" START="$START" \
"$PY" - "$OUT/steps.json" <<'EOF'
import json, os, platform, sys, time

def version(mod):
    try:
        return __import__(mod).__version__
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"

steps = []
for line in open(os.environ["STEPS"]):
    name, rc, dt, limit, note = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    steps.append({"step": name, "rc": int(rc) if rc else None, "seconds": int(dt), "limit_s": int(limit),
                  "status": "skipped" if note.startswith("skipped") else ("ok" if rc == "0" else "failed"),
                  "note": note})
info = None
try:
    info = json.load(open(os.path.join(os.environ["LOGS"], "info.json")))
except Exception:
    pass
doc = {"device": os.environ.get("GPU_NAME") or "no GPU (nvidia-smi absent or found none)",
       "commit": os.environ["COMMIT"], "date": time.strftime("%Y-%m-%d"), "host_cpus": os.cpu_count(),
       "versions": {"python": platform.python_version(), "torch": version("torch"), "triton": version("triton")},
       "budget_s": int(os.environ["BUDGET"]), "total_s": int(time.time() - int(os.environ["START"])),
       "steps": steps, "yyfast_info": info}
json.dump(doc, open(sys.argv[1], "w"), indent=1)
for s in steps:
    print(f"{s['step']:<11} {s['status']:<8} rc={s['rc']} {s['seconds']:>4}s  {s['note']}")
print(f"total {doc['total_s']} s of {doc['budget_s']} s budget")
EOF
tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . 2>/dev/null
rm -rf "$LOGS"
echo "results in $OUT:"; ls -la "$OUT"
