"""Every speed benchmark in one run: one JSON and one Markdown table.

    python benchmarks/run_all.py [--setting small|authors|tiny] [--benches dm,dc_ipc1,...]
                                 [--dataset fashion_mnist] [--data-dir DIR] [--budget-s SECONDS]
                                 [--out benchmarks/results] [--name run_all] [--previous FILE]

Benchmarks (each reuses the function of its own script in ``benchmarks/``):

* ``dm``, ``dc_ipc1``, ``dc_ipc10``, ``dsa_ipc10``: one jitted distillation iteration
  (``distill.py``); ``authors``: IPC 10 / 1, real batch 256 per class, DC/DSA loops from the
  authors' table (IPC 10: outer 10, inner 50), DM with DSA.
* ``train_step``: one SGD step of ConvNet-w128 on a batch (``train_step.py``).
* ``grad_norms``: exact per-example gradient norms of a batch (``difficulty.py``, ``fast-auto``).
* ``eval_seeds``: evaluation of an IPC-10 set with K = 1, 5, 10 seeds trained at once (vmapped),
  time ratio to K = 1 (``evaluation.py``).
* ``train_loop``: one training epoch with the trainer's ``scan`` loop (the epoch as one
  ``lax.scan``) against its per-step loops (``train_loop.py``).

Every row: compile seconds, seconds per iteration (median of ``--repeats`` timed calls after a
warm-up; the unit is in ``per``), XLA's compiled memory estimate (arguments + outputs +
temporaries, MB) and the ratio to the same row of ``--previous`` (default: the JSON this run
overwrites). The files are rewritten after every benchmark, so a run stopped by a time limit keeps
what it measured; ``--budget-s`` skips the benchmarks not started before that many seconds.
On a shared machine compare ratios from one run; the 1-minute load average is recorded per row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import difficulty as bench_difficulty  # noqa: E402
import distill as bench_distill  # noqa: E402
import evaluation as bench_evaluation  # noqa: E402
import train_loop as bench_train_loop  # noqa: E402
import train_step as bench_train_step  # noqa: E402
from _bench import time_compiled  # noqa: E402

BENCHES = ("dm", "dc_ipc1", "dc_ipc10", "dsa_ipc10", "train_step", "grad_norms", "eval_seeds", "train_loop")

# per setting: the sizes of every benchmark. "authors" = the papers' settings; "small" = what a
# CPU measures in minutes; "tiny" = a small network, seconds (a smoke test of the scripts, e.g. JAXDD_TINY=1).
SETTINGS = {
    "tiny": {"repeats": 1, "model": "convnet-d2-w16", "dm": {"ipc": 2, "batch_real": 8}, "dc_ipc1": {"ipc": 1, "batch_real": 8},
             "dc_ipc10": {"ipc": 2, "batch_real": 8, "outer_loop": 2, "inner_loop": 2},
             "dsa_ipc10": {"ipc": 2, "batch_real": 8, "outer_loop": 2, "inner_loop": 2},
             "batch": 16, "eval_seeds": {"ipc": 2, "ks": (1, 2), "epochs": 2},
             "train_loop": {"images": 64, "batch": 16, "models": (1, 2), "epochs": 1}},
    "small": {"repeats": 2, "model": "convnet", "dm": {"ipc": 10, "batch_real": 64}, "dc_ipc1": {"ipc": 1, "batch_real": 64},
              "dc_ipc10": {"ipc": 10, "batch_real": 64, "outer_loop": 10, "inner_loop": 10},
              "dsa_ipc10": {"ipc": 10, "batch_real": 64, "outer_loop": 10, "inner_loop": 10},
              "batch": 64, "eval_seeds": {"ipc": 10, "ks": (1, 5, 10), "epochs": 20},
              "train_loop": {"images": 2560, "batch": 256, "models": (1, 5), "epochs": 2}},
    "authors": {"repeats": 2, "model": "convnet", "dm": {"ipc": 10, "batch_real": 256}, "dc_ipc1": {"ipc": 1, "batch_real": 256},
                "dc_ipc10": {"ipc": 10, "batch_real": 256, "outer_loop": 10, "inner_loop": 50},
                "dsa_ipc10": {"ipc": 10, "batch_real": 256, "outer_loop": 10, "inner_loop": 50},
                "batch": 256, "eval_seeds": {"ipc": 10, "ks": (1, 5, 10), "epochs": 300},
                "train_loop": {"images": 12800, "batch": 256, "models": (1, 5), "epochs": 2}},
}
COLUMNS = ["bench", "variant", "per", "compile_s", "s_per_it", "memory_mb", "vs_previous", "extra", "load1"]


def _distill_rows(method: str, cfg: dict, net, real, repeats: int, class_batch) -> list[dict]:
    overrides = {k: v for k, v in cfg.items() if k != "ipc"}
    if class_batch is not None:
        overrides["class_batch"] = class_batch
    if method == "dm":
        overrides.pop("outer_loop", None), overrides.pop("inner_loop", None)
    r = bench_distill.bench(method, net, real, cfg["ipc"], repeats, overrides)
    return [{"variant": f"{method} ipc{r['ipc']} batch{r['batch_real']} loops {r['loops']}", "per": "iteration",
             "compile_s": r["compile_s"], "s_per_it": r["s_per_it"], "memory_mb": r["memory_mb"],
             "extra": f"cpu {r['cpu_s_per_it']} s/it"}]


def run_bench(name: str, setting: dict, ds, repeats: int, class_batch=None) -> list[dict]:
    """Rows of one benchmark at one setting (sizes from :data:`SETTINGS`)."""
    from jaxdd.distill import RealData
    from jaxdd.models import create_network
    from jaxdd.train import TrainConfig, Trainer

    net = create_network(setting["model"], num_classes=ds.num_classes, input_shape=ds.image_shape)
    if name in ("dm", "dc_ipc1", "dc_ipc10", "dsa_ipc10"):
        real = RealData.from_dataset(ds)
        return _distill_rows(name.split("_")[0], setting[name], net, real, repeats, class_batch)
    b = setting["batch"]
    rng = np.random.default_rng(0)
    if name == "train_step":
        trainer = Trainer(net, TrainConfig(batch_size=b))
        r = time_compiled(trainer.model_step, bench_train_step.step_args(trainer, None, b, rng), repeats)
        return [{"variant": f"{net.name} batch {b} {'x'.join(map(str, ds.image_shape))}", "per": "step", **r}]
    if name == "grad_norms":
        variables = net.init(jax.random.key(0))
        idx = rng.choice(len(ds.y_train), b, replace=False)
        x, y = jax.numpy.asarray(ds.x_train[idx]), jax.numpy.asarray(ds.y_train[idx])
        rows = []
        for method in ("fast-auto", "train-step"):
            t = time.perf_counter()
            run, memory, _ = bench_difficulty.build(method, net, variables, x, y)
            run()
            compile_s = time.perf_counter() - t
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
            rows.append({"variant": f"{method} batch {b}", "per": "batch", "compile_s": round(compile_s, 2),
                         "s_per_it": round(float(np.median(times)), 4),
                         "memory_mb": None if memory is None else round(memory / 2**20)})
        rows[0]["extra"] = f"{rows[0]['s_per_it'] / rows[1]['s_per_it']:.2f}x a train step"
        return rows
    if name == "eval_seeds":
        c = setting[name]
        rows = bench_evaluation.bench_eval_seeds(ds, c["ipc"], c["ks"], c["epochs"], arch=setting["model"])
        return [{"variant": f"K={r['models']} ipc{c['ipc']} {r['epochs']} epochs ({r['loop']})", "per": "evaluation",
                 "compile_s": r["compile_s"], "s_per_it": r["s_per_it"], "memory_mb": r["memory_mb"],
                 "extra": f"x{r['x_k1']} of K=1, acc {r['mean_acc']}%"} for r in rows]
    if name == "train_loop":
        c = setting[name]
        loops = ("scan", "steps", "models")
        rows = bench_train_loop.bench_train_loop(c["images"], c["batch"], c["models"], loops, max(c["epochs"], 1),
                                                 arch=setting["model"], shape=ds.image_shape, num_classes=ds.num_classes)
        return [{"variant": f"{r['loop']} M={r['models']} {r['steps']} steps of {r['batch']}", "per": "epoch",
                 "compile_s": r["compile_s"], "s_per_it": r["s_per_it"], "memory_mb": r["memory_mb"],
                 "extra": f"x{r['x_scan']} of scan"} for r in rows]
    raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}")


def _previous(path: Path) -> dict:
    """{(bench, variant, backend): s_per_it} of an earlier run_all JSON ({} if none)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {(r["bench"], r["variant"], data.get("backend")): r["s_per_it"] for r in data.get("rows", [])
            if r.get("s_per_it")}


