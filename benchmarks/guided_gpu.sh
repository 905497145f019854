#!/usr/bin/env bash
# Guided generation on Fashion-MNIST, the whole "Measured" table of guided generation in one command
# (experiments/guided_fmnist.py): a diffusion prior trained here, the DGS classifier, per IPC 1, 10
# and 50 unguided (CFG 1/2/4), DAG (real target, hill), ACS (K = 2, 5 at IPC 10; 5, 10 at IPC 50),
# DGS on an unguided and a DAG pool, random real and DM, each evaluated on ConvNet, LeNet, MLP and
# ResNet-18 (preset dc, 3 models). Resumable: a second call with the same FOLDER continues; no job
# starts that would not end before BUDGET_SECONDS.
#
#   OUT=/some/dir bash benchmarks/guided_gpu.sh [BUDGET_SECONDS (default 420)] [FOLDER (default runs/guided_gpu)]
#
# Run from the repository root (PYTHONPATH=. is set here). Data: data/fashion-mnist/*.gz in the
# repository root when present, else jaxdd's default folder. Outputs in $OUT (8 files):
# guided_gpu.log, guided_gpu.json / .md (settings, per-set metrics, accuracies, timings),
# guided_gpu.tar.gz (FOLDER: prior, classifier, status) and guided_sets.tar.gz (the sets, float16):
# for a fresh machine copy both to runs/ of the repository root and carry them; they are unpacked
# when FOLDER is missing. prior_samples.png, grid_ipc10_dag_real.png, difficulty_ipc10_dag_real.png.
# JAXDD_TINY=1: a CPU smoke test (embedded data, tiny prior and networks, a few steps).
set -o pipefail
export PYTHONUNBUFFERED=1
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
START=$(date +%s)
BUDGET=${1:-420}
FOLDER=${2:-runs/guided_gpu}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
LOG="$OUT/guided_gpu.log"
{
  echo "== guided_gpu.sh $(date -u +%FT%TZ), budget ${BUDGET} s, folder ${FOLDER}"
  nvidia-smi -L 2>&1 || echo "(nvidia-smi not available)"
  python3 -c 'import jax; print(jax.devices())'
} 2>&1 | tee -a "$LOG"
ARGS=(--deadline $((START + BUDGET)) --folder "$FOLDER" --out "$OUT" --tar
      --restore "runs/$(basename "$FOLDER").tar.gz" runs/guided_sets.tar.gz)
if [ -d data/fashion-mnist ]; then ARGS+=(--data-dir data/fashion-mnist); fi
if [ "${JAXDD_TINY:-0}" = "1" ]; then ARGS=(--tiny --margin-s 2 "${ARGS[@]}"); fi
python3 experiments/guided_fmnist.py "${ARGS[@]}" 2>&1 | tee -a "$LOG"
rc=$?
echo "== done rc=$rc after $(( $(date +%s) - START )) s" | tee -a "$LOG"
exit $rc
