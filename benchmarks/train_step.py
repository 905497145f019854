"""Training steps per second of the distillation ConvNet with the shared trainer (``jaxdd.train``).

ConvNet depth 3, width 128, instance norm, Fashion-MNIST shapes (28x28x1, 10 classes), batch 256,
SGD with momentum and weight decay (the ``dc`` evaluation step). Rows: one model with a plain
jitted step (``Trainer.model_step``, no vmap) and M models trained at once with ``jax.vmap``
(``Trainer.train_step``, each model its own batch). ``model-steps/s`` = M x steps/s: the throughput
that evaluation and difficulty ensembles get; ``vs plain`` compares it with the plain single model.
``cpu s/model-step`` is this process's CPU time per model and step (less sensitive to other load).

    python benchmarks/train_step.py --models 1,2,4,8 --steps 3 --out runs/bench_train_step.json

Compilation is excluded (ahead-of-time ``lower().compile()`` before the timed calls). ``temp GB``
is XLA's temporary-buffer size for the step: a vmapped step holds M models' activations at once
(the ``models`` loop of ``jaxdd.train`` holds one); rows above ``--max-temp-gb`` are compiled and
reported but not run, so a shared machine does not run out of memory. On a shared CPU the timings
depend on the load: the JSON (written after every row) records the 1-minute load average per row.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxdd.models import create_network
from jaxdd.train import TrainConfig, Trainer
from jaxdd.utils.io import format_table, write_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="1,2,4,8", help="comma-separated numbers of vmapped models")
    p.add_argument("--steps", type=int, default=3, help="timed steps per row (after compilation)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--arch", default="convnet-d3-w128", help="network (default: ConvNet depth 3, width 128)")
    p.add_argument("--max-temp-gb", type=float, default=4.0, help="skip (but report) rows whose XLA temp buffers "
                   "exceed this many GB, so a shared machine does not run out of memory (default 4)")
    p.add_argument("--out", default=None, help="JSON file for the results")
    return p.parse_args(argv)


def step_args(trainer: Trainer, m: int | None, batch: int, rng: np.random.Generator) -> tuple:
    """Arguments of ``trainer.model_step`` for one model (``m=None``) or, with a leading model
    axis, of its vmap over ``m`` models: fresh networks and a random batch of the network's shape."""
    shape, c = tuple(trainer.net.input_shape), trainer.net.num_classes
    st = trainer.init(jax.random.key(0), m or 1)
    xb = jnp.asarray(rng.normal(size=(m or 1, batch) + shape), jnp.float32)
    yb = jnp.asarray(rng.integers(0, c, (m or 1, batch)), jnp.int32)
    keys, lr = jax.random.split(jax.random.key(1), m or 1), jnp.full((m or 1,), 0.01, jnp.float32)
    args = (st.variables, st.opt_state, xb, yb, keys, lr)
    return args if m is not None else jax.tree.map(lambda a: a[0], args)


def _time(fn, args, steps: int, max_temp_gb: float):
    """(wall seconds, CPU seconds of this process, XLA temp buffer GB) per call of the jitted
    ``fn(*args)``: compiled ahead of time, then ``steps`` timed calls; not run (times None) when
    its temp buffers exceed ``max_temp_gb``."""
    compiled = fn.lower(*args).compile()
    try:
        temp_gb = compiled.memory_analysis().temp_size_in_bytes / 2**30
    except Exception:  # memory analysis is backend-dependent; run anyway
        temp_gb = None
    if temp_gb is not None and temp_gb > max_temp_gb:
        return None, None, temp_gb
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        jax.block_until_ready(compiled(*args))
    return (time.perf_counter() - t) / steps, (time.process_time() - c) / steps, temp_gb


def main(argv=None) -> int:
    args = parse_args(argv)
    counts = [int(m) for m in args.models.split(",")]
    net = create_network(args.arch, num_classes=10, input_shape=(28, 28, 1))
    trainer = Trainer(net, TrainConfig(batch_size=args.batch))
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()
    rows = []

    # plain: one model, jitted single-model step; vmap: the same step vmapped over M models
    # (what Trainer.train_step and the "scan"/"steps" loops run)
    plain, vmapped = jax.jit(trainer.model_step), jax.jit(jax.vmap(trainer.model_step))
    jobs = [("plain", 1)] + [("vmap", m) for m in counts]
    for kind, m in tqdm(jobs, desc="benchmark"):
        if kind == "plain":
            sec, cpu, temp = _time(plain, step_args(trainer, None, args.batch, rng), args.steps, args.max_temp_gb)
        else:
            sec, cpu, temp = _time(vmapped, step_args(trainer, m, args.batch, rng), args.steps, args.max_temp_gb)
        row = {"mode": kind, "models": m, "temp GB": None if temp is None else round(temp, 2),
               "loadavg": round(os.getloadavg()[0], 1)}
        if sec is None:
            row.update({"s/step": None, "steps/s": None, "model-steps/s": None, "cpu s/model-step": None,
                        "vs plain": "skipped (memory)"})
        else:
            plain_rate = rows[0]["model-steps/s"] if rows else m / sec
            row.update({"s/step": sec, "steps/s": 1.0 / sec, "model-steps/s": m / sec, "cpu s/model-step": cpu / m,
                        "vs plain": f"{m / sec / plain_rate:.2f}x"})
        rows.append(row)
        result = {"config": {"script": "benchmarks/train_step.py", "argv": sys.argv[1:] if argv is None else argv,
                             **vars(args), "num_params": net.num_params()},
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
                              "devices": [str(d) for d in jax.devices()], "loadavg_before": load_before,
                              "loadavg_after": os.getloadavg()},
                  "rows": rows}
        if args.out:  # after every row, so a long run that is stopped keeps what it measured
            write_json(args.out, result)
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    table = [{**r, **{k: fmt(r[k]) for k in ("s/step", "steps/s", "model-steps/s", "cpu s/model-step")}}
             for r in rows]
    print(format_table(table, ["mode", "models", "s/step", "steps/s", "model-steps/s", "vs plain", "cpu s/model-step",
                               "temp GB", "loadavg"]))
    if args.out:
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
