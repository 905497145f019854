"""Data-diet check (Paul et al., 2021) on Fashion-MNIST: train on the easiest / hardest / random
10 %, 30 %, 50 % of the training set by EL2N (or GraNd) from a few early-trained models, report test
accuracy.

    python experiments/run.py --config data_diet_fmnist [--config.FIELD=VALUE ...]
    python experiments/data_diet.py [--dataset fashion_mnist] [--train-per-class 300] [--model convnet-w16]
        [--score el2n] [--score-models 4] [--score-epochs 3] [--fractions 0.1,0.3,0.5]
        [--eval-models 2] [--eval-epochs 20] --out experiments/results/data_diet.json

Budget knobs (this runs on a shared 2-core CPU): ``--train-per-class`` draws a class-balanced random
pool from the training split first (all of it with 0), ``--model`` can be narrower than the
reference ConvNet-3 width 128. Scores come from ``jaxdd.difficulty.ensemble_scores`` (K models,
scored at one early epoch and averaged); each subset is chosen per class with ``jaxdd.prune``;
evaluation trains ``--eval-models`` fresh seeded models per subset (one after another) with ``jaxdd.train`` (DC SGD: lr
0.01, momentum 0.9, weight decay 5e-4, batch 256, lr x0.1 at half) for the same number of epochs
whatever the subset size, and tests on the full test split. Writes JSON (config, rows, timings)
and prints a table; a markdown table goes next to the JSON (``.md``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np


def run(args) -> int:
    """The experiment with the settings ``args`` (fields of ``jaxdd/configs/data_diet_fmnist.py``)."""
    from run import write_markdown
    from jaxdd.data import load_dataset
    from jaxdd.difficulty import ensemble_scores
    from jaxdd.models import create_network
    from jaxdd.prune import prune_dataset, select_indices
    from jaxdd.train import TrainConfig, Trainer, evaluate_accuracy, fit
    from jaxdd.utils.io import format_table, save_npz, write_json

    t_start = time.time()

    full = load_dataset(args.dataset, data_dir=args.data_dir, progress=False)
    if args.train_per_class:
        frac = args.train_per_class / full.class_counts().min()
        pool_idx = select_indices(np.zeros(len(full.y_train)), min(frac, 1.0), "random", full.y_train, seed=args.seed)
        ds = full.subset(pool_idx, name=f"{full.name}-pool{args.train_per_class}")
    else:
        ds = full
    net = create_network(args.model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    key = jax.random.key(args.seed)
    k_score, k_eval = jax.random.split(key)

    t0 = time.time()
    res = ensemble_scores(net, ds.x_train, ds.y_train, k_score, score=args.score, num_models=args.score_models,
                          epochs=args.score_epochs)
    score_s = time.time() - t0
    print(f"scored {len(ds.y_train)} examples with {args.score} from {args.score_models} models x "
          f"{args.score_epochs} epochs in {score_s:.0f} s (train acc {res.train_acc[-1].mean():.3f})")
    out = Path(args.out)
    save_npz(out.with_suffix(".scores.npz"), scores=res.scores, indices=ds.original_indices, labels=ds.y_train)

    cfg = TrainConfig(epochs=args.eval_epochs)
    trainer = Trainer(net, cfg)
    fractions = [float(f) for f in args.fractions.split(",") if f]
    orders = [o for o in args.orders.split(",") if o]
    runs = [(f, o) for f in fractions for o in orders] + ([] if args.no_full else [(1.0, "full")])
    rows = []
    for i, (f, order) in enumerate(runs):
        sub = ds if order == "full" else prune_dataset(ds, res.scores, f, order, seed=args.seed)
        t0 = time.time()
        accs = []
        for m in range(args.eval_models):  # one model at a time: faster than vmapped models on XLA CPU
            k_run = jax.random.fold_in(jax.random.fold_in(k_eval, i), m)
            state = trainer.init(jax.random.fold_in(k_run, 0), 1)
            state, _ = fit(trainer, state, sub.x_train, sub.y_train, jax.random.fold_in(k_run, 1),
                           desc=f"{order} {f:g} model {m}")
            accs.append(evaluate_accuracy(net, state.variables, ds.x_test, ds.y_test)[0] * 100)
        acc = np.array(accs)
        rows.append({"fraction": f, "order": order, "train size": int(len(sub.y_train)),
                     "acc mean": float(acc.mean()), "acc std": float(acc.std()), "accs": acc.round(2).tolist(),
                     "seconds": round(time.time() - t0, 1)})
        print(format_table(rows[-1:], ["fraction", "order", "train size", "acc mean", "acc std", "seconds"]))

    cols = ["fraction", "order", "train size", "acc mean", "acc std", "seconds"]
    print(format_table(rows, cols))
    config = {**vars(args), "pool_size": int(len(ds.y_train)), "test_size": int(len(ds.y_test)),
              "score_config": res.config, "score_seconds": round(score_s, 1),
              "total_seconds": round(time.time() - t_start, 1),
              "command": " ".join(["python", *sys.argv])}
    write_json(out, {"config": config, "rows": rows})
    md = ["| kept | " + " | ".join(orders) + " |", "|---|" + "---|" * len(orders)]
    for f in fractions:
        cells = [next(f"{r['acc mean']:.2f} ± {r['acc std']:.2f}" for r in rows if r["fraction"] == f and r["order"] == o)
                 for o in orders]
        md.append(f"| {f:.0%} | " + " | ".join(cells) + " |")
    full_row = [r for r in rows if r["order"] == "full"]
    if full_row:
        md.append(f"| 100% | {full_row[0]['acc mean']:.2f} ± {full_row[0]['acc std']:.2f} (full pool) |" +
                  " |" * (len(orders) - 1))
    write_markdown(out.with_suffix(".md"), "\n".join(md) + "\n")
    print(f"wrote {out}, {out.with_suffix('.md')} ({config['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    from run import legacy_main

    sys.exit(legacy_main("data_diet_fmnist"))
