"""One distillation run from a config: ``run_distill(config, workdir)`` (what ``jaxdd distill`` calls).

The config's fields are the options of ``jaxdd distill`` (``get_config()`` holds their defaults;
``jaxdd/configs/*.py`` holds the configs of the reported experiments). ``budget="quick"`` fills the
settings left ``None`` with a few CPU minutes' worth (``QUICK``); ``"paper"`` keeps the authors'
settings (the method config's defaults and the evaluation preset's epochs / models).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import numpy as np

DEFAULT_METHOD = "dm"
# budget "quick": a few CPU minutes; settings given explicitly win. "paper": the authors' settings.
QUICK = {"iterations": 200, "batch_real": 64, "eval_epochs": 300, "eval_models": 3, "eval_every": 100}
PAPER = {"eval_every": 500}
#: config fields that are method settings (passed to the method config when not None)
METHOD_FIELDS = ("ipc", "iterations", "sdc", "sdc_mode", "init", "lr_img", "batch_real", "class_batch", "prior",
                 "match")


def get_config():
    """The defaults of every field (``jaxdd distill --help`` shows them)."""
    import ml_collections

    return ml_collections.ConfigDict({
        "method": DEFAULT_METHOD, "dataset": "embedded", "data_dir": None, "zca": False, "model": "convnet",
        "ipc": 1, "budget": "quick", "iterations": None, "sdc": None, "sdc_mode": None, "subset": None,
        "weights": None, "weight_temperature": 1.0, "init": None, "lr_img": None, "batch_real": None,
        "class_batch": None, "prior": None, "match": None, "settings": {}, "out": None, "resume": False,
        "checkpoint_every": 25, "track_every": None, "eval_every": None, "eval_epochs": None, "eval_models": None,
        "eval_preset": None, "no_eval": False, "devices": None, "no_progress": False, "seed": 0})


def complete_config(config: Mapping[str, Any]) -> dict:
    """``config`` over the defaults as a plain dict; an unknown field raises (naming the known ones)."""
    from jaxdd.utils.config import ConfigError

    base = get_config().to_dict()
    given = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    unknown = sorted(set(given) - set(base))
    if unknown:
        raise ConfigError(f"unknown distill config field(s) {', '.join(unknown)}; known: {', '.join(sorted(base))}")
    return {**base, **given}


def load_weights(path: str, real_dataset, temperature: float) -> np.ndarray:
    """Per-example weights ``exp(-z/T)`` for the (possibly pruned) training set from a scores file
    (``scores`` [and ``train_indices``], as written by ``jaxdd score`` / ``jaxdd prune``), aligned to
    ``real_dataset``'s examples by their original index."""
    from jaxdd.difficulty.weights import difficulty_weights

    from jaxdd.utils.io import load_npz

    with load_npz(path) as z:
        if "scores" not in z.files:
            raise ValueError(f"{path} has no 'scores' array; pass the .npz written by `jaxdd score` or `jaxdd prune`")
        scores = np.asarray(z["scores"], np.float64)
        idx = z["train_indices"] if "train_indices" in z.files else np.arange(len(scores))
    pos = {int(o): i for i, o in enumerate(idx)}
    missing = [int(o) for o in real_dataset.original_indices if int(o) not in pos]
    if missing:
        raise ValueError(f"{path} has no score for training examples {missing[:5]} of {real_dataset.name}; score "
                         "the same dataset (or a superset of the subset)")
    s = scores[[pos[int(o)] for o in real_dataset.original_indices]]
    return np.asarray(difficulty_weights(s, real_dataset.y_train, real_dataset.num_classes, temperature))


def run_distill(config: Mapping[str, Any], workdir: str | os.PathLike | None = None, *, verbose: bool = True):
    """Distil with ``config`` (fields: ``get_config()``) into ``workdir`` (default ``config.out``, else
    ``runs/distill-METHOD-DATASET-ipcK``); returns ``(method, result)`` with the driver's
    :class:`~jaxdd.distill.driver.DistillResult`, and prints a summary when ``verbose``."""
    from jaxdd.data import load_dataset
    from jaxdd.distill.base import RealData, build_method, method_spec
    from jaxdd.distill.driver import DistillConfig, distill, evaluation_rows
    from jaxdd.models import create_network
    from jaxdd.utils.config import parse_settings
    from jaxdd.utils.io import as_path, format_table, require_local

    c = complete_config(config)
    require_local(c["prior"], "--prior", "the diffusion prior's loader (jaxdd.generative.load_prior)")
    ds = load_dataset(c["dataset"], data_dir=c["data_dir"], zca=c["zca"])
    train = ds
    if c["subset"]:
        from jaxdd.prune import load_subset

        train = load_subset(ds, c["subset"])
    weights = load_weights(c["weights"], train, c["weight_temperature"]) if c["weights"] else None
    real = RealData.from_dataset(train, weights=weights)
    net = create_network(c["model"], num_classes=ds.num_classes, input_shape=ds.image_shape)

    overrides = {f: c[f] for f in METHOD_FIELDS if c[f] is not None}
    fields = {f.name for f in dataclasses.fields(method_spec(c["method"]).config_cls)}
    if c["budget"] not in ("quick", "paper"):
        raise ValueError(f"budget must be quick or paper, got {c['budget']!r}")
    for name, value in (QUICK if c["budget"] == "quick" else PAPER).items():
        if c[name] is not None:
            continue  # settings given explicitly win
        if name in METHOD_FIELDS:  # a method setting: only where the method has it
            if name in fields:
                overrides[name] = value
        else:
            c[name] = value
    overrides.update(parse_settings(c["settings"]))
    mesh = None
    if c["devices"] is not None:
        from jaxdd.utils.mesh import data_mesh

        mesh = data_mesh(c["devices"])
    method = build_method(c["method"], net, mesh=mesh, dataset=ds, **overrides)
    out = as_path(workdir or c["out"] or f"runs/distill-{c['method']}-{ds.name}-ipc{method.config.ipc}")
    extra = {"command": "jaxdd distill", "budget": c["budget"], "subset": c["subset"], "weights": c["weights"],
             "weight_temperature": c["weight_temperature"] if c["weights"] else None, "zca": c["zca"]}
    run = DistillConfig(seed=c["seed"], checkpoint_every=c["checkpoint_every"], track_every=c["track_every"],
                        eval_every=c["eval_every"], final_eval=not c["no_eval"], eval_preset=c["eval_preset"],
                        eval_final_epochs=c["eval_epochs"], eval_final_models=c["eval_models"],
                        progress=not c["no_progress"], extra_config=extra)
    result = distill(method, real, ds, run, out=out, resume=c["resume"], mesh=mesh)
    if verbose:
        print(f"{method.name}: {method.config.iterations} iterations on {ds.name} ({len(train.y_train)} real "
              f"images), IPC {method.config.ipc}, {result.seconds:.1f} s"
              + (f" (resumed at {result.resumed_from})" if result.resumed_from is not None else ""))
        g = [h for h in result.history if "grand" in h]
        print(f"synthetic-set GraNd (fresh networks): {g[0]['grand']:.3f} at iteration {g[0]['iteration']} -> "
              f"{g[-1]['grand']:.3f} at {g[-1]['iteration']}")
        if result.evaluation is not None:
            print(format_table(evaluation_rows(method.name, method.config, result.evaluation)))
        print(f"wrote {out}/distilled/, results.json, history.json, grid.png, difficulty.png, loss.png, checkpoints/")
    return method, result
