#!/usr/bin/env bash
# Every GPU measurement the docs promise, in one go, on one H100/H200-class GPU;
# the steps' budgets add up to 9 minutes (540 s), so it ends within 10:
#
#   (0) original_engine     one generation (λ = 6 of Grammar 2, MNIST 10,000 images, T = 10)
#                           by a torch + snntorch twin of the original's evaluator on CUDA
#                           against ours on the GPU: wall seconds, speed-up, accuracies
#   (a) train_throughput    train samples/s vs snntorch (torch on CUDA), T = 10 and 25,
#                           our three time-loop orders
#   (b) generation          one generation (λ = 10) one by one vs batched: map with
#                           0/1/4 compile threads, vmap
#   (c) compile_time        compile seconds per new signature, T = 10 and 25
#   (c') compile_cost       compile seconds of a run's new offspring, the path before the
#                           cheaper draws against the one now
#   (c'') layer_programs    the same offspring with programs per block shared across
#                           architectures (runtime.compile_unit=layer) against one per network
#   (d) paper_projection    200-generation paper runs (MNIST T = 10, Fashion-MNIST
#                           T = 25) projected from (b) and (c)
#
# Usage (from anywhere; a host with one GPU and this repository):
#
#   bash benchmarks/gpu.sh [--smoke] [--out DIR]
#
#   --out DIR   where the JSON results go (default benchmarks/results): one file per
#               measurement (<name>_<tag>_<date>.json, tag = JAX's backend, e.g. gpu),
#               plus gpu_run_<tag>_<date>.json (each step's status, seconds, error)
#               and gpu_run_<tag>_<date>.log (everything printed).
#   --smoke     no installs, JAX on the CPU, tiny sizes, the same code paths (every
#               time-loop order, vmap, several compile threads, two host devices);
#               tag cpu_smoke. What tests/test_benchmarks.py runs.
#
# Environment:
#   PYTHON      the interpreter (default python3)
#   WHEELS      a folder of wheels: install offline from it (pip --no-index
#               --find-links), for hosts without internet; see benchmarks/README.md
#   SPENSER_DATA_DIR  MNIST / Fashion-MNIST IDX files (else ../shared/data; else
#               random images of the same shape, which every result records)
#
# Each step runs under `timeout` with its own budget; a step that fails or runs out
# of time is recorded (its error in its JSON file and in the run's manifest) and
# the next one runs. The short table comes last. Exit status: 0 when every step
# succeeded, 1 otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SMOKE=0
OUT=benchmarks/results
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1; shift ;;
    --out) OUT=${2:?--out needs a folder}; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
export PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATE=$(date +%F)
# The checkout's package, whether or not the install below succeeds.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
STEPLOGS=$(mktemp -d "${TMPDIR:-/tmp}/spenser_gpu_sh.XXXXXX")
trap 'rm -rf "$STEPLOGS"' EXIT
T0=$(date +%s)
FAILED=0
# Everything printed also goes to a log, copied next to the results at the end.
exec > >(tee -a "$STEPLOGS/all.log") 2>&1

