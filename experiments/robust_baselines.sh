#!/usr/bin/env bash
# Selection baselines (random real, k-Center greedy, Herding) at IPC 1 and 10 on Fashion-MNIST, and
# DD-Ranking's LRS / ARS of those sets and of the README's default distilled set (embedded data).
# Reduced budget: 2 models x 100 epochs per evaluation (the presets' 5 x 300 / 1000 would take hours
# on a CPU). Usage: bash experiments/robust_baselines.sh [OUT=runs/robust] [FULL_ACC=88.65] [STEPS=all]
#   FULL_ACC: full-data Fashion-MNIST accuracy (%) used as Acc(real, hard) for LRS (RESULTS.md's
#   "Fashion-MNIST baselines": 1 model x 2 epochs, a lower bound; training on all 60,000 images for the
#   preset's 300 epochs takes CPU-hours).
#   STEPS: any of readme,random,kcenter,herding (comma-separated; default all four, in that order).
# Every command is logged to $OUT/log.txt with the 1-minute load average before and after it and its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/robust}
FULL_ACC=${2:-88.65}
STEPS=${3:-readme,random,kcenter,herding}
B="--num-models 2 --epochs 100"
mkdir -p "$OUT"
step() {  # run one command, logging it with the load average and wall seconds
  local t0 l0; t0=$(date +%s); l0=$(cut -d' ' -f1 /proc/loadavg)
  echo "\$ $*" | tee -a "$OUT/log.txt"
  "$@"
  echo "  load $l0 -> $(cut -d' ' -f1 /proc/loadavg), $(( $(date +%s) - t0 )) s wall, $(date -u +%H:%M) UTC" | tee -a "$OUT/log.txt"
}
if [[ $STEPS == *readme* ]]; then
  # the README default (DM on the embedded data, IPC 1; kept if already distilled), the embedded data's full-data
  # accuracy (1 model x 2 epochs, a lower bound like the Fashion-MNIST one) as Acc(real, hard), then LRS / ARS of
  # the set under its own preset (dc-dsa)
  [[ -f "$OUT/readme_default/distilled/distilled.json" ]] ||
    step python3 -m jaxdd distill --out "$OUT/readme_default" --no-progress
  step python3 -m jaxdd baseline --dataset embedded --ipc 1 --full --num-models 1 --epochs 2 --out "$OUT/embedded_full.json"
  EMB_ACC=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; print([x for x in r if x['set']=='full'][0]['mean'])" "$OUT/embedded_full.json")
  step python3 -m jaxdd eval --distilled "$OUT/readme_default/distilled" --preset dc-dsa $B --metrics lrs,ars \
    --real-acc "$EMB_ACC" --out "$OUT/readme_default_robust.json"
fi
for sel in random kcenter herding; do  # per selection: choose and evaluate at IPC 1 and 10, then LRS / ARS
  [[ $STEPS == *$sel* ]] || continue
  step python3 -m jaxdd baseline --dataset fashion_mnist --ipc 1,10 --select "$sel" $B --save-sets \
    --out "$OUT/fmnist_$sel.json"
  for ipc in 1 10; do
    step python3 -m jaxdd eval --distilled "$OUT/fmnist_${sel}_${sel}_ipc$ipc" --dataset fashion_mnist --preset dc $B \
      --metrics lrs,ars --real-acc "$FULL_ACC" --out "$OUT/fmnist_${sel}_ipc${ipc}_robust.json"
  done
done
