#!/usr/bin/env bash
# CI's other torch/Triton stacks (.ci/stacks.txt), after .ci/run has proven the pinned one.
# Each stack gets a fresh copy of the working tree (the editable build writes yyfast/_C*.so into the
# source tree, so stacks must not share one) with its own .venv, installed with the README's
# <!-- ci:install --> commands verbatim; only requirements.txt's torch pin is changed, a Triton pin
# added and torchvision's pin set to the stack's (see .ci/stacks.txt). Then SUBSET below runs, and
# .ci/stack_result.py writes .ci/results/<name>.json (versions, install and test seconds, pytest
# counts), which .ci/versions_table.py renders into README.md.
#
#   bash .ci/stacks.sh [NAME...]        default: every stack in .ci/stacks.txt
#
# The stacks run at the same time (their install and test seconds in the results are then those of
# a shared machine); YYFAST_STACKS_SERIAL=1 runs them one after another.
# YYFAST_STACKS_DIR: where the copies and venvs go (default a new /tmp/yyfast-stacks.*; each stack's
# 5.6 GB is removed when it passes, kept when it fails). YYFAST_KEEP_STACKS=1 keeps them all.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
. .ci/readme_blocks.sh
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# The subset every extra stack runs: build and registration, the op proofs of both backends (Triton's
# in its interpreter, the CUDA ops' C++ CPU twins, opcheck and torch.compile included), a model
# training step with each, and one CLI round trip (train -> last.pt -> evaluate). Tests marked
# triton_aot or cuda_emu join by marker (`tests -m`), wherever they live.
SUBSET=(tests/test_build.py tests/test_backends.py
        tests/test_triton_dw_bn_act_se.py tests/test_triton_yinyang_fuse.py
        tests/test_cuda_dw_bn_act_se.py tests/test_cuda_yinyang_fuse.py tests/test_op_schemas.py
        tests/test_triton_model.py tests/test_cuda_model.py
        tests/test_evaluate.py::test_json_matches_the_trainers_own_evaluation
        tests/test_whole_forward.py tests/test_stem_conv.py tests/test_fast_forward.py)
# test_whole_forward: the one-call CPU forward calls oneDNN's mkldnn::_convolution_pointwise boxed, a
# torch-internal schema, so each stack proves it (and the forward's equality with the per-block path).
# test_fast_forward: csrc/fast_forward.cpp uses torch's Python bindings (THPVariable_*) and the Python C
# API against each stack's torch.
# Deselected here, all still run by the pinned stack's whole suite:
# * test_build's CMake/ctest build: it does not involve torch.
# * all but one model training step per backend: one step per backend (Triton gelu/sigmoid/add; the C++
#   ops gelu/sigmoid plus the gate_sub fusion step) proves the model trains on this stack's torch and
#   Triton; the other act x gate x fusion steps prove the model's options, which do not change with
#   the stack and are proven by the op tests above on every stack. Each Triton step is 3.5 s in the
#   interpreter on an idle 2-core machine (17-35 s on a busy one), each C++ step 0.2 s (10 s busy).
SUBSET_K="not cmake and not (test_model_step and (silu or hardsigmoid))"
MARKED="triton_aot or cuda_emu"
# Of the marked tests, the libtorch-free ASan driver of the emulated kernels (the clean run, its
# deliberate faults and the mutated kernels; 7 ASan builds, 52 s on a busy 2-core machine) involves
# neither torch nor Triton, so it proves nothing stack-specific: the pinned run has it (and ctest's copy
# of it). So is the emulated model step (18 s busy): the emulated kernels' numerics are the op-level
# emulated tests', and the model step with the C++ ops runs above. The emulated ops
# (torch.utils.cpp_extension against this stack's torch and its c10 float16/bfloat16 types) stay.
MARKED_K="not driver and not emulator_catches_broken and not step_emulated"
# The CUDA extension is compiled for the GPU machine's architecture only (sm_90, H100, plus compute_90
# PTX for newer GPUs): the other architecture in setup.py's default (sm_80) is one more cicc + ptxas
# pass per .cu file that depends on nvcc, not on the stack's torch; the pinned install compiles the
# whole default list. A TORCH_CUDA_ARCH_LIST already set is kept. (gpu-machine's install alone: 123 ->
# 115 s; the pip part is ~60 s of it. It matters more while the two stacks compile at the same time.)
STACK_ARCHS=${TORCH_CUDA_ARCH_LIST:-9.0+PTX}

