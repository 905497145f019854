#!/usr/bin/env bash
# Selection baselines (random real, k-Center greedy, Herding) at IPC 1 and 10 on Fashion-MNIST, and
# DD-Ranking's LRS / ARS of those sets and of the README's default distilled set (embedded data).
# Reduced budget: 2 models x 100 epochs per evaluation (the presets' 5 x 300 / 1000 would take hours
# on a CPU). Usage: bash experiments/robust_baselines.sh [OUT=runs/robust] [FULL_ACC=88.65]
#   FULL_ACC: full-data Fashion-MNIST accuracy (%) used as Acc(real, hard) for LRS (RESULTS.md's
#   "Fashion-MNIST baselines": 1 model x 2 epochs, a lower bound; training on all 60,000 images for the
#   preset's 300 epochs takes CPU-hours).
# The README default set must exist first: jaxdd distill --no-eval --out runs/readme_default
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/robust}
FULL_ACC=${2:-88.65}
B="--num-models 2 --epochs 100"
mkdir -p "$OUT"
for sel in random kcenter herding; do
  python3 -m jaxdd baseline --dataset fashion_mnist --ipc 1,10 --select "$sel" $B --save-sets \
    --out "$OUT/fmnist_$sel.json"
done
for sel in random kcenter herding; do
  for ipc in 1 10; do
    python3 -m jaxdd eval --distilled "$OUT/fmnist_${sel}_${sel}_ipc$ipc" --dataset fashion_mnist --preset dc $B \
      --metrics lrs,ars --real-acc "$FULL_ACC" --out "$OUT/fmnist_${sel}_ipc${ipc}_robust.json"
  done
done
# full-data accuracy of the embedded data (1 model x 20 epochs) for the README default set's LRS
python3 -m jaxdd baseline --dataset embedded --ipc 1 --full --num-models 1 --epochs 20 --out "$OUT/embedded_full.json"
EMB_ACC=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; print([x for x in r if x['set']=='full'][0]['mean'])" "$OUT/embedded_full.json")
python3 -m jaxdd eval --distilled runs/readme_default/distilled --preset dc-dsa $B --metrics lrs,ars \
  --real-acc "$EMB_ACC" --out "$OUT/readme_default_robust.json"
