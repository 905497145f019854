"""DC, DSA and DM on Fashion-MNIST with the SDC penalty and on loss-pruned subsets.

For every IPC and method: the plain method, an SDC λ sweep (``--sdc``), and the method on
loss-pruned subsets (``--keep``: the easiest fraction of every class by the loss of a classifier
trained for ``--score-epochs`` epochs on the full training set, as ``jaxdd score --score loss`` +
``jaxdd prune --order easy``), each next to the random-real baseline under the same evaluation
(methods.md §2-4). Every run goes through ``jaxdd.distill.distill`` (checkpoints, resume,
difficulty tracking) into ``--out/<tag>``; finished runs are reused, killed ones resume.

    python experiments/run.py --config distill_fmnist                            # the CPU budget below
    python experiments/distill_fmnist.py --ipc 1 --methods dm --sdc 0 --keep 1   # one cell

The authors' budgets (1000 iterations for DC/DSA, 20,000 for DM, real batch 256, DC IPC 10 with
10 outer x 50 inner loops, evaluation 300 epochs (DC) / 1000 epochs with DSA, 5-20 models) do not
fit on a shared 2-core CPU; ``--iterations``, ``--batch-real``, ``--outer-loop-ipc10``,
``--inner-loop-ipc10``, ``--eval-epochs`` and ``--eval-models`` cut them down and every row records
what it used.
Settings: ``jaxdd/configs/distill_fmnist.py``. Writes ``--results`` (markdown) and the same rows as
JSON beside it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxdd.data import load_dataset
from jaxdd.distill import RealData, build_method, distill
from jaxdd.models import create_network
from jaxdd.utils.io import format_table, read_json, save_npz, write_json

PUBLISHED = {("dc", 1): 70.5, ("dc", 10): 82.3, ("dsa", 1): 70.6, ("dsa", 10): 84.6}  # reference-results.md


def per_ipc(values, ipcs: list[int], what: str, default) -> dict[int, int]:
    from run import as_list

    values = as_list(values)
    if values is None:
        return {k: default(k) for k in ipcs}
    if len(values) == 1:
        return {k: values[0] for k in ipcs}
    if len(values) != len(ipcs):
        raise ValueError(f"{what}: give one value or one per --ipc ({len(ipcs)})")
    return dict(zip(ipcs, values))


def loss_scores(ds, net, args, out: Path) -> np.ndarray:
    """Loss of a classifier trained for ``score_epochs`` on the full training set (cached)."""
    from jaxdd.difficulty.drivers import ensemble_scores

    path = out / f"loss_scores_e{args.score_epochs}_s{args.seed}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["scores"]
    t = time.time()
    res = ensemble_scores(net, ds.x_train, ds.y_train, jax.random.key(args.seed + 100), score="loss",
                          num_models=1, epochs=args.score_epochs)
    scores = np.asarray(res.scores)
    save_npz(path, scores=scores, indices=ds.original_indices, labels=ds.y_train, seconds=time.time() - t)
    print(f"loss scores: {time.time() - t:.0f} s ({args.score_epochs} epochs, 1 model)", flush=True)
    return scores


def plan(args) -> list[dict]:
    its = per_ipc(args.iterations, args.ipc, "--iterations", lambda k: 60 if k == 1 else 10)
    dm_its = per_ipc(args.dm_iterations, args.ipc, "--dm-iterations", lambda k: 100)
    cells = [(0.0, 1.0)] + [(s, 1.0) for s in args.sdc if s > 0] + [(0.0, k) for k in args.keep if k < 1]
    return [{"method": m, "ipc": ipc, "sdc": sdc, "keep": keep, "iterations": dm_its[ipc] if m == "dm" else its[ipc]}
            for ipc in args.ipc for sdc, keep in cells for m in args.methods]  # plain runs of every method first


def run_one(r: dict, ds, scores, net, args, out: Path) -> dict:
    from jaxdd.prune import prune_dataset

    overrides = dict(ipc=r["ipc"], sdc=r["sdc"], batch_real=args.batch_real, iterations=r["iterations"])
    tag = f"{r['method']}_ipc{r['ipc']}_sdc{r['sdc']:g}_keep{r['keep']:g}_it{r['iterations']}"
    if r["method"] in ("dc", "dsa") and r["ipc"] >= 10:
        overrides.update(outer_loop=args.outer_loop_ipc10, inner_loop=args.inner_loop_ipc10)
        tag += f"_loops{args.outer_loop_ipc10}x{args.inner_loop_ipc10}"
    folder = out / tag
    if (folder / "results.json").exists():
        check_reusable(read_json(folder / "results.json"), overrides, args, folder)
    else:
        train = ds if r["keep"] >= 1 else prune_dataset(ds, scores, r["keep"], "easy")
        method = build_method(r["method"], net, **overrides)
        checkpoint_every = max(1, r["iterations"] // 4)
        distill(method, RealData.from_dataset(train), ds, seed=args.seed, out=folder, resume=True,
                checkpoint_every=checkpoint_every, eval_final_epochs=args.eval_epochs,
                eval_final_models=args.eval_models,
                extra_config={"experiment": "distill_fmnist", "keep": r["keep"], "prune_order": "easy",
                              "score": f"loss after {args.score_epochs} epochs"})
    return row_of(read_json(folder / "results.json"), tag)


def check_reusable(res: dict, overrides: dict, args, folder: Path) -> None:
    """Refuse to report a finished run made with other settings than the ones asked for now."""
    from run import refuse_changed

    cfg, ev = res["config"], res["evaluation"]["results"][0]
    refuse_changed(str(folder), {**{k: cfg["method_config"].get(k) for k in overrides}, "eval_epochs": ev["epochs"],
                                 "eval_models": ev["num_models"], "seed": cfg["seed"], "network": cfg["network"]},
                   {**overrides, "eval_epochs": args.eval_epochs, "eval_models": args.eval_models, "seed": args.seed,
                    "network": args.model}, "pass the settings it was made with, or another --out")


def row_of(res: dict, tag: str) -> dict:
    """A table row from a run's results.json."""
    ev, cfg = res["evaluation"]["results"][0], res["config"]
    mc = cfg["method_config"]
    return {"method": cfg["method"], "ipc": mc["ipc"], "sdc": mc["sdc"], "keep": cfg.get("keep", 1.0),
            "iterations": cfg["iterations"], "tag": tag, "acc": ev["mean"], "std": ev["std"], "preset": ev["preset"],
            "epochs": ev["epochs"], "models": ev["num_models"], "seconds": res["seconds"], "grand": res["final_grand"],
            "batch_real": mc["batch_real"], "loops": f"{mc.get('outer_loop', '-')}/{mc.get('inner_loop', '-')}"}