say() { printf '[gpu.sh %4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

# step NAME BUDGET_S RESULT_STEM COMMAND...: run COMMAND under `timeout`, print
# its output, then record the outcome (summary.py record).
step() {
  local name=$1 budget=$2 stem=$3
  shift 3
  local log="$STEPLOGS/$name.log" started rc
  started=$(date +%s)
  say "step $name (budget ${budget} s) ..."
  set +e
  if declare -F "$1" >/dev/null; then  # a shell function: run it in a child bash
    timeout --kill-after=10 "$budget" bash -c "$(declare -f "$1"); $*" 2>&1 | tee "$log"
  else
    timeout --kill-after=10 "$budget" "$@" 2>&1 | tee "$log"
  fi
  rc=${PIPESTATUS[0]}
  set -e
  local seconds=$(( $(date +%s) - started ))
  if ! "$PYTHON" benchmarks/summary.py record --out "$OUT" --tag "$TAG" --step "$name" \
      --rc "$rc" --seconds "$seconds" --budget "$budget" --started "$started" \
      ${stem:+--stem "$stem"} --log "$log"; then
    echo "gpu.sh: could not record step $name" >&2
  fi
  if [[ $rc -ne 0 ]]; then
    FAILED=1
    say "step $name FAILED (exit $rc after ${seconds} s); going on"
  else
    say "step $name done in ${seconds} s"
  fi
}

install() {
  # Installs only what is missing: the package (editable, for its dependencies),
  # snntorch, torch; a working JAX with a GPU is left alone.
  local pip=("$PYTHON" -m pip install --disable-pip-version-check)
  if [[ -n "${WHEELS:-}" ]]; then
    [[ -d "$WHEELS" ]] || { echo "WHEELS=$WHEELS is not a folder" >&2; return 1; }
    pip+=(--no-index --find-links "$WHEELS")
    echo "installing offline from $WHEELS"
  fi
  if "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(0 if sys.prefix == sys.base_prefix and
os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
    pip+=(--break-system-packages)  # a system Python on a throwaway benchmark host
  fi
  local target="."
  if ! "$PYTHON" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
    [[ -n "${WHEELS:-}" ]] || target=".[cuda]"  # JAX's CUDA wheels
  fi
  local extra=()
  "$PYTHON" -c "import torch" 2>/dev/null || extra+=(torch)
  "$PYTHON" -c "import snntorch" 2>/dev/null || extra+=(snntorch)
  echo "pip install -e $target ${extra[*]}"
  if ! "${pip[@]}" -e "$target" "${extra[@]}"; then
    # The benchmarks need neither the install nor hydra (PYTHONPATH has the
    # package): get what they do need one by one.
    echo "full install failed; trying the benchmarks' needs alone" >&2
    local rc=0
    for p in "${extra[@]}"; do "${pip[@]}" "$p" || "${pip[@]}" --no-deps "$p" || rc=1; done
    "$PYTHON" -c "import jax, flax, optax, numpy" || rc=1
    return $rc
  fi
}

if [[ $SMOKE -eq 1 ]]; then
  TAG=cpu_smoke
  export JAX_PLATFORMS=cpu
  # Smoke only: XLA:CPU compiles ~3x faster at optimisation level 0 (numbers
  # differ; the code paths do not).
  BASE_XLA_FLAGS="--xla_backend_optimization_level=0"
  export XLA_FLAGS="$BASE_XLA_FLAGS"
fi
say "spenser_jax benchmarks: out $OUT, python $PYTHON, smoke $SMOKE"

if [[ $SMOKE -eq 1 ]]; then
  rm -f "$OUT/gpu_run_${TAG}_$DATE.json"
  "$PYTHON" benchmarks/summary.py record --out "$OUT" --tag "$TAG" --step install --rc 0 \
    --seconds 0 --started "$(date +%s)" --skipped "smoke run: no installs"
  say "smoke run: no installs; JAX on the CPU; XLA_FLAGS=$XLA_FLAGS"
else
  TAG=pending
  rm -f "$OUT/gpu_run_pending_$DATE.json"
  step install 80 "" install
  TAG=$(timeout 60 "$PYTHON" -c "import jax; print(jax.default_backend())" 2>/dev/null || echo unknown)
  # The install was recorded under a provisional tag: move it to the real one.
  if [[ -e "$OUT/gpu_run_pending_$DATE.json" ]]; then
    mv -f "$OUT/gpu_run_pending_$DATE.json" "$OUT/gpu_run_${TAG}_$DATE.json"
  fi
  [[ $TAG == gpu ]] || say "WARNING: JAX's backend is '$TAG', not gpu: the figures are not GPU figures"
  "$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" || true
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
fi

if [[ $SMOKE -eq 1 ]]; then
  # The twin on the CPU (skipped, and so recorded, where torch + snntorch are missing).
  step original_engine 90 "original_engine_$TAG" \
    "$PYTHON" benchmarks/original_engine.py --datasets mnist --subset 200 --offspring 2 --time-steps 2 \
      --variants default --repeats 1 --timeout-s 80 --torch-device cpu --name "original_engine_$TAG" --out "$OUT"
  step train_throughput 120 "train_throughput_$TAG" \
    "$PYTHON" benchmarks/train_throughput.py --quick --time-steps 2 --steps 2 --epoch-steps 2 \
      --repeats 1 --modes layerwise scan stepwise --no-host-loop --profile none --isolate-torch \
      --name "train_throughput_$TAG" --out "$OUT"
  step generation_throughput 150 "generation_throughput_$TAG" \
    env XLA_FLAGS="$BASE_XLA_FLAGS --xla_force_host_platform_device_count=2" \
    "$PYTHON" benchmarks/generation_throughput.py --quick --dataset mnist --subset 64 \
      --time-steps 2 --offspring 2 --parent-pool 20 --shared-signature --variants none,map:2,vmap:0 \
      --repeats 1 \
      --share-seeds 1 --share-generations 3 --budget-s 130 \
      --name "generation_throughput_$TAG" --out "$OUT"
  step compile_time 90 "compile_time_$TAG" \
    "$PYTHON" benchmarks/compile_time.py --time-steps 2 --signatures 1 --samples 64 \
      --offspring 2 --parent-pool 20 --budget-s 60 --name "compile_time_$TAG" --out "$OUT"
  step compile_cost 90 "compile_cost_$TAG" \
    "$PYTHON" benchmarks/compile_cost.py --archs 1 --variant-archs 0 --time-steps 2 --batch-size 16 \
      --train-samples 32 --fitness-samples 16 --name "compile_cost_$TAG" --out "$OUT"
  step layer_programs 90 "layer_programs_$TAG" \
    "$PYTHON" benchmarks/layer_programs.py --archs 2 --time-steps 2 --batch-size 16 \
      --train-samples 32 --fitness-samples 16 --name "layer_programs_$TAG" --out "$OUT"
else
  # The twin on CUDA and ours on the GPU, one fresh process each (40 s each at most).
  step original_engine 100 "original_engine_$TAG" \
    "$PYTHON" benchmarks/original_engine.py --datasets mnist --subset 10000 --offspring 6 --variants default \
      --repeats 1 --timeout-s 40 --torch-device cuda --name "original_engine_$TAG" --out "$OUT"
  step train_throughput 110 "train_throughput_$TAG" \
    "$PYTHON" benchmarks/train_throughput.py --time-steps 10 25 --steps 50 --epoch-steps 50 \
      --repeats 3 --budget-s 10 --modes layerwise scan stepwise --no-host-loop --profile none \
      --isolate-torch --name "train_throughput_$TAG" --out "$OUT"
  step generation_throughput 120 "generation_throughput_$TAG" \
    "$PYTHON" benchmarks/generation_throughput.py --dataset mnist --subset 3000 --time-steps 10 \
      --offspring 10 --variants none,map:4,vmap,map:0,map:1 --repeats 1 --budget-s 95 \
      --no-compile-scaling --name "generation_throughput_$TAG" --out "$OUT"
  step compile_time 40 "compile_time_$TAG" \
    "$PYTHON" benchmarks/compile_time.py --time-steps 10 25 --signatures 3 --budget-s 22 \
      --name "compile_time_$TAG" --out "$OUT"
  step compile_cost 40 "compile_cost_$TAG" \
    "$PYTHON" benchmarks/compile_cost.py --archs 12 --variant-archs 0 --budget-s 18 \
      --name "compile_cost_$TAG" --out "$OUT"
  step layer_programs 30 "layer_programs_$TAG" \
    "$PYTHON" benchmarks/layer_programs.py --archs 20 --budget-s 18 --name "layer_programs_$TAG" --out "$OUT"
fi
step paper_projection 20 "paper_projection_$TAG" \
  "$PYTHON" benchmarks/paper_projection.py --results "$OUT" --tag "$TAG" --out "$OUT"

say "all steps done in $(( $(date +%s) - T0 )) s"
echo
"$PYTHON" benchmarks/summary.py report --out "$OUT" --tag "$TAG" || FAILED=1
sleep 0.5  # let tee catch up
cp "$STEPLOGS/all.log" "$OUT/gpu_run_${TAG}_$DATE.log"
exit $FAILED
