"""MTT and DATM (with and without SDC) on Fashion-MNIST with a CPU budget, against the random-real baseline.

    python experiments/run.py --config mtt_fmnist                           # the defaults below
    python experiments/mtt_fmnist.py --ipc 1 --iterations-ipc1 20 --eval-epochs 50 --out /tmp/mtt_smoke

Network: ``--arch`` (default ``convnet-w32``, the reference ConvNet at width 32) for the experts, the
students and every evaluation, because width 128 costs ~12x the FLOPs and the grid below would not
fit a shared 2-core CPU; the random-real baseline uses the same network and preset.

Stages (each cached in ``--out``, so a killed run resumes where it stopped):

1. a class-balanced random subset of the training split (``--train-size``, default 5,000 images);
   experts, distillation real data and the random-real baseline all come from it; the test split is
   the full Fashion-MNIST test set;
2. ``--experts`` expert trajectories of ``--epochs`` epochs (``jaxdd.experts.train_experts``; SGD lr
   0.01, no momentum, DSA, as MTT);
3. for every IPC, MTT and DATM, each without SDC and with SDC (``--sdc``): ``jaxdd.distill.distill``
   with ``--iterations-ipc1`` / ``--iterations-ipc10`` iterations (at IPC 10 also ``--syn-steps-ipc10``
   student steps on ``--batch-syn-ipc10`` images), the authors' defaults otherwise
   (``trajectory_configs``: the Fashion-MNIST rows are ours, as no paper reports them), then the
   final evaluation under the method's preset (``mtt``: the learned lr; ``datm``: soft labels) with
   ``--eval-epochs`` epochs and ``--eval-models`` networks;
4. the random-real baseline under ``mtt`` with lr 0.01 and the same epochs and models (the learned
   lr of a real set is undefined; 0.01 is the experts' and the ``dc`` preset's lr);
5. ``--compare`` methods (default DM) on the same subset and network with the same number of
   iterations, their authors' settings otherwise, evaluated under their own preset (``dc-dsa`` for
   DM) with the same epochs and models: the matching-based results beside the trajectory ones.

Settings: ``jaxdd/configs/mtt_fmnist.py``. Writes ``results.json`` and ``results.md`` (table + config) in
``--out``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxdd.data import load_dataset
from jaxdd.distill import RealData, build_method, distill
from jaxdd.evaluate import random_real_baseline
from jaxdd.experts import ExpertConfig, train_experts
from jaxdd.models import create_network
from jaxdd.prune import load_subset, save_subset, select_indices
from jaxdd.utils.io import format_table, read_json, write_report


def subset(ds, out: Path, size: int, seed: int):
    path = out / f"fmnist_random{size // 1000}k.npz" if size % 1000 == 0 else out / f"subset_{size}.npz"
    if not path.exists():
        idx = select_indices(np.zeros(len(ds.y_train)), size / len(ds.y_train), "random", ds.y_train, per_class=True,
                             seed=seed)
        save_subset(path, ds, ds.subset(idx), {"what": "class-balanced random subset (MTT experiment)", "seed": seed,
                                              "size": size})
    return load_subset(ds, path), path


def run(args) -> int:
    """The experiment with the settings ``args`` (fields of ``jaxdd/configs/mtt_fmnist.py``)."""
    from run import as_list, cached

    args.ipc, args.methods, args.compare = as_list(args.ipc), as_list(args.methods), as_list(args.compare) or []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {"script": "experiments/mtt_fmnist.py", **vars(args)}
    t_start = time.time()
    ds = load_dataset(args.dataset)
    train, subset_path = subset(ds, out, args.train_size, args.seed)
    net = create_network(args.arch, num_classes=ds.num_classes, input_shape=ds.image_shape)

    t = time.time()
    buffer = train_experts(train, net, args.buffer or out / "buffer", args.experts, ExpertConfig(epochs=args.epochs), seed=args.seed,
                           parallel=1, subset=str(subset_path))
    print(f"experts: {buffer} ({time.time() - t:.0f} s this call); test acc "
          f"{[e['test_acc'] for e in buffer.experts]}")
    real = RealData.from_dataset(train)
    results = []

    def run_one(m, name: str, ipc: int, lam: float, iterations: int) -> None:
        """Distil and evaluate one set (read back if ``out/runs/name`` finished with this config)."""
        run_dir = out / "runs" / name
        done = run_dir / "results.json"
        if done.exists() and read_json(done)["config"]["method_config"] == dataclasses.asdict(m.config):
            r = read_json(done)
            ev, seconds = r["evaluation"], r["seconds"]
        else:
            res = distill(m, real, ds, seed=args.seed, out=run_dir, resume=(run_dir / "checkpoints").exists(),
                          checkpoint_every=10, track_every=max(iterations // 5, 1), eval_final_epochs=args.eval_epochs,
                          eval_final_models=args.eval_models, extra_config={"experiment": config})
            ev, seconds = res.evaluation, res.seconds
        e = ev["results"][0]
        results.append({"set": name, "method": m.name, "ipc": ipc, "sdc": lam, "iterations": iterations,
                        "preset": e["preset"], "lr": e["lr"], "mean": e["mean"], "std": e["std"], "accs": e["accs"],
                        "distill_seconds": round(seconds, 1), "config": dataclasses.asdict(m.config)})
        print(f"{name}: {e['mean']:.2f} ± {e['std']:.2f} (lr {e['lr']:.4g})")

    for ipc in args.ipc:
        iterations = args.iterations_ipc1 if ipc == 1 else args.iterations_ipc10
        for method in args.methods:
            for lam in ([0.0, args.sdc] if args.sdc > 0 else [0.0]):
                overrides = dict(ipc=ipc, iterations=iterations, memory=args.memory, sdc=lam, defaults="fashion_mnist")
                steps = args.syn_steps_ipc10 if ipc >= 10 and args.syn_steps_ipc10 else args.syn_steps
                if steps:
                    overrides["syn_steps"] = steps
                if ipc >= 10 and args.batch_syn_ipc10:
                    overrides["batch_syn"] = args.batch_syn_ipc10
                m = build_method(method, net, buffer=str(buffer.path), **overrides)
                run_one(m, f"{method}-ipc{ipc}" + (f"-sdc{lam:g}" if lam else ""), ipc, lam, iterations)
        for method in args.compare:
            run_one(build_method(method, net, ipc=ipc, iterations=iterations), f"{method}-ipc{ipc}", ipc, 0.0,
                    iterations)
        base_path = out / f"random_ipc{ipc}.json"
        settings = {"ipc": ipc, "epochs": args.eval_epochs, "models": args.eval_models, "seed": args.seed,
                    "subset": str(subset_path)}
        r = cached(base_path, settings, lambda ipc=ipc: random_real_baseline(
            train, ipc, args.arch, "mtt", jax.random.fold_in(jax.random.key(args.seed), ipc), args.eval_models,
            lr=0.01, epochs=args.eval_epochs))
        results.append({"set": f"random-real-ipc{ipc}", "method": "random real", "ipc": ipc, "sdc": 0.0,
                        "iterations": 0, "preset": r["preset"], "lr": r["lr"], "mean": r["mean"], "std": r["std"],
                        "accs": r["accs"], "distill_seconds": 0.0})
    rows = [{"set": r["set"], "ipc": r["ipc"], "sdc": r["sdc"], "iterations": r["iterations"], "preset": r["preset"],
             "lr": f"{r['lr']:.4g}", "acc (%)": f"{r['mean']:.2f} ± {r['std']:.2f}",
             "distill s": r["distill_seconds"]} for r in results]
    table = format_table(rows)
    elapsed = time.time() - t_start
    write_report(out, f"MTT / DATM on {ds.name}", table, {
        "config": config, "buffer": buffer.describe(), "experts": buffer.experts, "results": results, "table": rows,
        "seconds": round(elapsed, 1)})
    print(table)
    print(f"\nwrote {out}/results.json, results.md ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    from run import legacy_main

    sys.exit(legacy_main("mtt_fmnist"))
