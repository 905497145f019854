"""How far DAG's guidance scale moves the achieved difficulty toward the target: one DAG set per scale
(the same key: scale 0 is the unguided set), with the prior and classifier of a
``experiments/guided_fmnist.py`` folder.

    python experiments/guided_scale_sweep.py --folder runs/guided_gpu [--ipc 10] [--target cliff]
        [--scales 0 0.05 0.2 0.5] [--steps 50] [--out runs/guided_gpu/scale_sweep]

Per scale: mean |d - d_target| over the set, KL(target || achieved) (mean over classes), the mean
difficulty, the classifier's accuracy on the set (recognised), and seconds. Prints a table and
writes ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    import jax

    from jaxdd.data import load_dataset
    from jaxdd.generative import load_prior
    from jaxdd.difficulty.classifier import DifficultyClassifier
    from jaxdd.sample.guided import GenerateConfig, generate_set
    from jaxdd.utils.io import format_table, read_json, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", required=True, help="a guided_fmnist.py run folder (prior/, classifier/, real_scores.npz)")
    p.add_argument("--dataset", default=None, help="default: the one the folder's run used")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--target", default="cliff")
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.05, 0.2, 0.5])
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default FOLDER/scale_sweep")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    out = Path(args.out) if args.out else folder / "scale_sweep"
    status = read_json(folder / "status.json") if (folder / "status.json").is_file() else {}
    dataset = args.dataset or next((c.get("dataset") for c in [status.get("classifier", {})] if c.get("dataset")),
                                   "fashion_mnist")
    ds = load_dataset(dataset, data_dir=args.data_dir, progress=False)
    prior, params, _ = load_prior(folder / "prior")
    clf = DifficultyClassifier.load(folder / "classifier", ds)
    with np.load(folder / "real_scores.npz") as z:
        real_scores = z["scores"]
    rows = []
    for s in args.scales:
        cfg = GenerateConfig(ipc=args.ipc, guidance="dag", target=args.target, scale=s, steps=args.steps,
                             cfg_scale=args.cfg, batch_size=args.batch_size, seed=args.seed)
        t = time.time()
        r = generate_set(prior, params, ds, cfg, out / f"scale{s:g}", classifier=clf, progress=False,
                         real_scores=real_scores)
        achieved = np.mean([c["achieved_mean_d"] for c in r["per_class"]])
        target = np.mean([c["target_mean_d"] for c in r["per_class"]])
        rows.append({"scale": s, "abs_err": round(r["dag_abs_error"], 4), "kl_target": round(r["kl_mean"], 3),
                     "mean_d": round(float(achieved), 4), "target_mean_d": round(float(target), 4),
                     "seconds": round(time.time() - t, 1), "backend": jax.default_backend()})
        print(format_table(rows[-1:]), flush=True)
    print(format_table(rows))
    write_json(out / "results.json", {"config": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
