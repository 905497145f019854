#!/usr/bin/env bash
# The authors' full budgets on Fashion-MNIST (DC/DSA IPC 1, DM IPC 1 and 10) with the reference
# evaluation (5 models), resumable: a second call with the same FOLDER continues where the first
# stopped. Stops cleanly (checkpoint + partial results) before BUDGET_SECONDS.
#
#   OUT=/some/dir benchmarks/reproduce_gpu.sh [BUDGET_SECONDS (default 540)] [FOLDER (default runs/reproduce_gpu)]
#
# Run from the repository root (PYTHONPATH=. is set here; jaxdd need not be installed).
# Data: data/fashion-mnist/*.gz in the repository root when present, else jaxdd's default folder.
# Outputs in $OUT (default benchmarks/results): reproduce_gpu.json / .md (status and accuracies),
# reproduce_gpu.log, <basename FOLDER>.tar.gz (FOLDER packed; for a fresh machine copy it into runs/
# of the repository root and carry it: this script unpacks runs/<basename FOLDER>.tar.gz when FOLDER is missing).
# JAXDD_TINY=1: a CPU smoke test (embedded data, small network, a few iterations).
set -o pipefail
export PYTHONUNBUFFERED=1
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
START=$(date +%s)
BUDGET=${1:-540}
FOLDER=${2:-runs/reproduce_gpu}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
LOG="$OUT/reproduce_gpu.log"
{
  echo "== reproduce_gpu.sh $(date -u +%FT%TZ), budget ${BUDGET} s, folder ${FOLDER}"
  nvidia-smi -L 2>&1 || echo "(nvidia-smi not available)"
  python3 -c 'import jax; print(jax.devices())'
} 2>&1 | tee -a "$LOG"
ARGS=(--deadline $((START + BUDGET)) --folder "$FOLDER" --out "$OUT" --tar
      --restore "runs/$(basename "$FOLDER").tar.gz")
if [ -d data/fashion-mnist ]; then ARGS+=(--data-dir data/fashion-mnist); fi
if [ "${JAXDD_TINY:-0}" = "1" ]; then ARGS=(--tiny --eval-reserve-s 0 --margin-s 5 "${ARGS[@]}"); fi
python3 benchmarks/reproduce.py "${ARGS[@]}" 2>&1 | tee -a "$LOG"
rc=$?
echo "== done rc=$rc after $(( $(date +%s) - START )) s" | tee -a "$LOG"
exit $rc
