#!/usr/bin/env bash
# Quick bit-identity check (minutes): the commands of behaviour_checksums.sh on a 120-image Fashion-MNIST
# subset, small budgets. Usage, from the repository root: bash benchmarks/behaviour_checksums_quick.sh WORKDIR a|b|c|d
if [ ! -f /tmp/mini_fmnist.npz ]; then python3 - <<'PY'
import numpy as np
from jaxdd.data import load_dataset
ds = load_dataset("embedded")
tr = np.concatenate([np.flatnonzero(ds.y_train == c)[:12] for c in range(10)])
te = np.concatenate([np.flatnonzero(ds.y_test == c)[:4] for c in range(10)])
u8 = lambda x: np.round(ds.denormalize(x) * 255).astype(np.uint8)
np.savez("/tmp/mini_fmnist.npz", x_train=u8(ds.x_train[tr]), y_train=ds.y_train[tr], x_test=u8(ds.x_test[te]),
         y_test=ds.y_test[te], class_names=np.array(ds.class_names))
PY
fi
set -euo pipefail
W=$1; mkdir -p $W; D=/tmp/mini_fmnist.npz
J="python3 -m jaxdd"; Q="--no-progress"
h() { python3 - "$@" <<'PY'
import hashlib, sys
import numpy as np
label, path, *names = sys.argv[1:]
with np.load(path, allow_pickle=False) as z:
    names = names or sorted(z.files); hh = hashlib.sha256()
    for n in names:
        a = np.ascontiguousarray(z[n]); hh.update(f"{n}:{a.dtype.str}:{a.shape};".encode()); hh.update(a.tobytes())
print(f"{label:10s} {hh.hexdigest()}")
PY
}
case $2 in
a) $J distill $Q --dataset $D --iterations 6 --batch-real 8 --checkpoint-every 3 --eval-every 3 --eval-epochs 2 --eval-models 1 --out $W/dm > $W/dm.log 2>&1
   h dm $W/dm/distilled/distilled.npz images labels ;;
b) $J experts $Q --dataset $D --num-experts 2 --epochs 2 --batch 32 --out $W/buffer > $W/buffer.log 2>&1
   echo "buffer     $(cat $W/buffer/expert_*.npy | sha256sum | cut -c1-64)"
   $J distill $Q --dataset $D --method mtt --set buffer=$W/buffer --set syn_steps=3 --set expert_epochs=1 --set max_start_epoch=1 --iterations 4 --checkpoint-every 2 --eval-every 0 --no-eval --out $W/mtt > $W/mtt.log 2>&1
   h mtt $W/mtt/distilled/distilled.npz ;;
c) $J prior train $Q --dataset $D --ae-steps 4 --steps 6 --width 8 --mults 1 --no-attention --embedding-dim 4 --latent-channels 2 --ae-width 4 --timesteps 20 --batch-size 16 --sample-every 1000 --checkpoint-every 5 --sample-steps 2 --grid-per-class 1 --out $W/prior > $W/prior.log 2>&1
   h prior $W/prior/params.npz
   $J distill $Q --dataset $D --method ld3m --prior $W/prior --iterations 3 --batch-real 8 --checkpoint-every 2 --eval-every 0 --no-eval --set num_steps=2 --out $W/ld3m > $W/ld3m.log 2>&1
   h ld3m $W/ld3m/distilled/distilled.npz ;;
d) $J score --dataset $D --score el2n --models 2 --epochs 2 --score-epochs 1,2 --resume-dir $W/score_ckpt --out $W/scores.npz > $W/score.log 2>&1
   h scores $W/scores.npz scores ;;
esac
