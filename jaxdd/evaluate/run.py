"""``run_eval(config, out)``: the evaluation of a distilled set that ``jaxdd eval`` runs: fresh
networks of every listed architecture trained on the set only and tested on the real test split
(mean ± std over models), optionally with DD-Ranking's LRS / ARS (:mod:`jaxdd.evaluate.robust`).
``config`` holds the fields of ``jaxdd eval --help`` (a mapping, ``ConfigDict`` or namespace)."""

from __future__ import annotations

import os
import time
from pathlib import Path

TABLE = ["set", "arch", "preset", "models", "epochs", "lr", "acc (%)"]


def default_eval_out(distilled: str | os.PathLike) -> Path:
    """``runs/eval-NAME.json``, NAME the set's folder (its parent's when the folder is ``distilled``)."""
    from jaxdd.utils.io import as_path

    path = as_path(distilled)
    name = path.parent.name if path.name == "distilled" and path.parent.name else path.name
    return Path("runs") / f"eval-{name or 'set'}.json"


def names(text) -> list[str]:
    """``"convnet, resnet18"`` (or a list) -> ``["convnet", "resnet18"]``."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return [a.strip() for a in items if a.strip()]


def result_row(name: str, r: dict) -> dict:
    """A table row of one evaluation result."""
    return {"set": name, "arch": r["arch"], "preset": r["preset"], "models": r["num_models"], "epochs": r["epochs"],
            "lr": f"{r['lr']:g}", "acc (%)": f"{r['mean']:.2f} ± {r['std']:.2f}"}


def mesh_of(devices: int | None):
    """A 1-D data mesh over ``devices`` devices, or ``None`` (one device)."""
    if devices is None:
        return None
    from jaxdd.utils.mesh import data_mesh

    return data_mesh(devices)


def run_eval(config, out: str | os.PathLike | None = None) -> dict:
    """Evaluate ``config.distilled`` on every network of ``config.model`` and write the JSON record to
    ``out`` (default ``config.out``, else :func:`default_eval_out`); prints the tables."""
    import jax

    from jaxdd.data import load_dataset
    from jaxdd.data.distilled import DistilledSet
    from jaxdd.evaluate.presets import get_preset
    from jaxdd.evaluate.protocol import evaluate_distilled
    from jaxdd.evaluate.robust import parse_metrics
    from jaxdd.models import create_network
    from jaxdd.utils.config import as_fields
    from jaxdd.utils.io import as_path, check_output, format_table, write_json

    c = as_fields(config)
    out = as_path(out or c.out or default_eval_out(c.distilled))
    start = time.time()
    check_output(out)
    preset = get_preset(c.preset)
    archs = names(c.model)
    metrics = parse_metrics(c.metrics) if c.metrics.strip() else []
    distilled = DistilledSet.load(c.distilled)
    ds = load_dataset(c.dataset or distilled.dataset, data_dir=c.data_dir, zca=c.zca or distilled.zca)
    for arch in archs:  # every name valid before the first network trains
        create_network(arch, num_classes=ds.num_classes, input_shape=ds.image_shape)
    result = evaluate_distilled(distilled, ds, archs, preset, jax.random.key(c.seed), c.num_models, c.lr,
                                mesh_of(c.devices), epochs=c.epochs)
    label = f"{as_path(c.distilled).name} (IPC {distilled.ipc})"
    rows = [result_row(label, r) for r in result["results"]]
    robust, robust_rows = _robust(c, metrics, distilled, ds, archs, preset, result["results"])
    elapsed = time.time() - start
    print(format_table(rows, TABLE))  # before writing: a failed write does not lose the evaluation
    if metrics:
        print("\n" + format_table(robust_rows, list(robust_rows[0])))
    record = {"config": {"command": "eval", **vars(c), "out": str(out)}, "dataset": ds.describe(), **result,
              "table": rows, **({"robust": robust, "robust_table": robust_rows} if metrics else {}),
              "seconds": round(elapsed, 1)}
    write_json(out, record)
    print(f"\nwrote {out} ({elapsed:.1f} s)")
    return record


def _robust(c, metrics, distilled, ds, archs, preset, results) -> tuple[list, list]:
    """DD-Ranking's LRS/ARS per architecture (reusing the plain evaluation as the set's own) and table rows."""
    import jax

    from jaxdd.evaluate.robust import robust_scores

    robust, rows = [], []
    if not metrics:
        return robust, rows
    for arch, syn_any in zip(archs, results):
        r = robust_scores(distilled, ds, metrics, arch, preset, jax.random.key(c.seed), c.num_models, lr=c.lr,
                          epochs=c.epochs, real_acc=c.real_acc, w=c.lrs_weight, gamma=c.ars_weight,
                          mesh=mesh_of(c.devices), syn_any=syn_any)
        robust.append({"arch": arch, **r})
        row = {"arch": arch}
        for m, parts in (("lrs", ("hlr", "ior", "lrs")), ("ars", ("gain_aug", "gain_naug", "ars"))):
            row.update({k.upper(): f"{r[m][k]['mean']:.4f} ± {r[m][k]['std']:.4f}" for k in parts if m in r})
        rows.append(row)
    return robust, rows
