"""``run_score(config, out)``: what ``jaxdd score`` runs: per-example difficulty scores of a dataset's
training examples from an ensemble trained here (or the model(s) in a checkpoint), written as
``scores.npz`` with a JSON summary, the per-class extremes grid and histograms. ``config`` holds the
fields of ``jaxdd score --help`` (a mapping, ``ConfigDict`` or namespace)."""

from __future__ import annotations

import json
import os
import time

import numpy as np


def epochs_list(text) -> list[int] | None:
    """``"0,5,10"`` (or a list) -> ``[0, 5, 10]``; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        return [int(v) for v in (text.split(",") if isinstance(text, str) else text) if str(v).strip()]
    except ValueError:
        raise ValueError(f"--score-epochs expects comma-separated integers, got {text!r}") from None


def run_score(config, out: str | os.PathLike | None = None) -> dict:
    """Score the training split as the settings say and write ``out`` (an ``.npz``) and its companions."""
    import jax

    from jaxdd.data import load_dataset
    from jaxdd.difficulty import drivers, plots
    from jaxdd.models import create_network
    from jaxdd.train import TrainConfig
    from jaxdd.utils.config import as_fields
    from jaxdd.utils.io import as_path, check_output, format_table, save_npz, write_json
    from jaxdd.utils.mesh import data_mesh

    c = as_fields(config)
    out = as_path(out or c.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must name an .npz file, got {out}")
    check_output(out)
    t0 = time.time()
    ds = load_dataset(c.dataset, data_dir=c.data_dir, zca=c.zca)
    net = create_network(c.model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    mesh = data_mesh(c.devices) if c.devices else None
    record = {"command": "score", "dataset": ds.name, "dataset_arg": c.dataset, "data_dir": c.data_dir,
              "zca": c.zca, "score": c.score, "model": c.model, "seed": c.seed, "batch_size": c.batch_size,
              "method": c.norm_method, "devices": c.devices or 1}
    if c.checkpoint:
        variables, meta = drivers.load_model(net, c.checkpoint, c.step)
        raw = drivers.score_models(net, variables, ds.x_train, ds.y_train, c.score, batch_size=c.batch_size,
                                   mesh=mesh, method=c.norm_method)[None]
        record.update(checkpoint=str(c.checkpoint), step=c.step, checkpoint_metadata=meta)
        epochs = []
    else:
        train = TrainConfig(lr=c.lr, batch_size=c.train_batch_size, schedule="constant")
        res = drivers.ensemble_scores(net, ds.x_train, ds.y_train, jax.random.key(c.seed), score=c.score,
                                      num_models=c.num_models, epochs=c.epochs,
                                      score_epochs=epochs_list(c.score_epochs), train_config=train,
                                      batch_size=c.batch_size, mesh=mesh, method=c.norm_method,
                                      checkpoint_dir=c.resume_dir)
        raw, epochs = res.raw, list(res.epochs)
        record.update(res.config)
        record["final_train_acc"] = res.train_acc[-1].tolist() if len(res.train_acc) else []
    scores = raw.mean(axis=(0, 1))
    record["seconds"] = round(time.time() - t0, 1)
    save_npz(out, scores=scores.astype(np.float32), indices=ds.original_indices, labels=ds.y_train,
             raw=raw.astype(np.float32), epochs=np.asarray(epochs, np.int32),
             config=np.asarray(json.dumps(record, default=str)))
    rows = plots.class_summary(scores, ds.y_train, ds.class_names)
    stem = out.with_suffix("")
    png = plots.save_extremes_grid(f"{stem}_extremes.png", ds, scores, per_class=c.per_class_png)
    hist = plots.save_class_histograms(f"{stem}_hist.png", scores, ds.y_train, ds.class_names,
                                       title=f"{c.score} on {ds.name}", xlabel=c.score)
    summary = {"config": record, "per_class": rows, "files": {"scores": str(out), "extremes_png": png,
                                                              "histogram_png": hist}}
    write_json(stem.with_suffix(".json"), summary)
    print(format_table(rows, ["class", "n", "mean", "median", "min", "max", "inf"]))
    print(f"wrote {out}, {stem.with_suffix('.json')}, {png}, {hist} ({record['seconds']} s)")
    return summary
