"""What ``jaxdd prune`` and ``jaxdd baseline`` run: ``run_prune(config, out)`` keeps a fraction of the
training set by difficulty score; ``run_baseline(config, out)`` evaluates IPC real images per class
chosen at random, by k-Center greedy or by Herding (and the full training set). ``config`` holds the
fields of the command's ``--help`` (a mapping, ``ConfigDict`` or namespace)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np


def read_scores(path: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, dict]:
    """(scores, indices, labels, config) from a ``jaxdd score`` file."""
    from jaxdd.utils.io import as_path, load_npz

    if not as_path(path).is_file():
        raise FileNotFoundError(f"scores file {path} does not exist; write it with jaxdd score --out {path}")
    with load_npz(path) as z:
        if "scores" not in z.files:
            raise ValueError(f"{path} has no 'scores' array (it has {sorted(z.files)}); write it with jaxdd score")
        config = json.loads(str(z["config"])) if "config" in z.files else {}
        return (z["scores"], z["indices"] if "indices" in z.files else None,
                z["labels"] if "labels" in z.files else None, config)


def run_prune(config, out: str | os.PathLike | None = None) -> dict:
    """Keep ``keep`` of every class (or of the whole set with ``global_``) by ``order`` of the scores
    in ``config.scores``; writes the subset ``.npz`` and ``<out>.json``, prints the per-class table."""
    from jaxdd.data import load_dataset
    from jaxdd.prune.select import check_aligned, check_keep, prune_with_indices, save_subset
    from jaxdd.utils.config import as_fields
    from jaxdd.utils.io import as_path, check_output, format_table, write_json

    c = as_fields(config)
    check_keep(c.keep)
    out = as_path(out or c.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must name an .npz file, got {out}")
    check_output(out)
    scores, indices, labels, score_config = read_scores(c.scores)
    ds = load_dataset(c.dataset, data_dir=c.data_dir, zca=c.zca)
    check_aligned(ds, scores, indices, labels)
    sub, idx = prune_with_indices(ds, scores, c.keep, c.order, per_class=not c.global_, seed=c.seed)
    record = {"command": "prune", "dataset": ds.name, "dataset_arg": c.dataset, "data_dir": c.data_dir,
              "zca": c.zca, "scores": str(c.scores), "score_config": score_config, "keep": c.keep,
              "order": c.order, "per_class": not c.global_, "seed": c.seed}
    kept_scores = np.asarray(scores)[idx]
    save_subset(out, ds, sub, record, kept_scores)
    full_counts, kept_counts = ds.class_counts(), sub.class_counts()
    rows = []
    for k, name in enumerate(ds.class_names):
        s = kept_scores[sub.y_train == k]
        rows.append({"class": name, "total": int(full_counts[k]), "kept": int(kept_counts[k]),
                     "score min": float(s.min()) if len(s) else float("nan"),
                     "score max": float(s.max()) if len(s) else float("nan")})
    rows.append({"class": "all", "total": int(full_counts.sum()), "kept": int(kept_counts.sum()),
                 "score min": float(kept_scores.min()), "score max": float(kept_scores.max())})
    summary = {"config": record, "per_class": rows, "subset": str(out)}
    write_json(out.with_suffix(".json"), summary)
    print(format_table(rows))
    print(f"wrote {out} ({int(kept_counts.sum())} of {int(full_counts.sum())} examples) and {out.with_suffix('.json')}")
    return summary


def ints(text, what: str) -> list[int]:
    """``"1,10,50"`` (or a list) -> ``[1, 10, 50]``; positive integers only."""
    try:
        values = [int(v) for v in (text.split(",") if isinstance(text, str) else text) if str(v).strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers such as 1,10,50, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} must be positive integers such as 1,10,50, got {text!r}")
    return values


def default_baseline_out(dataset: str, select: str) -> Path:
    return Path("runs") / f"baseline-{os.path.basename(str(dataset).rstrip('/'))}-{select}.json"


def _save_set(folder, x, y, ds, config: dict):
    """A chosen real subset as a distilled-set folder (hard labels, no learned lr)."""
    from jaxdd.data.distilled import DistilledSet

    DistilledSet(images=np.asarray(x, np.float32), labels=np.asarray(y), num_classes=ds.num_classes, dataset=ds.name,
                 mean=np.asarray(ds.mean), std=np.asarray(ds.std), lr=None, zca=ds.zca is not None,
                 config=config).save(folder)
    return folder


def run_baseline(config, out: str | os.PathLike | None = None) -> dict:
    """Random-real (or k-Center / Herding, ``select``) sets at every ``ipc`` and, with ``full``, the
    full training set, each evaluated under ``preset``; writes the JSON record and a grid per set."""
    import jax
    from tqdm.auto import tqdm

    from jaxdd.data import load_dataset
    from jaxdd.evaluate import full_data, get_preset, random_real_baseline
    from jaxdd.evaluate.run import TABLE, mesh_of, result_row
    from jaxdd.models import create_network
    from jaxdd.utils.config import as_fields
    from jaxdd.utils.images import save_class_grid
    from jaxdd.utils.io import check_output, format_table, write_json

    c = as_fields(config)
    start = time.time()
    out = check_output(out or c.out or default_baseline_out(c.dataset, c.select))
    record = {"command": "baseline", **vars(c), "out": str(out)}
    preset = get_preset(c.preset)
    ipcs = ints(c.ipc, "--ipc")
    sampler = None
    if c.select == "random" and c.embed_epochs:
        raise ValueError("--embed-epochs sets the feature network of --select kcenter / herding; random real uses "
                         "no features (drop --embed-epochs or choose a selection)")
    if c.select != "random":
        from jaxdd.prune.coreset import coreset_sampler

        sampler = coreset_sampler(c.select, c.model, epochs=c.embed_epochs,
                                  feature_key=jax.random.key(c.seed))  # one feature network for every IPC
    ds = load_dataset(c.dataset, data_dir=c.data_dir, zca=c.zca)
    create_network(c.model, num_classes=ds.num_classes, input_shape=ds.image_shape)  # valid before training
    mesh = mesh_of(c.devices)
    key = jax.random.key(c.seed)
    results, rows, grids = [], [], []
    jobs = [("ipc", k) for k in ipcs] + ([("full", None)] if c.full else [])
    for i, (kind, ipc) in enumerate(tqdm(jobs, desc="baselines", leave=False)):
        k = jax.random.fold_in(key, i)
        if kind == "ipc":
            r, x, y = random_real_baseline(ds, ipc, c.model, preset, k, c.num_models, c.lr, mesh,
                                           epochs=c.epochs, return_set=True, sampler=sampler)
            grid = out.with_name(f"{out.stem}_{c.select}_ipc{ipc}.png")
            save_class_grid(grid, ds.denormalize(x), y, ds.num_classes, class_names=ds.class_names)
            grids.append(str(grid))
            r = {"set": f"{c.select} IPC {ipc}", **r, "grid": str(grid)}
            if c.save_sets:
                r["saved"] = str(_save_set(out.with_name(f"{out.stem}_{c.select}_ipc{ipc}"), x, y, ds, record))
        else:
            r = {"set": "full", **full_data(ds, c.model, preset, k, c.num_models, c.lr, mesh, epochs=c.epochs)}
        results.append(r)
        rows.append(result_row(r["set"], r))
    elapsed = time.time() - start
    print(format_table(rows, TABLE))  # before writing: a failed write does not lose the results
    summary = {"config": record, "dataset": ds.describe(), "results": results, "table": rows,
               "seconds": round(elapsed, 1)}
    write_json(out, summary)
    print(f"\nwrote {out}" + (f" and {len(grids)} image grid(s): {', '.join(grids)}" if grids else "")
          + f" ({elapsed:.1f} s)")
    return summary
