"""LD3M vs pixel-space DM/DC and random real images on Fashion-MNIST (issue 7, measured part 2).

    python experiments/run.py --config ld3m_fmnist --config.prior=runs/priors/fashion_mnist
    python experiments/ld3m_fmnist.py --prior runs/priors/fashion_mnist --out runs/ld3m_fmnist

Runs (each a ``jaxdd.distill.distill`` call, resumable: finished runs are read back from their
folder): random real, DM, DC, LD3M-DM, LD3M-DC at each ``--ipc``, LD3M's starting set (its
generator's output before any iteration: encoded real images decoded through the DDIM steps),
LD3M-DM at IPC ``--steps-ipc`` with each latent learning rate in ``--lr-img``, and LD3M-DM at IPC
``--steps-ipc`` for each number of DDIM steps in ``--ddim-steps`` (time per iteration vs
accuracy). Every set is evaluated the same way: ``--eval-models`` fresh ConvNets (and as many of
each ``--cross-archs`` network) trained on it with the ``dc`` preset for ``--eval-epochs`` epochs,
accuracy on the real test set. The CPU budget settings (iterations, real batch, DC loops) are
recorded in ``results.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax

from jaxdd.data import load_dataset
from jaxdd.data.distilled import DistilledSet
from jaxdd.distill import RealData, build_method, distill
from jaxdd.evaluate import evaluate_distilled
from jaxdd.evaluate.protocol import random_real_baseline
from jaxdd.models import create_network
from jaxdd.utils.io import format_table, read_json, write_json


def run(args) -> int:
    """The experiment with the settings ``args`` (fields of ``jaxdd/configs/ld3m_fmnist.py``)."""
    from run import as_list

    if not args.prior:
        raise SystemExit("ld3m_fmnist needs the diffusion prior: --config.prior=runs/priors/fashion_mnist "
                         "(or --prior)")
    for name in ("ipc", "ddim_steps", "lr_img", "cross_archs", "only"):
        setattr(args, name, as_list(getattr(args, name)))
    args.cross_archs = args.cross_archs or []
    out = Path(args.out)
    ds = load_dataset(args.dataset, progress=False)
    real = RealData.from_dataset(ds)
    net = create_network(args.model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    loops = [tuple(int(v) for v in item.split(",")) for item in args.dc_loops.split(";")]
    eval_key = jax.random.key(args.seed + 1000)

    def ld3m(ipc: int, match: str = "dm", **overrides) -> dict:
        """Settings of an LD3M run: the main run's (DM matching) with ``overrides``."""
        return {"ipc": ipc, "batch_real": args.batch_real, "iterations": args.dm_iterations, "match": match,
                "num_steps": args.num_steps, "prior": args.prior, **overrides}

    runs = []  # (name, method, ipc, settings)
    for ipc, (outer, inner) in zip(args.ipc, loops):
        dc = {"outer_loop": outer, "inner_loop": inner}
        common = {"ipc": ipc, "batch_real": args.batch_real}
        runs += [(f"dm-ipc{ipc}", "dm", ipc, {**common, "iterations": args.dm_iterations}),
                 (f"dc-ipc{ipc}", "dc", ipc, {**common, "iterations": args.dc_iterations, **dc}),
                 (f"ld3m-dm-ipc{ipc}", "ld3m", ipc, ld3m(ipc)),
                 (f"ld3m-dc-ipc{ipc}", "ld3m", ipc, ld3m(ipc, "dc", iterations=args.dc_iterations, match_settings=dc))]
    runs += [(f"ld3m-start-ipc{ipc}", "ld3m", ipc, ld3m(ipc, iterations=0)) for ipc in args.ipc]
    k = args.steps_ipc
    runs += [(f"ld3m-dm-ipc{k}-S{s}", "ld3m", k, ld3m(k, num_steps=s)) for s in args.ddim_steps
             if s != args.num_steps or k not in args.ipc]
    runs += [(f"ld3m-dm-ipc{k}-lr{lr:g}", "ld3m", k, ld3m(k, lr_img=lr)) for lr in args.lr_img]

    results_path = out / "results.json"
    earlier = _earlier(results_path, vars(args))
    results, cross = earlier.get("runs", {}), earlier.get("cross_arch", {})

    def save():
        write_json(results_path, {"config": vars(args), "runs": results, "cross_arch": cross})

    for ipc in args.ipc:
        name = f"random-ipc{ipc}"
        if name in results or (args.only is not None and name not in args.only):
            continue
        t0 = time.time()
        r = random_real_baseline(ds, ipc, args.model, "dc", key=jax.random.fold_in(eval_key, ipc),
                                 num_models=args.eval_models, epochs=args.eval_epochs)
        results[name] = {"method": "random real", "ipc": ipc, "acc": r["mean"], "std": r["std"],
                         "eval_seconds": round(time.time() - t0, 1)}
        save()
        print(name, results[name], flush=True)

    for name, method_name, ipc, settings in runs:
        if name in results or (args.only is not None and name not in args.only):
            continue
        method = build_method(method_name, net, **settings)
        folder = out / name
        if (folder / "distilled" / "distilled.npz").exists():
            distilled, info = DistilledSet.load(folder / "distilled"), read_json(folder / "results.json")
            seconds = info["seconds"]
        else:
            resume = (folder / "checkpoints").exists()
            res = distill(method, real, ds, seed=args.seed, out=folder, resume=resume,
                          checkpoint_every=max(1, method.config.iterations // 2), final_eval=False)
            distilled, seconds = res.distilled, res.seconds
        t0 = time.time()
        ev = evaluate_distilled(distilled, ds, archs=(args.model,), preset="dc", key=eval_key,
                                num_models=args.eval_models, epochs=args.eval_epochs)["results"][0]
        its = method.config.iterations
        results[name] = {"method": name.rsplit("-ipc", 1)[0], "ipc": ipc, "acc": ev["mean"], "std": ev["std"],
                         "iterations": its, "distill_seconds": round(seconds, 1),
                         "seconds_per_iteration": round(seconds / its, 2) if its else None,
                         "num_steps": getattr(method.config, "num_steps", None),
                         "eval_seconds": round(time.time() - t0, 1),
                         "method_config": json.loads(json.dumps(_plain(method.config)))}
        save()
        print(name, {k: v for k, v in results[name].items() if k != "method_config"}, flush=True)

    ordered = sorted(results.items(), key=lambda kv: (kv[1]["ipc"], kv[0]))
    for arch in args.cross_archs:  # the same sets on other networks (random: the same draw, same key)
        done = cross.setdefault(arch, {})
        for name, v in ordered:
            if name in done:
                continue
            t0 = time.time()
            if name.startswith("random-"):
                ev = random_real_baseline(ds, v["ipc"], arch, "dc", key=jax.random.fold_in(eval_key, v["ipc"]),
                                          num_models=args.eval_models, epochs=args.eval_epochs)
            else:
                ev = evaluate_distilled(DistilledSet.load(out / name / "distilled"), ds, archs=(arch,), preset="dc",
                                        key=eval_key, num_models=args.eval_models,
                                        epochs=args.eval_epochs)["results"][0]
            done[name] = {"acc": ev["mean"], "std": ev["std"], "eval_seconds": round(time.time() - t0, 1)}
            save()
            print(arch, name, done[name], flush=True)

    rows = [{"run": k, "ipc": v["ipc"], args.model: f"{v['acc']:.2f} ± {v['std']:.2f}",
             **{a: f"{cross[a][k]['acc']:.2f} ± {cross[a][k]['std']:.2f}" for a in args.cross_archs if k in cross[a]},
             "iterations": v.get("iterations", ""), "s/it": v.get("seconds_per_iteration") or "",
             "ddim_steps": v.get("num_steps") or ""}
            for k, v in ordered]
    print(format_table(rows, ["run", "ipc", args.model, *args.cross_archs, "iterations", "s/it", "ddim_steps"]))
    return 0


#: Settings that change a run's numbers: earlier results made with other values are not reused.
_RESULT_SETTINGS = ("prior", "dataset", "model", "dm_iterations", "dc_iterations", "dc_loops", "batch_real",
                    "num_steps", "eval_epochs", "eval_models", "seed")


def _earlier(path: Path, config: dict) -> dict:
    """What ``path`` (results.json) holds, if it was made with the same settings."""
    if not path.exists():
        return {}
    earlier = read_json(path)
    changed = {k: (earlier["config"].get(k), config[k]) for k in _RESULT_SETTINGS
               if earlier["config"].get(k) != config[k]}
    if changed:
        diff = ", ".join(f"--{k.replace('_', '-')} {old} (now {new})" for k, (old, new) in changed.items())
        raise SystemExit(f"{path} holds runs made with {diff}; give another --out, or move that file away "
                         "to start over")
    return earlier


def _plain(config) -> dict:
    import dataclasses

    from jaxdd.utils.io import to_jsonable

    return to_jsonable(dataclasses.asdict(config))


if __name__ == "__main__":
    import sys

    from run import legacy_main

    sys.exit(legacy_main("ld3m_fmnist"))
