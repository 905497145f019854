"""Random-real baselines and full-data accuracy on Fashion-MNIST under an evaluation preset.

For every IPC: IPC random real training images per class (``jaxdd.evaluate.random_real_baseline``),
fresh ConvNets trained on them only and tested on the real test set (mean ± std over models); then
the same networks trained on the full training set (``jaxdd.evaluate.full_data``). This is the
reference row every distilled set is compared with (methods.md §0: "always report the random-real
baseline under the same preset").

    python experiments/run.py --config baselines_fmnist                   # the full protocol (dc: 300 epochs)
    python experiments/baselines.py --ipc 1 10 --models 2 --epochs 50 --full-epochs 5 --train-size 10000

The full protocol is expensive on a CPU (the full-data rows dominate: 300 epochs over 60,000 images);
``--models``, ``--epochs``, ``--full-epochs``, ``--full-models`` and ``--train-size`` (a class-balanced
random subset for the full-data row) cut it down, and every row is recorded with the settings that made
it. Rows are cached in ``--out`` (one JSON each, reused when the settings match), so a killed run
resumes. Settings: ``jaxdd/configs/baselines_fmnist.py``. Writes ``results.json``, ``results.md`` and a
PNG grid per random set.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxdd.data import load_dataset, random_real
from jaxdd.evaluate import full_data, get_preset, random_real_baseline
from jaxdd.utils.images import save_class_grid
from jaxdd.utils.io import format_table, write_report


def run(args) -> int:
    """The experiment with the settings ``args`` (fields of ``jaxdd/configs/baselines_fmnist.py``)."""
    from run import as_list, cached

    args.ipc = as_list(args.ipc)
    out = Path(args.out)
    config = {"script": "experiments/baselines.py", **vars(args)}
    preset = get_preset(args.preset)
    t_start = time.time()
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    root = jax.random.key(args.seed)
    rows, results = [], []

    for ipc in args.ipc:
        settings = {"ipc": ipc, "arch": args.arch, "preset": preset.name, "models": args.models,
                    "epochs": args.epochs, "seed": args.seed, "dataset": ds.describe()}

        def compute(ipc=ipc):
            t = time.time()
            r, x, y = random_real_baseline(ds, ipc, args.arch, preset, jax.random.fold_in(root, ipc), args.models,
                                           epochs=args.epochs, return_set=True)
            save_class_grid(out / f"random_ipc{ipc}.png", ds.denormalize(x), y, ds.num_classes)
            return {**r, "seconds": round(time.time() - t, 1)}

        r = cached(out / f"ipc{ipc}.json", settings, compute)
        results.append({"set": f"random IPC {ipc}", **r})

    if not args.no_full:
        models = args.full_models or args.models
        epochs = args.full_epochs if args.full_epochs is not None else args.epochs
        settings = {"full": True, "arch": args.arch, "preset": preset.name, "models": models, "epochs": epochs,
                    "train_size": args.train_size, "seed": args.seed, "dataset": ds.describe()}

        def run_full():
            t = time.time()
            train = ds
            if args.train_size:  # a class-balanced random subset (the random-real sampler, train_size / C per class)
                per_class = args.train_size // ds.num_classes
                x, y = random_real(jax.random.fold_in(root, 10_000), ds, per_class)
                train = dataclasses.replace(ds, x_train=np.asarray(x), y_train=np.asarray(y), train_indices=None)
            r = full_data(train, args.arch, preset, jax.random.fold_in(root, 20_000), models, epochs=epochs)
            return {**r, "seconds": round(time.time() - t, 1)}

        r = cached(out / "full.json", settings, run_full)
        results.append({"set": f"full ({r['train_size']} images)", **r})

    for r in results:
        rows.append({"set": r["set"], "arch": r["arch"], "preset": r["preset"], "models": r["num_models"],
                     "epochs": r["epochs"], "acc (%)": f"{r['mean']:.2f} ± {r['std']:.2f}",
                     "seconds": r.get("seconds", "")})
    table = format_table(rows)
    elapsed = time.time() - t_start
    write_report(out, f"Baselines on {ds.name}", table, {"config": config, "dataset": ds.describe(), "results": results,
                                                        "table": rows, "seconds": round(elapsed, 1)})
    print(table)
    print(f"\nwrote {out}/results.json, results.md ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    from run import legacy_main

    sys.exit(legacy_main("baselines_fmnist"))