stacks=$(grep -v '^\s*\(#\|$\)' .ci/stacks.txt)
if [ $# -gt 0 ]; then
  for want in "$@"; do
    echo "$stacks" | awk -v n="$want" '$1 == n { f = 1 } END { exit !f }' \
      || { echo "stacks: unknown stack '$want'; .ci/stacks.txt has: $(echo "$stacks" | awk '{print $1}' | xargs)" >&2; exit 2; }
  done
fi

work=${YYFAST_STACKS_DIR:-$(mktemp -d /tmp/yyfast-stacks.XXXXXX)}
mkdir -p "$work" .ci/results

run_stack() {  # run_stack NAME PYTHON TORCH TRITON TORCHVISION
  local name=$1 py=$2 torch=$3 triton=$4 vision=$5
  local dir="$work/$name" t0 t1 t2 rc=0
  rm -rf "$dir" && mkdir -p "$dir/src" "$dir/bin"
  echo "== stack $name: Python $py, torch $torch, Triton $triton, torchvision $vision (in $dir) =="
  # The working tree as it is, tracked and untracked-but-not-ignored files (no .venv, no build).
  git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$dir/src"
  local commit
  commit="$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes present)')"
  sed -i -E "s/^torch==.*/torch==$torch/" "$dir/src/requirements.txt"
  grep -qx "torch==$torch" "$dir/src/requirements.txt" || { echo "stacks: requirements.txt has no torch== pin to change" >&2; return 1; }
  echo "triton==$triton" >> "$dir/src/requirements.txt"
  if [ "$vision" = - ]; then   # no torchvision for this torch: leave it, and timm which needs it, out
    sed -i -E '/^(torchvision|timm)([<>=!~ ;[]|$)/d' "$dir/src/requirements.txt"
  else
    sed -i -E "s/^torchvision==.*/torchvision==$vision/" "$dir/src/requirements.txt"
  fi
  # The README says python3; the stack's Python answers to that name while the venv is made (the
  # interpreter itself: a pyenv shim linked as python3 would pick its python3, not python$py).
  local exe
  exe=$("python$py" -c 'import sys; print(sys.executable)') || { echo "stacks: no python$py for stack $name" >&2; return 1; }
  ln -s "$exe" "$dir/bin/python3"
  # pip reads `constraint` from pip.conf (this machine's /etc/xdg/pip caps torch at 2.14.1, the
  # newest on its disk); PIP_CONSTRAINT in the environment takes precedence over config files, so
  # for these pip calls only the stack's own pins constrain, and nothing on the system changes.
  printf 'torch==%s\ntriton==%s\n' "$torch" "$triton" > "$dir/constraints.txt"
  [ "$vision" = - ] || echo "torchvision==$vision" >> "$dir/constraints.txt"

  t0=$(date +%s)
  (cd "$dir/src" && PATH="$dir/bin:$PATH" PIP_CONSTRAINT="$dir/constraints.txt" TORCH_CUDA_ARCH_LIST="$STACK_ARCHS" \
     bash -euo pipefail -c "$install_cmds") > "$dir/install.log" 2>&1 || rc=$?
  t1=$(date +%s)
  echo "   install: rc=$rc $((t1 - t0)) s, CUDA archs $STACK_ARCHS (log $dir/install.log)"
  if [ $rc -eq 0 ]; then
    (cd "$dir/src" && .venv/bin/python -c "
import torch, triton, yyfast._C as c
assert torch.__version__.split('+')[0] == '$torch', torch.__version__
assert triton.__version__ == '$triton', triton.__version__
assert torch.version.cuda is None or c.cuda_built(), 'CUDA kernels were not compiled'
print('   built:', 'torch', torch.__version__, 'CUDA', torch.version.cuda, 'triton', triton.__version__, 'CUDA kernels', c.cuda_built())
") || rc=$?
  else
    tail -n 20 "$dir/install.log" | sed 's/^/   | /'
  fi
  if [ $rc -eq 0 ]; then
    # --basetemp: the stack's own pytest temporary folders (stacks run at the same time, below).
    (cd "$dir/src" && . .venv/bin/activate && python -m pytest -q -rs -p no:cacheprovider \
       --basetemp="$dir/pytest-tmp" --junitxml="$dir/subset.xml" -k "$SUBSET_K" "${SUBSET[@]}") || rc=$?
    local mrc=0
    (cd "$dir/src" && . .venv/bin/activate && python -m pytest -q -rs -p no:cacheprovider \
       --basetemp="$dir/pytest-tmp" --junitxml="$dir/marked.xml" -m "$MARKED" -k "$MARKED_K" tests) || mrc=$?
    # 5: no test carries those markers (yet); anything else is a result.
    if [ $mrc -eq 5 ]; then echo "   (no tests marked $MARKED)"; rm -f "$dir/marked.xml"; elif [ $rc -eq 0 ]; then rc=$mrc; fi
  fi
  t2=$(date +%s)
  echo "   tests: rc=$rc $((t2 - t1)) s"
  if [ -x "$dir/src/.venv/bin/python" ]; then
    YYFAST_CI_COMMIT="$commit" "$dir/src/.venv/bin/python" .ci/stack_result.py --name "$name" --tests subset --rc "$rc" \
      --install-s $((t1 - t0)) --test-s $((t2 - t1)) --out ".ci/results/$name.json" "$dir"/*.xml
  fi
  if [ $rc -eq 0 ] && [ "${YYFAST_KEEP_STACKS:-0}" != 1 ]; then rm -rf "$dir"; fi
  return $rc
}

# The stacks run at the same time (YYFAST_STACKS_SERIAL=1: one after another), each one's output
# printed when it ends, in .ci/stacks.txt's order. On 2 cores one stack alone leaves a core idle for
# most of its run (pip unpacking wheels, the Triton interpreter, the emulator's and Triton's compilers
# are one process each). Measured: gpu-machine alone 250 s (install 115 + tests 128); gpu-machine and
# newest together 361 s (installs 201 and 217 s, tests 143 and 136 s), where CI took 723 s for the two
# one after the other before the cuts above (335 + 388 s).
failed=() ran=() pids=()
while read -r name py torch triton vision _; do
  [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx "$name" || continue
  ran+=("$name")
  if [ "${YYFAST_STACKS_SERIAL:-0}" = 1 ]; then
    run_stack "$name" "$py" "$torch" "$triton" "$vision" < /dev/null || failed+=("$name")
  else
    # `|| exit`: run_stack runs as in the serial branch, with errexit off inside it (a failed step sets rc)
    { run_stack "$name" "$py" "$torch" "$triton" "$vision" < /dev/null || exit $?; } > "$work/$name.out" 2>&1 &
    pids+=($!)
  fi
done <<< "$stacks"
for i in "${!pids[@]}"; do
  name=${ran[$i]} rc=0
  wait "${pids[$i]}" || rc=$?
  cat "$work/$name.out" && rm -f "$work/$name.out"
  [ $rc -eq 0 ] || failed+=("$name")
done
[ -n "${YYFAST_STACKS_DIR:-}" ] || rmdir "$work" 2>/dev/null || true   # empty when every stack passed
[ ${#failed[@]} -eq 0 ] || { echo "stacks: FAILED: ${failed[*]} (kept in $work)" >&2; exit 1; }
echo "== stacks passed: ${ran[*]} =="
