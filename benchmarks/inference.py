"""Inference throughput of ``jaxdd.train.predict_logits`` by batch size (the test-set pass of
every evaluation).

    python benchmarks/inference.py [--arch convnet-d3-w128] [--images 10000] [--batches 16,32,64,128,256,500]
                                   [--models 1] [--repeats 2] --out benchmarks/results/inference.json

For each batch size: one untimed call (compiles), then ``--repeats`` timed calls over ``--images``
random Fashion-MNIST-shaped images with ``--models`` stacked fresh networks; reports the best
wall seconds, images per second and the speed-up over the largest batch. XLA:CPU convolutions
lose efficiency at large batches (cache), so the best inference batch on CPU is much smaller than
on a GPU; this benchmark is what the CPU default of ``predict_logits`` is chosen from.
The 1-minute load average is recorded per row: compare rows from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import numpy as np

from jaxdd.models import create_network
from jaxdd.train import predict_logits
from jaxdd.utils.io import format_table, write_json


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="convnet-d3-w128")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--batches", default="16,32,64,128,256,500")
    p.add_argument("--models", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    net = create_network(args.arch, num_classes=10, input_shape=(28, 28, 1))
    keys = jax.random.split(jax.random.key(0), args.models)
    variables = jax.vmap(net.init)(keys)
    x = np.asarray(jax.random.uniform(jax.random.key(1), (args.images, 28, 28, 1)), np.float32)
    rows = []
    for b in [int(v) for v in args.batches.split(",")]:
        jax.block_until_ready(predict_logits(net, variables, x[: 2 * b], batch_size=b))  # compile
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            jax.block_until_ready(predict_logits(net, variables, x, batch_size=b))
            times.append(time.perf_counter() - t)
        best = min(times)
        rows.append({"batch": b, "seconds": round(best, 2), "images/s": round(args.models * args.images / best),
                     "load1": round(os.getloadavg()[0], 2)})
        print(rows[-1], flush=True)
    ref = rows[-1]["seconds"]
    for r in rows:
        r["vs last"] = f"{ref / r['seconds']:.2f}x"
    print(format_table(rows))
    if args.out:
        write_json(args.out, {"config": vars(args), "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
                              "platform": platform.platform(), "python": sys.version.split()[0],
                              "jax": jax.__version__, "rows": rows})


if __name__ == "__main__":
    main()