def row_command(r: dict, out: Path, results: Path) -> str:
    """The command that makes (or reuses) exactly this row and writes its table to ``results`` (the
    table lists every run under ``out``, so a command without it would overwrite the default table)."""
    its = "--dm-iterations" if r["method"] == "dm" else "--iterations"
    cmd = (f"python experiments/distill_fmnist.py --ipc {r['ipc']} --methods {r['method']} --sdc {r['sdc']:g} "
           f"--keep {r['keep']:g} {its} {r['iterations']}")
    if r["method"] in ("dc", "dsa") and r["ipc"] >= 10:
        outer, inner = r["loops"].split("/")
        cmd += f" --outer-loop-ipc10 {outer} --inner-loop-ipc10 {inner}"
    return cmd + (f" --batch-real {r['batch_real']} --eval-epochs {r['epochs']} --eval-models {r['models']} "
                  f"--out {out} --results {results}")


def baseline(ipc: int, preset: str, ds, args, out: Path) -> dict:
    from jaxdd.evaluate import random_real_baseline

    path = out / f"random_ipc{ipc}_{preset}_e{args.eval_epochs}_m{args.eval_models}.json"
    if path.exists():
        return read_json(path)
    r = random_real_baseline(ds, ipc, args.model, preset, key=jax.random.key(args.seed + 7),
                             num_models=args.eval_models, epochs=args.eval_epochs)
    write_json(path, r)
    return r


