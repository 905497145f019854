"""The authors' full budgets on Fashion-MNIST, resumable under a wall-clock budget.

    python benchmarks/reproduce.py [--runs dc_ipc1,dsa_ipc1,dm_ipc1,dm_ipc10] [--data-dir DIR]
                                   [--folder runs/reproduce_gpu] [--budget-s 540 | --deadline UNIX_TIME]
                                   [--out DIR] [--tiny]

Runs, in order: DC and DSA at IPC 1 (1,000 iterations, real batch 256, loops 1/1), DM at IPC 1 and
10 (20,000 iterations, real batch 256, DSA), each with the method's default (authors') config,
then the reference evaluation: 5 fresh ConvNets under the ``dc`` preset (DC: 300 epochs) or
``dc-dsa`` (DSA, DM: 1,000 epochs with DSA), as ``jaxdd distill --budget paper`` does.

Each run lives in ``FOLDER/<run>/`` (the ``jaxdd.distill.distill`` outputs; a checkpoint every
1/20 of the iterations). A ``distill`` callback measures the seconds per iteration and stops the
run right after a checkpoint when the next interval would not end before the deadline; a later
call with the same folder continues from that checkpoint (bit-identical to an uninterrupted run,
see ``distill``'s ``resume``). The evaluation of a finished run starts only when
``--eval-reserve-s`` seconds are left. ``OUT/reproduce_gpu.json`` and ``.md`` hold every run's
status (iterations done, seconds per iteration, accuracy when evaluated), rewritten at every
checkpoint; with ``--tar`` the folder is also packed into one archive
(``OUT/<folder name>.tar.gz``) that ``--restore`` unpacks when the folder does not exist
(a fresh machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import jax

# published accuracy (%) of the papers on Fashion-MNIST (DC ICLR 2021 and DSA ICML 2021 tables; DM
# reported none for Fashion-MNIST)
PUBLISHED = {"dc_ipc1": 70.5, "dsa_ipc1": 70.6, "dm_ipc1": None, "dm_ipc10": None}
RUNS = {"dc_ipc1": ("dc", 1), "dsa_ipc1": ("dsa", 1), "dm_ipc1": ("dm", 1), "dm_ipc10": ("dm", 10)}
# --tiny: a smoke test on the embedded dataset with a small network (seconds per run on a CPU)
TINY = {"model": "convnet-d2-w16", "iterations": {"dc": 4, "dsa": 4, "dm": 6}, "batch_real": 8,
        "eval_epochs": 2, "eval_models": 2, "checkpoint_every": 2}


class _Deadline(Exception):
    pass


def _status_md(status: dict) -> str:
    cols = ["run", "state", "iterations", "s_per_it", "acc_mean", "acc_std", "published", "accs", "wall_s"]
    lines = [f"# reproduce: {status['dataset']} ({status['backend']}, {status['devices']})", "",
             f"`{status['command']}`", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, r in status["runs"].items():
        row = {"run": name, **r, "iterations": f"{r.get('done', 0)}/{r.get('total', '?')}"}
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _stopper(r: dict, total: int, every: int, left, publish, name: str):
    """``distill`` callback: records progress at every checkpoint (every ``every`` iterations) and
    raises :class:`_Deadline` right after a checkpoint when the next ``every`` iterations would not
    end before the deadline (nothing is lost), or at once when the deadline has passed (the
    iterations since the last checkpoint are lost)."""
    clock = {"last": None, "s_it": None}

    def callback(it, state, metrics):
        now = time.time()
        if clock["last"] is not None:  # the first call's interval includes compilation
            dt = now - clock["last"]
            clock["s_it"] = dt if clock["s_it"] is None else 0.9 * clock["s_it"] + 0.1 * dt
        clock["last"] = now
        if it % every == 0 or it == total:
            r.update(done=it, loss=metrics.get("loss"), state="distilled" if it == total else "distilling",
                     s_per_it=None if clock["s_it"] is None else round(clock["s_it"], 4))
            print(f"[reproduce] {name}: {it}/{total} iterations, {r['s_per_it']} s/it, {left():.0f} s left",
                  flush=True)
            publish()
            if it < total and clock["s_it"] is not None and left() < 1.2 * every * clock["s_it"]:
                raise _Deadline
        if left() < 0:
            raise _Deadline
    return callback


def main(argv=None) -> int:
    from jaxdd.data import load_dataset
    from jaxdd.distill import RealData, build_method, distill
    from jaxdd.models import create_network
    from jaxdd.utils.io import write_json

    t_start = time.time()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--dataset", default=None, help="default fashion_mnist (embedded with --tiny)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--folder", default="runs/reproduce_gpu", help="run folders and checkpoints (kept between calls)")
    p.add_argument("--budget-s", type=float, default=None, help="stop cleanly before this many seconds from start")
    p.add_argument("--deadline", type=float, default=None, help="stop cleanly before this UNIX time")
    p.add_argument("--eval-reserve-s", type=float, default=120.0,
                   help="start a final evaluation only with this many seconds left (default 120)")
    p.add_argument("--start-reserve-s", type=float, default=60.0,
                   help="start (and compile) a distillation only with this many seconds left (default 60)")
    p.add_argument("--margin-s", type=float, default=20.0, help="seconds kept free before the deadline (default 20)")
    p.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    p.add_argument("--tar", action="store_true", help="pack the folder into OUT/<folder name>.tar.gz at the end")
    p.add_argument("--restore", default=None, help="unpack this archive first when the folder does not exist")
    p.add_argument("--tiny", action="store_true", help="smoke test: embedded data, small network, a few iterations")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    names = [r for r in args.runs.split(",") if r]
    bad = [r for r in names if r not in RUNS]
    if bad:
        raise SystemExit(f"unknown runs {bad}; choose from {', '.join(RUNS)}")
    deadline = args.deadline or (t_start + args.budget_s if args.budget_s else float("inf"))
    folder, out = Path(args.folder), Path(args.out)
    if args.restore and not folder.exists() and Path(args.restore).is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.restore) as tar:
            tar.extractall(folder.parent, filter="data")
        print(f"[reproduce] restored {folder} from {args.restore}", flush=True)
    folder.mkdir(parents=True, exist_ok=True)

    ds = load_dataset(args.dataset or ("embedded" if args.tiny else "fashion_mnist"), data_dir=args.data_dir,
                      progress=False)
    real = RealData.from_dataset(ds)
    net = create_network(TINY["model"] if args.tiny else "convnet", num_classes=ds.num_classes,
                         input_shape=ds.image_shape)
    status_path = folder / "status.json"
    saved = json.loads(status_path.read_text()) if status_path.is_file() else {}
    status = {"dataset": ds.name, "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
              "command": " ".join(["python", "benchmarks/reproduce.py", *(sys.argv[1:] if argv is None else argv)]),
              "tiny": args.tiny, "runs": {n: saved.get("runs", {}).get(n, {"state": "not started"}) for n in names}}

    def publish():
        write_json(status_path, status)
        write_json(out / "reproduce_gpu.json", status)
        (out / "reproduce_gpu.md").write_text(_status_md(status))

    def left() -> float:
        return deadline - time.time() - args.margin_s

    try:
        for name in names:
            method_name, ipc = RUNS[name]
            overrides = {"ipc": ipc}
            if args.tiny:
                overrides.update(iterations=TINY["iterations"][method_name], batch_real=TINY["batch_real"])
            method = build_method(method_name, net, **overrides)
            total = method.config.iterations
            r = status["runs"][name]
            r.update(total=total, published=PUBLISHED[name], method_config=dict(vars(method.config)))
            if r.get("state") == "evaluated":
                continue
            ce = TINY["checkpoint_every"] if args.tiny else max(total // 20, 1)
            kwargs = dict(seed=args.seed, out=folder / name, resume=True, checkpoint_every=ce, eval_every=0,
                          progress=False, extra_config={"command": "benchmarks/reproduce.py"})
            if args.tiny:
                kwargs.update(eval_final_epochs=TINY["eval_epochs"], eval_final_models=TINY["eval_models"])
            else:
                kwargs.update(eval_final_models=5)  # the reference evaluation: 5 models, the preset's epochs
            if int(r.get("done", 0)) < total:
                if left() < args.start_reserve_s:  # compiling the update alone may take this long
                    raise _Deadline
                t = time.time()
                try:
                    distill(method, real, ds, final_eval=False,
                            callback=_stopper(r, total, ce, left, publish, name), **kwargs)
                finally:
                    r["wall_s"] = round(r.get("wall_s", 0.0) + time.time() - t, 1)
                    publish()
            if left() < args.eval_reserve_s:
                r["state"] = "distilled (evaluation pending: not enough time left)"
                publish()
                raise _Deadline
            t = time.time()
            res = distill(method, real, ds, iterations=total, final_eval=True, **kwargs)
            ev = res.evaluation["results"][0]
            r.update(state="evaluated", acc_mean=ev["mean"], acc_std=ev["std"], accs=ev["accs"],
                     eval_preset=ev["preset"], eval_epochs=ev["epochs"], eval_models=ev["num_models"],
                     eval_s=round(time.time() - t, 1))
            print(f"[reproduce] {name}: {ev['mean']:.2f} +- {ev['std']:.2f} % ({ev['num_models']} models, "
                  f"{ev['preset']}, {ev['epochs']} epochs); published {PUBLISHED[name]}", flush=True)
            publish()
    except _Deadline:
        print(f"[reproduce] stopping before the deadline; continue with the same --folder {folder}", flush=True)
    publish()
    if args.tar:
        with tarfile.open(out / f"{folder.name}.tar.gz", "w:gz") as tar:
            tar.add(folder, arcname=folder.name)
    print(_status_md(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
