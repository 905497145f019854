"""Evaluation cost by the number of seeds trained at once (vmapped models): K = 1, 5, 10.

    python benchmarks/evaluation.py [--dataset embedded] [--ipc 10] [--models 1,5,10] [--epochs 300]
                                    [--preset dc] [--loop auto] --out bench_eval.json

The evaluation protocol (``jaxdd.evaluate``) trains K freshly initialised networks on a set with
``jaxdd.train.fit`` and tests them on the real test split. Here the set is ``ipc`` random real
images per class; for every K: one untimed epoch (compiles the epoch and the test pass), then a
timed run of ``--epochs`` epochs plus the test-set accuracy of the K models. ``x_k1`` is the
time relative to one model: on an accelerator, where the K models run as one vmapped program,
it stays far below K. ``memory_mb``: XLA's compiled estimate of one vmapped training step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _bench import compiled_memory_bytes, megabytes, report


def bench_eval_seeds(ds, ipc: int, ks, epochs: int, preset: str = "dc", loop: str = "auto", arch: str = "convnet",
                     seed: int = 0) -> list[dict]:
    """One row per K: wall seconds of ``epochs`` epochs of K models on ``ipc`` real images per
    class plus their test accuracy (compile excluded), and the ratio to K = 1."""
    from jaxdd.data.sampler import random_real
    from jaxdd.evaluate.presets import get_preset
    from jaxdd.models import create_network
    from jaxdd.train import Trainer, evaluate_accuracy, fit

    x, y = random_real(jax.random.key(seed), ds, ipc)
    x, y = np.asarray(x), np.asarray(y)
    net = create_network(arch, num_classes=ds.num_classes, input_shape=ds.image_shape)
    trainer = Trainer(net, get_preset(preset).train_config(ds, epochs), loop=loop)
    rows = []
    for k in ks:
        key = jax.random.key(seed + 1)
        t = time.perf_counter()  # warm-up: one epoch and the test pass (compilation)
        state, _ = fit(trainer, trainer.init(key, k), x, y, key, epochs=1, progress=False)
        evaluate_accuracy(net, state.variables, ds.x_test, ds.y_test)
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        state, _ = fit(trainer, trainer.init(key, k), x, y, key, epochs=epochs, progress=False)
        accs = evaluate_accuracy(net, state.variables, ds.x_test, ds.y_test)
        seconds = time.perf_counter() - t
        b = trainer.batch_layout(len(y))[0]
        st = trainer.init(key, k)
        step = jax.jit(jax.vmap(trainer.model_step)).lower(
            st.variables, st.opt_state, jnp.zeros((k, b) + ds.image_shape, jnp.float32), jnp.zeros((k, b), jnp.int32),
            jax.random.split(key, k), jnp.full((k,), 0.01, jnp.float32)).compile()
        rows.append({"models": k, "epochs": epochs, "loop": trainer.epoch_loop, "train_size": len(y),
                     "compile_s": round(compile_s, 2), "s_per_it": round(seconds, 3),
                     "memory_mb": megabytes(compiled_memory_bytes(step)),
                     "mean_acc": round(100 * float(np.mean(accs)), 2), "load1": round(os.getloadavg()[0], 2)})
    k1 = next((r["s_per_it"] for r in rows if r["models"] == 1), None)
    for r in rows:
        r["x_k1"] = None if k1 is None else round(r["s_per_it"] / k1, 2)
    return rows


def main(argv=None) -> int:
    from jaxdd.data import load_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="embedded")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--models", default="1,5,10", help="comma-separated K (seeds trained at once)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--preset", default="dc")
    p.add_argument("--loop", default="auto", choices=["auto", "scan", "steps", "models"])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, progress=False)
    rows = bench_eval_seeds(ds, args.ipc, [int(k) for k in args.models.split(",")], args.epochs, args.preset,
                            args.loop)
    report("evaluation", args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
