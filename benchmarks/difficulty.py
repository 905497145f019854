"""Per-example gradient norms vs one training step: time, examples/s, memory, exactness.

    python benchmarks/difficulty.py [--dataset fashion_mnist] [--model convnet] [--batch 256]
                                    [--repeats 5] [--methods train-step,fast-auto,...] --out bench.json

Methods (all on the same model, variables and batch):

* ``train-step``: one SGD step of ``jaxdd.train.Trainer`` (forward, backward, update; 1 model).
* ``fast-auto`` / ``fast-direct`` / ``fast-ghost``: ``jaxdd.difficulty.grad_norms`` (exact
  full-parameter norms from one forward and one batched backward pass; see gradnorm.py).
* ``last-layer``: the last-layer GraNd variant.
* ``vmap-grad``: ``grand_reference``, i.e. ``vmap(grad)`` materialising per-example gradients.
* ``loop``: a Python loop of a jitted single-example ``grad`` + norm (like a per-sample loop).

Timings interleave the methods over ``--repeats`` rounds and report the minimum (and median) after
one warm-up call; "memory" is XLA's compiled estimate (arguments + outputs + temporaries, from
``memory_analysis()``; for ``loop`` of one single-example call). The machine load (1-min load
average) is recorded before and after: on a shared CPU, compare ratios measured in one run.
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
from _bench import compiled_memory_bytes

METHODS = ("train-step", "fast-auto", "fast-direct", "fast-ghost", "last-layer", "vmap-grad", "loop")



def build(method: str, net, variables, x, y):
    """(callable taking no args that runs once and blocks, compiled memory bytes, output norms or None)."""
    from jaxdd.difficulty import gradnorm as G
    from jaxdd.utils.labels import cross_entropy
    from jaxdd.train import TrainConfig, Trainer

    if method == "train-step":
        trainer = Trainer(net, TrainConfig(batch_size=x.shape[0], epochs=1))
        st = trainer.init(jax.random.key(0), 1)
        st = st._replace(variables=jax.tree.map(lambda a: a[None], variables))
        key = jax.random.split(jax.random.key(0), 1)
        xb, yb = x[None], y[None]
        try:  # memory estimate of the trainer's jitted step (private, for the number only)
            from jaxdd.train import _jit_step
            lr = jnp.full((1,), trainer.config.lr, jnp.float32)
            memory = compiled_memory_bytes(_jit_step.lower(trainer, st, xb, yb, key, lr).compile())
        except Exception:
            memory = None
        return (lambda: jax.block_until_ready(trainer.train_step(st, xb, yb, key))), memory, None
    if method == "loop":
        def one(v, xi, yi):
            g = jax.grad(lambda p: cross_entropy(net.logits({**v, "params": p}, xi[None]), yi[None])[0])(v["params"])
            return jnp.sqrt(sum(jnp.sum(l ** 2) for l in jax.tree.leaves(g)))
        compiled = jax.jit(one).lower(variables, x[0], y[0]).compile()

        def run():
            return np.array([float(compiled(variables, x[i], y[i])) for i in range(x.shape[0])])
        return run, compiled_memory_bytes(compiled), run
    fn = {"fast-auto": lambda v, x, y: G.grad_norms(net, v, x, y, method="auto"),
          "fast-direct": lambda v, x, y: G.grad_norms(net, v, x, y, method="direct"),
          "fast-ghost": lambda v, x, y: G.grad_norms(net, v, x, y, method="ghost"),
          "last-layer": lambda v, x, y: G.grad_norms(net, v, x, y, layers="last"),
          "vmap-grad": lambda v, x, y: G.grand_reference(net, v, x, y)}[method]
    compiled = jax.jit(fn).lower(variables, x, y).compile()
    return (lambda: jax.block_until_ready(compiled(variables, x, y))), compiled_memory_bytes(compiled), \
        (lambda: np.asarray(compiled(variables, x, y)))


def main(argv=None) -> int:
    from tqdm.auto import tqdm

    from jaxdd.data import load_dataset
    from jaxdd.models import create_network
    from jaxdd.utils.io import format_table, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="convnet")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown methods {bad}; choose from {METHODS}")

    ds = load_dataset(args.dataset, data_dir=args.data_dir, progress=False)
    net = create_network(args.model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    variables = net.init(jax.random.key(args.seed))
    idx = np.random.default_rng(args.seed).choice(len(ds.y_train), args.batch, replace=False)
    x, y = jnp.asarray(ds.x_train[idx]), jnp.asarray(ds.y_train[idx])
    load_before = os.getloadavg()[0]

    runs, mem, outputs, compile_s = {}, {}, {}, {}
    for m in tqdm(methods, desc="compile", leave=False):
        t0 = time.perf_counter()
        runs[m], mem[m], out_fn = build(m, net, variables, x, y)
        runs[m]()  # warm-up
        compile_s[m] = time.perf_counter() - t0
        if out_fn is not None:
            outputs[m] = np.asarray(out_fn())
    times = {m: [] for m in methods}
    for _ in tqdm(range(args.repeats), desc="timing rounds", leave=False):
        for m in methods:
            t0 = time.perf_counter()
            runs[m]()
            times[m].append(time.perf_counter() - t0)
    load_after = os.getloadavg()[0]

    ref = outputs.get("vmap-grad")
    step = min(times["train-step"]) if "train-step" in times else None
    vmap = min(times["vmap-grad"]) if "vmap-grad" in times else None
    rows = []
    for m in methods:
        t = min(times[m])
        row = {"method": m, "min s": round(t, 3), "median s": round(float(np.median(times[m])), 3),
               "examples/s": round(args.batch / t, 1),
               "x train step": round(t / step, 2) if step else "",
               "speedup vs vmap": round(vmap / t, 2) if vmap else "",
               "memory MB": round(mem[m] / 2 ** 20, 1) if mem[m] else "",
               "compile+warm s": round(compile_s[m], 1)}
        if ref is not None and m in outputs and m not in ("last-layer",):
            row["max rel err"] = f"{float(np.max(np.abs(outputs[m] - ref) / np.maximum(np.abs(ref), 1e-12))):.1e}"
        rows.append(row)
    cols = ["method", "min s", "median s", "examples/s", "x train step", "speedup vs vmap", "memory MB",
            "max rel err", "compile+warm s"]
    print(format_table(rows, cols))
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}; {os.cpu_count()} CPUs")
    config = {"dataset": ds.name, "model": args.model, "batch": args.batch, "repeats": args.repeats,
              "methods": methods, "seed": args.seed, "jax": jax.__version__, "backend": jax.default_backend(),
              "devices": len(jax.devices()), "cpus": os.cpu_count(), "python": sys.version.split()[0],
              "machine": platform.machine(), "load_before": load_before, "load_after": load_after,
              "command": " ".join(["python", "benchmarks/difficulty.py", *(argv or sys.argv[1:])])}
    write_json(args.out, {"config": config, "rows": rows, "times": times})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
