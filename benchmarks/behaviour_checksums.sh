#!/usr/bin/env bash
# Behaviour checksums: sha256 of the outputs of the long runs that the run loop drives, so a
# refactor can show bit-identical results (compare with benchmarks/results/behaviour_checksums_before.txt).
#
#   bash benchmarks/behaviour_checksums.sh [WORKDIR]      # from the repository root; CPU; ~10 min on 2 cores
#   SECTIONS="b c" bash benchmarks/behaviour_checksums.sh DIR   # only some sections (run several in parallel)
#
# (a) the README's main command `jaxdd distill` (DM on the embedded data, --budget quick, with its
#     quick and final evaluations), (b) a short MTT run on a 2-expert buffer trained here, (c) a short
#     LD3M run on a tiny prior trained here, plus the buffer, the prior, an ensemble-scoring run and
#     an ACS generation (the other loops). Each line: the sha256 of the arrays (dtype, shape, bytes)
#     of one output. Timing-dependent files (results.json, history.json seconds) are not hashed.
set -euo pipefail
W=${1:-$(mktemp -d /tmp/jaxdd_checksums.XXXXXX)}
mkdir -p "$W"
J="python3 -m jaxdd"
Q="--no-progress"
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}

hash_npz() {  # label, npz file, [array names...] (default: all, sorted)
  python3 - "$@" <<'PY'
import hashlib, sys
import numpy as np
label, path, *names = sys.argv[1:]
with np.load(path, allow_pickle=False) as z:
    names = names or sorted(z.files)
    h = hashlib.sha256()
    for n in names:
        a = np.ascontiguousarray(z[n])
        h.update(f"{n}:{a.dtype.str}:{a.shape};".encode()); h.update(a.tobytes())
print(f"{label:28s} {h.hexdigest()}  ({', '.join(names)})")
PY
}
hash_files() {  # label, files...
  local label=$1; shift
  printf '%-28s %s  (%s)\n' "$label" "$(cat "$@" | sha256sum | cut -d' ' -f1)" "$(for f in "$@"; do basename "$f"; done | tr '\n' ' ' | sed 's/ $//')"
}

want() { [[ " ${SECTIONS:-a b c d} " == *" $1 "* ]]; }

# (a) README main command
if want a; then
$J distill $Q --out "$W/dm" > "$W/dm.log" 2>&1
hash_npz "a dm (jaxdd distill)" "$W/dm/distilled/distilled.npz" images labels
fi

# (b) MTT: a 2-expert buffer (3 epochs), 20 iterations
if want b; then
$J experts $Q --num-experts 2 --epochs 3 --out "$W/buffer" > "$W/buffer.log" 2>&1
hash_files "b0 expert buffer" "$W"/buffer/expert_*.npy
$J distill $Q --method mtt --set buffer="$W/buffer" --set syn_steps=5 --set expert_epochs=1 \
  --set max_start_epoch=2 --iterations 20 --checkpoint-every 10 --eval-every 0 --no-eval \
  --out "$W/mtt" > "$W/mtt.log" 2>&1
hash_npz "b mtt" "$W/mtt/distilled/distilled.npz"
fi

# (c) LD3M: a tiny latent prior (20 autoencoder + 30 denoiser steps), 6 iterations of LD3M-DM; ACS on it
if want c; then
$J prior train $Q --ae-steps 20 --steps 30 --width 16 --batch-size 32 --sample-every 1000 \
  --checkpoint-every 25 --sample-steps 5 --grid-per-class 2 --out "$W/prior" > "$W/prior.log" 2>&1
hash_npz "c0 prior (EMA params)" "$W/prior/params.npz"
$J distill $Q --method ld3m --prior "$W/prior" --iterations 6 --checkpoint-every 3 --eval-every 0 --no-eval \
  --set num_steps=3 --out "$W/ld3m" > "$W/ld3m.log" 2>&1
hash_npz "c ld3m" "$W/ld3m/distilled/distilled.npz"
$J generate $Q --prior "$W/prior" --ipc 2 --guidance acs --curricula 2 --steps 6 --disc-epochs 2 \
  --clf-epochs 1 --out "$W/acs" > "$W/acs.log" 2>&1
hash_npz "e acs (jaxdd generate)" "$W/acs/distilled.npz" images labels
fi

# (d) ensemble scoring (checkpointed per epoch)
if want d; then
$J score --score el2n --models 2 --epochs 2 --score-epochs 1,2 --resume-dir "$W/score_ckpt" \
  --out "$W/scores.npz" > "$W/score.log" 2>&1
hash_npz "d ensemble scores" "$W/scores.npz" scores
fi
echo "workdir $W"
