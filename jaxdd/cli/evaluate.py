"""``jaxdd eval`` and ``jaxdd baseline``: score training sets with the evaluation protocol.

    jaxdd eval --distilled PATH [--dataset NAME] [--archs convnet,resnet18] [--preset dc] [--models 5]
               [--epochs E] [--lr LR] [--metrics lrs,ars [--real-acc ACC]] --out results.json
    jaxdd baseline [--dataset NAME] --ipc 1,10,50 [--full] [--select random|kcenter|herding] [--arch convnet]
                   [--preset dc] [--models N] [--epochs E] --out baseline.json

``eval`` trains fresh networks of every architecture on the distilled set only and tests them on
the real test set (mean ± std over models); ``--metrics lrs,ars`` adds DD-Ranking's label- and
augmentation-robust scores (``jaxdd.evaluate.robust``). ``baseline`` does the same for IPC random
real images per class, or IPC chosen by k-Center greedy / Herding on ConvNet features
(``--select``), and the full training set with ``--full``, and writes a PNG grid of each set next
to the JSON (``<out stem>_<select>_ipc<K>.png``). Presets: dc, dc-dsa (dsa, dm), mtt, datm, lr-grid.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from jaxdd.cli._common import add_dataset_args, add_seed_arg
from jaxdd.utils.io import check_output, format_table, write_json

TABLE = ["set", "arch", "preset", "models", "epochs", "lr", "acc (%)"]


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="dc", help="evaluation preset: dc, dc-dsa (dsa, dm), mtt, datm, lr-grid "
                   "(default dc)")
    p.add_argument("--models", type=int, default=None, help="networks trained per result (default: the preset's, 5)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's, 300 or 1000)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (overrides the preset and the set's lr)")
    p.add_argument("--devices", type=int, default=None, help="split every batch over this many devices (default: "
                   "one device)")
    p.add_argument("--out", required=True, help="results JSON file")
    add_seed_arg(p)


def register(subparsers) -> None:
    doc = __doc__.split("\n\n")
    description, raw = doc[0] + "\n\n" + doc[2], argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("eval", help="evaluate a distilled set (cross-architecture)",
                              description=description, formatter_class=raw)
    p.add_argument("--distilled", required=True, help="distilled-set folder (distilled.npz + distilled.json)")
    add_dataset_args(p, default=None)
    p._option_string_actions["--dataset"].help = "dataset name or path (default: the one the set was distilled from)"
    p.add_argument("--archs", default="convnet", help="comma-separated networks (default convnet)")
    p.add_argument("--metrics", default="", help="also DD-Ranking's robust scores: lrs (label-robust), ars "
                   "(augmentation-robust), e.g. lrs,ars; trains extra models on random real images of the same IPC "
                   "(and on the full data for lrs unless --real-acc)")
    p.add_argument("--real-acc", type=float, default=None, help="known full-data test accuracy in %% for LRS "
                   "(e.g. from jaxdd baseline --full); default: train on the full training split")
    p.add_argument("--lrs-weight", type=float, default=0.5, help="w in LRS: w IOR - (1 - w) HLR (default 0.5)")
    p.add_argument("--ars-weight", type=float, default=0.5, help="gamma in ARS (default 0.5)")
    _common_args(p)
    p.set_defaults(func=cmd_eval)

    b = subparsers.add_parser("baseline", help="random-real (and full-data) baselines under a preset",
                              description=description, formatter_class=raw)
    add_dataset_args(b)
    b.add_argument("--ipc", default="1,10,50", help="comma-separated images per class (default 1,10,50)")
    b.add_argument("--full", action="store_true", help="also train on the full training set")
    b.add_argument("--arch", default="convnet", help="network (default convnet)")
    b.add_argument("--select", default="random", choices=["random", "kcenter", "herding"],
                   help="how the IPC images per class are chosen: random real (default), k-Center greedy or Herding "
                   "on ConvNet features (jaxdd.prune.coreset)")
    b.add_argument("--embed-epochs", type=int, default=0, help="kcenter/herding: train the feature ConvNet on the "
                   "full training split for this many epochs first (default 0: a randomly initialised ConvNet)")
    b.add_argument("--save-sets", action="store_true", help="also save each chosen set as a distilled-set folder "
                   "<out stem>_<select>_ipc<K>/ (e.g. for jaxdd eval --metrics lrs,ars)")
    _common_args(b)
    b.set_defaults(func=cmd_baseline)


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers such as 1,10,50, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} must be positive integers such as 1,10,50, got {text!r}")
    return values


def _mesh(devices: int | None):
    if devices is None:
        return None
    from jaxdd.utils.mesh import data_mesh

    return data_mesh(devices)


def _row(name: str, r: dict) -> dict:
    return {"set": name, "arch": r["arch"], "preset": r["preset"], "models": r["num_models"], "epochs": r["epochs"],
            "lr": f"{r['lr']:g}", "acc (%)": f"{r['mean']:.2f} ± {r['std']:.2f}"}


def _config(args: argparse.Namespace, command: str) -> dict:
    return {"command": command, **{k: v for k, v in vars(args).items() if k not in ("func", "command")}}


def cmd_eval(args: argparse.Namespace) -> int:
    import jax

    from jaxdd.data import load_dataset
    from jaxdd.data.distilled import DistilledSet
    from jaxdd.evaluate import evaluate_distilled, get_preset
    from jaxdd.evaluate.robust import parse_metrics
    from jaxdd.models import create_network

    start = time.time()
    check_output(args.out)
    preset = get_preset(args.preset)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    metrics = parse_metrics(args.metrics) if args.metrics.strip() else []
    distilled = DistilledSet.load(args.distilled)
    name = args.dataset or distilled.dataset
    ds = load_dataset(name, data_dir=args.data_dir, zca=args.zca or distilled.zca)
    for arch in archs:  # every name valid before the first network trains
        create_network(arch, num_classes=ds.num_classes, input_shape=ds.image_shape)
    out = evaluate_distilled(distilled, ds, archs, preset, jax.random.key(args.seed), args.models, args.lr,
                             _mesh(args.devices), epochs=args.epochs)
    label = f"{Path(args.distilled).name} (IPC {distilled.ipc})"
    rows = [_row(label, r) for r in out["results"]]
    robust, robust_rows = _robust(args, metrics, distilled, ds, archs, preset, out["results"])
    elapsed = time.time() - start
    print(format_table(rows, TABLE))  # before writing: a failed write does not lose the evaluation
    if metrics:
        print("\n" + format_table(robust_rows, list(robust_rows[0])))
    write_json(args.out, {"config": _config(args, "eval"), "dataset": ds.describe(), **out, "table": rows,
                          **({"robust": robust, "robust_table": robust_rows} if metrics else {}),
                          "seconds": round(elapsed, 1)})
    print(f"\nwrote {args.out} ({elapsed:.1f} s)")
    return 0


def _robust(args, metrics, distilled, ds, archs, preset, results) -> tuple[list, list]:
    """DD-Ranking's LRS/ARS per architecture (reusing the plain evaluation as the set's own) and table rows."""
    import jax

    from jaxdd.evaluate.robust import robust_scores

    robust, rows = [], []
    if not metrics:
        return robust, rows
    for arch, syn_any in zip(archs, results):
        r = robust_scores(distilled, ds, metrics, arch, preset, jax.random.key(args.seed), args.models, lr=args.lr,
                          epochs=args.epochs, real_acc=args.real_acc, w=args.lrs_weight, gamma=args.ars_weight,
                          mesh=_mesh(args.devices), syn_any=syn_any)
        robust.append({"arch": arch, **r})
        row = {"arch": arch}
        for m, parts in (("lrs", ("hlr", "ior", "lrs")), ("ars", ("gain_aug", "gain_naug", "ars"))):
            row.update({k.upper(): f"{r[m][k]['mean']:.4f} ± {r[m][k]['std']:.4f}" for k in parts if m in r})
        rows.append(row)
    return robust, rows


def _save_set(folder: Path, x, y, ds, config: dict) -> Path:
    """A chosen real subset as a distilled-set folder (hard labels, no learned lr)."""
    import numpy as np

    from jaxdd.data.distilled import DistilledSet

    DistilledSet(images=np.asarray(x, np.float32), labels=np.asarray(y), num_classes=ds.num_classes, dataset=ds.name,
                 mean=np.asarray(ds.mean), std=np.asarray(ds.std), lr=None, zca=ds.zca is not None,
                 config=config).save(folder)
    return folder


def cmd_baseline(args: argparse.Namespace) -> int:
    import jax
    from tqdm.auto import tqdm

    from jaxdd.data import load_dataset
    from jaxdd.evaluate import full_data, get_preset, random_real_baseline
    from jaxdd.models import create_network
    from jaxdd.utils.images import save_class_grid

    start = time.time()
    out = check_output(args.out)
    preset = get_preset(args.preset)
    ipcs = _ints(args.ipc, "--ipc")
    sampler = None
    if args.select == "random" and args.embed_epochs:
        raise ValueError("--embed-epochs sets the feature network of --select kcenter / herding; random real uses "
                         "no features (drop --embed-epochs or choose a selection)")
    if args.select != "random":
        from jaxdd.prune.coreset import coreset_sampler

        sampler = coreset_sampler(args.select, args.arch, epochs=args.embed_epochs,
                                  feature_key=jax.random.key(args.seed))  # one feature network for every IPC
    ds = load_dataset(args.dataset, data_dir=args.data_dir, zca=args.zca)
    create_network(args.arch, num_classes=ds.num_classes, input_shape=ds.image_shape)  # valid before training
    mesh = _mesh(args.devices)
    key = jax.random.key(args.seed)
    results, rows, grids = [], [], []
    jobs = [("ipc", k) for k in ipcs] + ([("full", None)] if args.full else [])
    for i, (kind, ipc) in enumerate(tqdm(jobs, desc="baselines", leave=False)):
        k = jax.random.fold_in(key, i)
        if kind == "ipc":
            r, x, y = random_real_baseline(ds, ipc, args.arch, preset, k, args.models, args.lr, mesh,
                                           epochs=args.epochs, return_set=True, sampler=sampler)
            grid = out.with_name(f"{out.stem}_{args.select}_ipc{ipc}.png")
            save_class_grid(grid, ds.denormalize(x), y, ds.num_classes, class_names=ds.class_names)
            grids.append(str(grid))
            r = {"set": f"{args.select} IPC {ipc}", **r, "grid": str(grid)}
            if args.save_sets:
                r["saved"] = str(_save_set(out.with_name(f"{out.stem}_{args.select}_ipc{ipc}"), x, y, ds,
                                           _config(args, "baseline")))
        else:
            r = {"set": "full", **full_data(ds, args.arch, preset, k, args.models, args.lr, mesh, epochs=args.epochs)}
        results.append(r)
        rows.append(_row(r["set"], r))
    elapsed = time.time() - start
    print(format_table(rows, TABLE))  # before writing: a failed write does not lose the results
    write_json(out, {"config": _config(args, "baseline"), "dataset": ds.describe(), "results": results,
                     "table": rows, "seconds": round(elapsed, 1)})
    print(f"\nwrote {out}" + (f" and {len(grids)} image grid(s): {', '.join(grids)}" if grids else "")
          + f" ({elapsed:.1f} s)")
    return 0
