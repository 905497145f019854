#!/usr/bin/env bash
# Issue 19's speed goals on an idle machine, one command (about 7 minutes on 2 idle cores):
#
#   bash benchmarks/issue19_idle.sh [DATA_DIR] [TAG]   # DATA_DIR: Fashion-MNIST IDX .gz files; TAG names the JSON (idle)
#
# 1. DC at Fashion-MNIST IPC 10: the parts of one outer step (matching gradient of all classes,
#    inner-training epoch, a plain step), each now and with the session-6 convolution JVP in
#    alternating rounds, and the extrapolated iteration at the authors' loops (10 x match + 450 x
#    inner epoch); then one real update at outer 2 / inner 50 as a check of that extrapolation
#    (predicted: 2 x match + 50 x inner epoch).
# 2. DM IPC 10, real batch 256, DSA (goal <= 1.8 s per iteration).
# 3. SDC's overhead on DM (goal <= 1.5x) and the training step at 28->32 px, batch 256 (goal <= 1.10 s).
# JSON into benchmarks/results/*_TAG.json (SDC on the embedded data, as the earlier idle run); the load average is recorded in each.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
DATA=${1:-/usr/share/datasets/fashion-mnist}
TAG=${2:-idle}
R=benchmarks/results
uptime
python3 benchmarks/dc_profile.py --data-dir "$DATA" --epochs 5 --rounds 2 --baseline --out $R/dc_profile_$TAG.json
python3 benchmarks/distill.py --dataset fashion_mnist --data-dir "$DATA" --methods dc --ipc 10 --iterations 0 \
    --set outer_loop=2 --out $R/dc_ipc10_outer2_$TAG.json
python3 benchmarks/distill.py --dataset fashion_mnist --data-dir "$DATA" --methods dm --ipc 10 --iterations 3 \
    --out $R/dm_ipc10_$TAG.json
python3 benchmarks/sdc_overhead.py --ipc 10 --batch-real 256 --iterations 3 --skip-vmap --out $R/sdc_overhead_$TAG.json
python3 benchmarks/train_step.py --models 1 --steps 5 --out $R/train_step_$TAG.json
uptime
