"""``jaxdd sample``: choose a distilled set from a pool by difficulty-guided sampling (DGS).

    jaxdd sample --pool pool/ --dataset NAME --ipc K --target real|uniform|hill|slope|cliff|random|FILE
                 --out distilled/ [--classifier DIR] [--clf-model convnet] [--clf-epochs 5] [--seed 0]

A difficulty classifier is loaded from ``--classifier`` (or trained on the real data and saved
there; default ``OUT/classifier``), scores the pool and the real training images (``d = 1 - p(y|x)``)
and DGS chooses IPC images per class (``random`` = uniform random choice from the same pool, the
baseline). Writes to OUT: the distilled set (``distilled.npz`` + ``distilled.json``),
``chosen.png`` (one row per class), ``difficulty.png`` (histograms of the transformed difficulty of
pool, real data and chosen set), ``scores.npz`` (pool and real scores) and ``sample.json``
(config, per-class table).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from jaxdd.cli._common import add_dataset_args, add_seed_arg
from jaxdd.utils.io import check_output, format_table, save_npz, write_json


def register(subparsers) -> None:
    p = subparsers.add_parser("sample", help="choose a distilled set from a pool by difficulty (DGS)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", required=True, help="pool folder (jaxdd pool), distilled-set folder or .npz "
                   "with images and labels")
    add_dataset_args(p)
    p.add_argument("--ipc", type=int, required=True, help="images per class to choose")
    p.add_argument("--target", default="real", help="real | uniform | hill | slope | cliff | random | a file of "
                   "10 bin weights (.json list, .npy, text); default real")
    p.add_argument("--out", required=True, help="output folder for the distilled set")
    p.add_argument("--classifier", default=None, help="difficulty classifier folder: loaded if it exists, "
                   "else trained and saved there (default OUT/classifier)")
    p.add_argument("--clf-model", default="convnet", help="classifier network (default convnet)")
    p.add_argument("--clf-epochs", type=int, default=None, help="classifier training epochs (default 5)")
    p.add_argument("--clf-models", type=int, default=1, help="ensemble size of the classifier (default 1)")
    p.add_argument("--grid-size", type=int, default=None, help="(b, t) search grid {0..G-1}^2 (default IPC // 2)")
    add_seed_arg(p)
    p.set_defaults(func=cmd_sample)


def _counts(row) -> str:
    return " ".join(str(int(v)) for v in row)


def cmd_sample(args: argparse.Namespace) -> int:
    import jax

    from jaxdd.data.registry import load_dataset
    from jaxdd.sample import check_pool_classes, dgs_select, fit_transforms, load_target, random_select
    from jaxdd.difficulty.classifier import DEFAULT_EPOCHS, load_or_train_classifier
    from jaxdd.sample.pool import load_pool
    from jaxdd.train import TrainConfig
    from jaxdd.utils.images import histogram_figure, save_class_grid, save_figure

    out = check_output(args.out, folder=True)
    config = {"command": "sample", **{k: v for k, v in vars(args).items() if k != "func"}}
    start = time.time()
    ds = load_dataset(args.dataset, data_dir=args.data_dir, zca=args.zca)
    target = "random" if args.target == "random" else load_target(args.target, num_classes=ds.num_classes)
    pool = load_pool(args.pool, ds)
    check_pool_classes(pool.labels, ds.num_classes, args.ipc, ds.class_names)  # before training anything
    key = jax.random.key(args.seed)
    k_clf, k_sel = jax.random.split(key)
    clf_dir = Path(args.classifier) if args.classifier else out / "classifier"
    clf_cfg = TrainConfig(epochs=args.clf_epochs if args.clf_epochs is not None else DEFAULT_EPOCHS)
    clf, trained = load_or_train_classifier(clf_dir, k_clf, ds, model=args.clf_model, config=clf_cfg,
                                            num_models=args.clf_models)
    test_acc = float(np.mean(clf.accuracy(ds.x_test, ds.y_test)))
    pool_scores = clf.scores(pool.images, pool.labels, progress=True, desc="score pool")
    real_scores = clf.scores(ds.x_train, ds.y_train, progress=True, desc="score real")
    save_npz(out / "scores.npz", pool=pool_scores, pool_labels=pool.labels, real=real_scores, real_labels=ds.y_train)

    common = dict(real_scores=real_scores, real_labels=ds.y_train, num_classes=ds.num_classes,
                  grid_size=args.grid_size, class_names=ds.class_names)
    tf = fit_transforms(pool_scores, pool.labels, args.ipc, **common)
    if isinstance(target, str) and target == "random":
        indices, dgs = random_select(k_sel, pool.labels, args.ipc, ds.num_classes, ds.class_names), None
    else:
        dgs = dgs_select(k_sel, pool_scores, pool.labels, args.ipc, target, **common)
        indices = dgs.indices

    rows = []
    for c in range(ds.num_classes):
        chosen_bins = np.minimum((tf.pool_transformed[indices[c]] * 10).astype(int), 9)
        rows.append({"class": c, "name": ds.class_names[c], "pool": int(pool.class_sizes()[c]),
                     "b": int(tf.search.b[c]), "t": int(tf.search.t[c]),
                     "lo": f"{float(tf.search.lo[c]):.3g}", "hi": f"{float(tf.search.hi[c]):.3g}",
                     "target": _counts(dgs.target_counts[c]) if dgs is not None else "-",
                     "chosen": _counts(np.bincount(chosen_bins, minlength=10)),
                     "filled": int(dgs.filled[c].sum()) if dgs is not None else "-",
                     "mean d": f"{float(pool_scores[indices[c]].mean()):.4f}"})
    selection = {"target": args.target if isinstance(target, str) else target, "ipc": args.ipc,
                 "classifier": {**clf.meta, "folder": str(clf_dir), "trained_now": trained, "test_acc": test_acc},
                 "per_class": rows, "pool": pool.describe() | {"path": str(args.pool)}}
    distilled = pool.to_distilled(indices.reshape(-1), config={"method": "dgs", **config, "selection": {
        k: v for k, v in selection.items() if k != "pool"}, "pool_sources": list(pool.sources)})
    distilled.save(out)

    view = ds.denormalize if ds.zca is not None else (lambda x: np.clip(x * ds.std + ds.mean, 0, 1))
    save_class_grid(out / "chosen.png", view(distilled.images), distilled.labels, ds.num_classes,
                    class_names=ds.class_names)
    fig = histogram_figure({"pool": tf.pool_transformed, "real": tf.real_transformed,
                            "chosen": tf.pool_transformed[indices.reshape(-1)]}, bins=np.linspace(0, 1, 11),
                           title=f"{ds.name} IPC {args.ipc}, target {args.target}",
                           xlabel="transformed difficulty T(1 - p(y|x)) (per-class transform)")
    save_figure(out / "difficulty.png", fig)

    elapsed = time.time() - start
    write_json(out / "sample.json", {"config": config, **selection, "seconds": round(elapsed, 1),
                                     "outputs": ["distilled.npz", "distilled.json", "chosen.png", "difficulty.png",
                                                 "scores.npz"]})
    print(format_table(rows, ["class", "name", "pool", "b", "t", "lo", "hi", "target", "chosen", "filled",
                              "mean d"]))
    print(f"\nclassifier test accuracy {100 * test_acc:.2f}% ({'trained' if trained else 'loaded'}: {clf_dir}); "
          f"mean difficulty pool {pool_scores.mean():.4f}, real {real_scores.mean():.4f}, "
          f"chosen {pool_scores[indices.reshape(-1)].mean():.4f}")
    print(f"wrote {out}/distilled.npz, distilled.json, chosen.png, difficulty.png, scores.npz, sample.json "
          f"({elapsed:.1f} s)")
    return 0
