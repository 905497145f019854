#!/usr/bin/env bash
# The speed benchmarks on an accelerator, one command (about 5 minutes on an H200):
# DM iteration (IPC 10, batch 256/class, DSA), DC iterations (IPC 1 and IPC 10 at the authors'
# loops, batch 256), DSA IPC 10, a training step, per-example gradient norms, evaluation with
# K = 1, 5, 10 vmapped seeds (time ratio to K = 1) and an epoch as one lax.scan vs per-step loops.
#
#   OUT=/some/dir benchmarks/device_suite.sh [BUDGET_SECONDS (default 240: no benchmark starts later)]
#
# Run from the repository root (PYTHONPATH=. is set here). Data: data/fashion-mnist/*.gz in the
# repository root when present, else jaxdd's default folder. Outputs in $OUT (default
# benchmarks/results): device_suite.json, device_suite.md, device_suite.log.
# JAXDD_TINY=1: a CPU smoke test (embedded data, small network, tiny sizes).
set -o pipefail
export PYTHONUNBUFFERED=1
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
BUDGET=${1:-240}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
LOG="$OUT/device_suite.log"
{
  echo "== device_suite.sh $(date -u +%FT%TZ), budget ${BUDGET} s"
  nvidia-smi -L 2>&1 || echo "(nvidia-smi not available)"
  python3 -c 'import jax; print(jax.devices())'
} 2>&1 | tee "$LOG"
ARGS=(--setting authors --name device_suite --out "$OUT" --budget-s "$BUDGET"
      --benches dm,dc_ipc1,dc_ipc10,train_step,grad_norms,eval_seeds,train_loop,dsa_ipc10)
if [ -d data/fashion-mnist ]; then ARGS+=(--data-dir data/fashion-mnist); fi
if [ "${JAXDD_TINY:-0}" = "1" ]; then ARGS+=(--setting tiny); fi
python3 benchmarks/run_all.py "${ARGS[@]}" 2>&1 | tee -a "$LOG"
rc=$?
echo "== done rc=$rc" | tee -a "$LOG"
exit $rc
