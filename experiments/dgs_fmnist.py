"""DGS on Fashion-MNIST (issue 6): difficulty-guided sampling vs random selection from the same
pool vs the best single distillation run.

For every IPC: build pools of 5 x IPC candidates per class from (a) random real images and (b) DM
runs with different seeds (``jaxdd.sample.pool``); score pool and real training images with one
difficulty classifier (ConvNet trained on the real data); choose IPC images per class by DGS with
each target (real, uniform, hill, slope, cliff) and by uniform random choice (several draws);
evaluate every set with the same evaluation key (same network inits and data orders: a paired
comparison) under the ``dc`` preset (``jaxdd.evaluate.evaluate_set``).

    python experiments/dgs_fmnist.py --ipc 1 10 --out runs/dgs_fmnist

Every stage is cached in ``--out`` (classifier, scores, pools, one JSON per evaluated set), so a
killed run continues where it stopped. Prints a table and writes ``results.json`` and
``results.md`` (the table with the config).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxdd.data.registry import load_dataset
from jaxdd.evaluate import evaluate_set
from jaxdd.sample import dgs_select, random_select
from jaxdd.difficulty.classifier import load_or_train_classifier
from jaxdd.sample.pool import build_distill_pool, load_pool, real_pool
from jaxdd.train import TrainConfig
from jaxdd.utils.io import format_table, read_json, save_npz, write_json

TARGETS = ("real", "uniform", "hill", "slope", "cliff")


def stratified_subset(key, labels: np.ndarray, size: int) -> np.ndarray:
    """``size`` training indices, the same number from every class (random within a class)."""
    classes = np.unique(labels)
    per = size // len(classes)
    keys = jax.random.split(key, len(classes))
    return np.sort(np.concatenate([np.asarray(jax.random.permutation(k, np.flatnonzero(labels == c)))[:per]
                                   for k, c in zip(keys, classes)]))


def run(args) -> int:
    """The experiment with the settings ``args`` (fields of ``jaxdd/configs/dgs_fmnist.py``)."""
    from run import as_list, write_markdown

    args.ipc = as_list(args.ipc)
    args.pools = as_list(args.pools)
    out = Path(args.out)
    config = {"script": "experiments/dgs_fmnist.py", "argv": sys.argv[1:], **vars(args)}
    t_start = time.time()
    ds = load_dataset(args.dataset)
    root = jax.random.key(args.seed)
    if args.test_size:
        keep = stratified_subset(jax.random.fold_in(root, 4), ds.y_test, args.test_size)
        ds = dataclasses.replace(ds, x_test=ds.x_test[keep], y_test=ds.y_test[keep])

    # ---- difficulty classifier and real-data scores (cached)
    t0 = time.time()
    clf_ds = ds
    if args.clf_train_size:
        clf_ds = ds.subset(stratified_subset(jax.random.fold_in(root, 1), ds.y_train, args.clf_train_size))
    clf, trained = load_or_train_classifier(out / "classifier", jax.random.fold_in(root, 2), clf_ds,
                                            model=args.clf_model, config=TrainConfig(epochs=args.clf_epochs))
    scores_path = out / "real_scores.npz"
    if scores_path.exists():
        with np.load(scores_path) as z:
            real_idx, real_scores = z["indices"], z["scores"]
    else:
        real_idx = np.arange(len(ds.y_train))
        if args.real_score_size:
            real_idx = stratified_subset(jax.random.fold_in(root, 3), ds.y_train, args.real_score_size)
        real_scores = clf.scores(ds.x_train[real_idx], ds.y_train[real_idx], progress=True, desc="score real")
        save_npz(scores_path, indices=real_idx, scores=real_scores)
    real_labels = ds.y_train[real_idx]
    clf_acc = float(np.mean(clf.accuracy(ds.x_test, ds.y_test)))
    timing = {"classifier_and_real_scores_s": round(time.time() - t0, 1), "classifier_trained_now": trained}
    print(f"classifier test accuracy {100 * clf_acc:.2f}%, mean real difficulty {real_scores.mean():.4f}")

    rows = []
    for ipc in args.ipc:
        eval_key = jax.random.fold_in(root, 1000 + ipc)  # the same for every set of this IPC (paired)

        evals = out / f"ipc{ipc}" / "evals"
        done = {r.get("digest"): r for r in map(read_json, sorted(evals.glob("*.json")))} if evals.exists() else {}

        def evaluate(name: str, x, y) -> dict:
            """Evaluate a set once: cached by name, and identical sets (same images and labels,
            e.g. two targets that choose the same images) share one evaluation."""
            x, y = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int32)
            digest = hashlib.sha1(x.tobytes() + y.tobytes()).hexdigest()
            path = evals / f"{name}.json"
            if path.exists():
                return read_json(path)
            if digest in done:
                r = {**done[digest], "same_set_as": done[digest].get("name")}
            else:
                t = time.time()
                r = evaluate_set(x, y, ds, "convnet", "dc", key=eval_key, num_models=args.eval_models,
                                 epochs=args.eval_epochs, progress=True)
                r["seconds"] = round(time.time() - t, 1)
            r.update(name=name, digest=digest)
            done[digest] = r
            write_json(path, r)
            return r

        for kind in args.pools:
            t0 = time.time()
            pool_dir = out / f"ipc{ipc}" / f"pool_{kind}"
            if (pool_dir / "pool.npz").exists():
                pool = load_pool(pool_dir, ds)
            elif kind == "real":
                pool = real_pool(jax.random.fold_in(root, 10 + ipc), ds, args.pool_factor * ipc, config={"ipc": ipc})
                pool.save(pool_dir)
            else:
                pool = build_distill_pool("dm", ds, ipc, runs=args.pool_factor, seed=100 * ipc,
                                          iterations=args.dm_iterations, out=pool_dir / "runs",
                                          batch_real=args.dm_batch_real, config={"ipc": ipc})
                pool.save(pool_dir)
            pool_s = round(time.time() - t0, 1)
            pool_scores = clf.scores(pool.images, pool.labels)
            entries = []
            for target in TARGETS:
                res = dgs_select(jax.random.fold_in(root, 20 + ipc), pool_scores, pool.labels, ipc, target,
                                 real_scores=real_scores, real_labels=real_labels, num_classes=ds.num_classes)
                idx = res.flat_indices
                write_json(out / f"ipc{ipc}" / "selections" / f"{kind}_dgs_{target}.json", {
                    "pool_indices": idx, "b": res.b, "t": res.t, "lo": res.lo, "hi": res.hi,
                    "target_counts": res.target_counts, "chosen_counts": res.chosen_counts,
                    "pool_counts": res.pool_counts, "filled": res.filled, "scores": pool_scores[idx]})
                r = evaluate(f"{kind}_dgs_{target}", pool.images[idx], pool.labels[idx])
                entries.append((f"DGS {target}", [r["mean"]], r, pool_scores[idx].mean(), int(res.filled.sum())))
            rand = []
            for d in range(args.random_draws):
                idx = random_select(jax.random.fold_in(root, 30 + 100 * ipc + d), pool.labels, ipc,
                                    ds.num_classes).reshape(-1)
                rand.append((evaluate(f"{kind}_random{d}", pool.images[idx], pool.labels[idx]),
                             pool_scores[idx].mean()))
            entries.append(("random from pool", [r["mean"] for r, _ in rand], rand[0][0],
                            float(np.mean([m for _, m in rand])), "-"))
            if kind == "dm":
                singles = []
                for run in range(len(pool.sources)):
                    idx = np.flatnonzero(pool.run == run)
                    singles.append((evaluate(f"dm_run{run}", pool.images[idx], pool.labels[idx]),
                                    pool_scores[idx].mean()))
                best = max(singles, key=lambda s: s[0]["mean"])
                entries.append(("best single run", [best[0]["mean"]], best[0], best[1], "-"))
                entries.append(("mean of single runs", [s[0]["mean"] for s in singles], best[0],
                                float(np.mean([m for _, m in singles])), "-"))
            for name, means, r, mean_d, filled in entries:
                acc = float(np.mean(means))
                # spread: over the networks of one set, or over sets (random draws / runs)
                spread = float(np.std(means)) if len(means) > 1 else float(r["std"])
                rows.append({"ipc": ipc, "pool": kind, "selection": name, "acc": acc, "std": spread,
                             "sets": len(means), "mean d": f"{mean_d:.4f}", "filled": filled,
                             "pool build s": pool_s})
            print(format_table([r for r in rows if r["ipc"] == ipc and r["pool"] == kind]))

    elapsed = time.time() - t_start
    columns = ["ipc", "pool", "selection", "acc", "std", "sets", "mean d", "filled"]
    table = format_table(rows, columns)
    print(table)
    record = {"config": config, "classifier": {**clf.meta, "test_acc": clf_acc}, "timing": {
        **timing, "total_s": round(elapsed, 1)}, "rows": rows,
        "eval": {"preset": "dc", "epochs": args.eval_epochs, "models": args.eval_models}}
    write_json(out / "results.json", record)
    write_markdown(out / "results.md",
                   f"Command: `python {sys.argv[0]} {' '.join(config['argv'])}`\n\n"
                   f"Classifier test accuracy {100 * clf_acc:.2f}%; total {elapsed / 60:.1f} min.\n\n```\n{table}\n```\n")
    return 0


if __name__ == "__main__":
    from run import legacy_main

    sys.exit(legacy_main("dgs_fmnist"))
