"""Seconds per training epoch by the trainer's loop: ``scan`` (the epoch as one jitted
``lax.scan``), ``steps`` (one jitted call per step, models vmapped) and ``models`` (one call per
step and model).

    python benchmarks/train_loop.py [--images 2560] [--batch 256] [--models 1,5] [--loops scan,steps,models]
                                    [--epochs 2] --out bench_loop.json

Random Fashion-MNIST-shaped images, ConvNet (depth 3, width 128), the ``dc`` training recipe.
For every (loop, M): one untimed epoch (compiles), then ``--epochs`` timed epochs; the median is
reported with the ratio to the ``scan`` row of the same M. ``jaxdd.train.Trainer(loop="auto")``
takes ``scan`` on accelerators and ``models`` on CPU; this benchmark is what that choice rests on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np
from _bench import compiled_memory_bytes, megabytes, report


def bench_train_loop(images: int, batch: int, models, loops, epochs: int, arch: str = "convnet-d3-w128",
                     shape=(28, 28, 1), num_classes: int = 10) -> list[dict]:
    """One row per (loop, M): median wall seconds per epoch over ``epochs`` timed epochs."""
    from jaxdd.models import create_network
    from jaxdd.train import TrainConfig, Trainer

    net = create_network(arch, num_classes=num_classes, input_shape=shape)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(images,) + tuple(shape)).astype(np.float32)
    y = rng.integers(0, num_classes, images).astype(np.int32)
    rows = []
    for m in models:
        for loop in loops:
            trainer = Trainer(net, TrainConfig(batch_size=batch, epochs=max(epochs, 2)), loop=loop)
            state = trainer.init(jax.random.key(0), m)
            t = time.perf_counter()
            state, _ = trainer.train_epoch(state, x, y, jax.random.key(1))
            jax.block_until_ready(state)
            compile_s = time.perf_counter() - t
            times = []
            for e in range(epochs):
                t = time.perf_counter()
                state, _ = trainer.train_epoch(state, x, y, jax.random.key(2 + e))
                jax.block_until_ready(state)
                times.append(time.perf_counter() - t)
            memory = None
            if loop == "scan":  # the whole epoch is one program: its compiled estimate
                from jaxdd.train import _jit_epoch
                keys = jax.random.split(jax.random.key(1), m)
                memory = compiled_memory_bytes(_jit_epoch.lower(trainer, state, x, y, keys, trainer._base_lr(None, m))
                                               .compile())
            rows.append({"loop": loop, "models": m, "images": images, "batch": batch,
                         "steps": trainer.batch_layout(images)[1], "compile_s": round(compile_s, 2),
                         "s_per_it": round(float(np.median(times)), 4), "memory_mb": megabytes(memory),
                         "load1": round(os.getloadavg()[0], 2)})
    for r in rows:
        scan = next((q["s_per_it"] for q in rows if q["loop"] == "scan" and q["models"] == r["models"]), None)
        r["x_scan"] = None if scan is None else round(r["s_per_it"] / scan, 2)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2560)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--models", default="1,5")
    p.add_argument("--loops", default="scan,steps,models")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = bench_train_loop(args.images, args.batch, [int(m) for m in args.models.split(",")],
                            args.loops.split(","), args.epochs)
    report("train_loop", args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