def write_results(out: Path, args, path: Path) -> None:
    """The table of every finished run under ``out`` (so parallel invocations share one report)."""
    rows = [row_of(read_json(f), f.parent.name) for f in sorted(out.glob("*/results.json"))]
    rows.sort(key=lambda r: (r["ipc"], ["dc", "dsa", "dm"].index(r["method"]) if r["method"] in ("dc", "dsa", "dm")
                             else 9, r["keep"] < 1, r["keep"], r["sdc"]))
    base = {}
    for f in out.glob("random_ipc*.json"):
        b = read_json(f)
        base[(b["ipc"], b["preset"], b["epochs"], b["num_models"])] = b
    cols = ["method", "IPC", "SDC λ", "keep", "iters", "loops", "acc (%)", "published", "random real", "GraNd",
            "time (s)"]
    table = []
    for r in rows:
        b = base.get((r["ipc"], r["preset"], r["epochs"], r["models"]), {"mean": float("nan"), "std": float("nan")})
        table.append({"method": r["method"].upper(), "IPC": r["ipc"], "SDC λ": f"{r['sdc']:g}",
                      "keep": f"{100 * r['keep']:g} %", "iters": r["iterations"], "loops": r["loops"],
                      "acc (%)": f"{r['acc']:.2f} ± {r['std']:.2f}",
                      "published": PUBLISHED.get((r["method"], r["ipc"]), "–"),
                      "random real": f"{b['mean']:.2f} ± {b['std']:.2f}", "GraNd": f"{r['grand']:.3f}",
                      "time (s)": f"{r['seconds']:.0f}"})
    from run import markdown_table, write_markdown

    text = format_table(table, cols)
    for r in rows:
        r["command"] = row_command(r, out, path)
    header = (f"Fashion-MNIST ({args.dataset}), {args.model}; real batch {args.batch_real}/class; "
              f"evaluation: {args.eval_models} fresh networks x {args.eval_epochs} epochs (preset dc for DC, "
              f"dc-dsa for DSA/DM), full test set; pruning: easiest fraction per class by the loss of a "
              f"ConvNet trained {args.score_epochs} epochs. GraNd = mean per-example gradient norm of the final "
              f"synthetic set under 4 fresh networks. Each row is reproduced by `python experiments/distill_fmnist.py "
              f"--ipc IPC --methods METHOD --sdc λ --keep KEEP --iterations ITERS (--dm-iterations for DM) "
              f"[--outer-loop-ipc10 O --inner-loop-ipc10 I] --batch-real B --eval-epochs E --eval-models M "
              f"--out {out} --results {path}` with the row's values; `{path.with_suffix('.json').name}` holds every row's "
              f"exact command.")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path.with_suffix(".json"), {"rows": rows, "baselines": list(base.values())})
    write_markdown(path, "# Distillation on Fashion-MNIST (issue 4)\n\n" + header + "\n\n" + markdown_table(table, cols)
                   + "\n")
    print(text)


def run(args) -> int:
    """The experiment with the settings ``args`` (fields of ``jaxdd/configs/distill_fmnist.py``)."""
    from run import as_list

    args.ipc, args.methods, args.sdc, args.keep = (as_list(v) for v in (args.ipc, args.methods, args.sdc, args.keep))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    net = create_network(args.model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    runs = plan(args)
    scores = loss_scores(ds, net, args, out) if any(r["keep"] < 1 for r in runs) else None
    for r in runs:
        row = run_one(r, ds, scores, net, args, out)
        baseline(row["ipc"], row["preset"], ds, args, out)
        write_results(out, args, Path(args.results))
    return 0


if __name__ == "__main__":
    from run import legacy_main

    sys.exit(legacy_main("distill_fmnist"))