def markdown(result: dict) -> str:
    head = (f"# {result['name']}: setting `{result['setting']}`, dataset {result['dataset']}\n\n"
            f"`{result['command']}`  \nbackend {result['backend']} ({result['devices']}), jax {result['jax']}, "
            f"{result['cpus']} CPUs, load average {result['load_before']} before / {result['load_after']} after; "
            f"elapsed {result['elapsed_s']} s\n\n")
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in result["rows"]:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from jaxdd.data import load_dataset
    from jaxdd.utils.io import format_table, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", default="small", choices=list(SETTINGS))
    p.add_argument("--benches", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    p.add_argument("--dataset", default=None, help="default: fashion_mnist (embedded for --setting tiny)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--repeats", type=int, default=None, help="timed calls per row (default: the setting's)")
    p.add_argument("--eval-epochs", type=int, default=None, help="epochs of eval_seeds (default: the setting's)")
    p.add_argument("--class-batch", type=int, default=None, help="class batch of the distillation benchmarks")
    p.add_argument("--budget-s", type=float, default=None, help="start no benchmark after this many seconds")
    p.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results", help="folder (default $OUT or "
                   "benchmarks/results)")
    p.add_argument("--name", default="run_all", help="file stem: NAME.json and NAME.md")
    p.add_argument("--previous", default=None, help="earlier JSON to compare with (default: OUT/NAME.json)")
    args = p.parse_args(argv)
    benches = [b for b in args.benches.split(",") if b]
    bad = [b for b in benches if b not in BENCHES]
    if bad:
        raise SystemExit(f"unknown benchmarks {bad}; choose from {', '.join(BENCHES)}")
    setting = {**SETTINGS[args.setting]}
    if args.eval_epochs is not None:
        setting["eval_seeds"] = {**setting["eval_seeds"], "epochs": args.eval_epochs}
    repeats = args.repeats or setting["repeats"]
    out = Path(args.out)
    json_path = out / f"{args.name}.json"
    previous = _previous(Path(args.previous) if args.previous else json_path)
    dataset = args.dataset or ("embedded" if args.setting == "tiny" else "fashion_mnist")
    ds = load_dataset(dataset, data_dir=args.data_dir, progress=False)
    backend = jax.default_backend()
    t0 = time.time()
    result = {"name": args.name, "setting": args.setting, "dataset": ds.name, "benches": benches,
              "command": " ".join(["python", "benchmarks/run_all.py", *(sys.argv[1:] if argv is None else argv)]),
              "backend": backend, "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
              "cpus": os.cpu_count(), "platform": platform.platform(), "load_before": round(os.getloadavg()[0], 2),
              "sizes": {k: v for k, v in setting.items()}, "repeats": repeats, "rows": []}
    for name in benches:
        elapsed = time.time() - t0
        if args.budget_s is not None and elapsed > args.budget_s:
            rows = [{"variant": "-", "error": f"skipped: {elapsed:.0f} s elapsed > --budget-s {args.budget_s:g}"}]
        else:
            print(f"[run_all] {name} ({args.setting}) at {elapsed:.0f} s", flush=True)
            try:
                rows = run_bench(name, setting, ds, repeats, args.class_batch)
            except Exception as e:  # recorded in the table and the JSON, then the next benchmark runs
                traceback.print_exc()
                rows = [{"variant": "-", "error": f"{type(e).__name__}: {str(e)[:300]}"}]
        for r in rows:
            r = {"bench": name, **r, "load1": round(os.getloadavg()[0], 2)}
            if r.get("error"):
                r["extra"] = r["error"]
            prev = previous.get((name, r["variant"], backend))
            r["vs_previous"] = round(r["s_per_it"] / prev, 2) if prev and r.get("s_per_it") else None
            result["rows"].append(r)
            print(format_table([{c: r.get(c) for c in COLUMNS}]), flush=True)
        result.update(load_after=round(os.getloadavg()[0], 2), elapsed_s=round(time.time() - t0, 1))
        write_json(json_path, result)
        (out / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {json_path} and {out / (args.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
