"""Distillation speed: iterations per second of each method's jitted update.

    python benchmarks/distill.py [--dataset embedded] [--methods dc,dsa,dm] [--ipc 10] [--iterations 2]
                                 [--set batch_real=64 --set inner_loop=10] [--real-chunks 0,32,64] --out bench.json

For every method: build it with the authors' defaults (plus ``--set`` overrides), compile
``jax.jit(method.update)`` (timed separately), then run ``--iterations`` timed iterations after
one warm-up call and report seconds per iteration (wall and process CPU), iterations per second
and XLA's compiled memory estimate. ``--real-chunks 0,32,64`` instead compiles one update per real
chunk (real images per network call, 0 = all at once; ``real_chunk`` of the method) and times
them in alternating rounds. The 1-minute load average is recorded before and after: on a
shared CPU the wall time depends on the other processes, so compare numbers from one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import numpy as np
from _bench import compiled_memory_bytes, megabytes


def bench(name: str, net, real, ipc: int, iterations: int, overrides: dict) -> dict:
    from jaxdd.distill import build_method

    method = build_method(name, net, ipc=ipc, **overrides)
    state = method.init(jax.random.key(0), real)
    t = time.time()
    compiled = jax.jit(method.update).lower(state, real).compile()
    compile_s = time.time() - t
    t, c = time.time(), time.process_time()
    state, metrics = compiled(state, real)  # warm-up (timed: the measurement when iterations == 0)
    jax.block_until_ready(state)
    warm = (time.time() - t, time.process_time() - c)
    walls, cpus = [], []
    for _ in range(iterations):
        t, c = time.time(), time.process_time()
        state, metrics = compiled(state, real)
        jax.block_until_ready(state)
        walls.append(time.time() - t)
        cpus.append(time.process_time() - c)
    if not walls:
        walls, cpus = [warm[0]], [warm[1]]
    cfg = method.config
    return {"method": name, "ipc": ipc, "batch_real": cfg.batch_real,
            "loops": f"{getattr(cfg, 'outer_loop', '-')}/{getattr(cfg, 'inner_loop', '-')}",
            "compile_s": round(compile_s, 1), "s_per_it": round(float(np.median(walls)), 4),
            "cpu_s_per_it": round(float(np.median(cpus)), 4), "it_per_s": round(1.0 / float(np.median(walls)), 4),
            "memory_mb": megabytes(compiled_memory_bytes(compiled)),
            "loss": float(metrics["loss"]), "config": {k: v for k, v in vars(cfg).items()}}


def bench_real_chunks(name: str, net, real, ipc: int, rounds: int, overrides: dict, chunks) -> list[dict]:
    """Seconds per iteration of one method with the real images through the network ``chunk`` at a
    time (``0``: all at once), one compiled update per chunk, timed in alternating rounds (so a
    changing machine load hits every variant alike): median and min over ``rounds``."""
    import dataclasses

    from jaxdd.distill import build_method

    base = build_method(name, net, ipc=ipc, **overrides)
    state = base.init(jax.random.key(0), real)
    runs = {}
    for chunk in chunks:
        method = dataclasses.replace(base, real_chunk=chunk or 2**31 - 1)
        t = time.time()
        compiled = jax.jit(method.update).lower(state, real).compile()
        compile_s = time.time() - t
        jax.block_until_ready(compiled(state, real))  # warm-up
        runs[chunk] = {"compiled": compiled, "compile_s": round(compile_s, 1), "times": [],
                       "memory_mb": megabytes(compiled_memory_bytes(compiled))}
    for _ in range(rounds):
        for chunk, r in runs.items():
            t = time.time()
            jax.block_until_ready(r["compiled"](state, real))
            r["times"].append(time.time() - t)
    return [{"method": name, "ipc": ipc, "real_chunk": chunk or "all", "compile_s": r["compile_s"],
             "s_per_it": round(float(np.median(r["times"])), 3), "min_s": round(min(r["times"]), 3),
             "memory_mb": r["memory_mb"], "load1": round(os.getloadavg()[0], 1)} for chunk, r in runs.items()]


def main(argv=None) -> int:
    from jaxdd.cli._common import parse_sets
    from jaxdd.data import load_dataset
    from jaxdd.distill import RealData
    from jaxdd.models import create_network
    from jaxdd.utils.io import format_table, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="embedded")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="convnet")
    p.add_argument("--methods", default="dc,dsa,dm")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--iterations", type=int, default=2,
                   help="timed iterations per method after a warm-up (0: time the warm-up iteration itself)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="config overrides for every method (DC-only fields are skipped for DM)")
    p.add_argument("--real-chunks", default=None, metavar="N,N,...",
                   help="instead: time each method with these real chunks (0 = all at once), alternating rounds")
    p.add_argument("--out", default="runs/bench_distill.json")
    args = p.parse_args(argv)

    from jaxdd.distill import method_spec

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    real = RealData.from_dataset(ds)
    net = create_network(args.model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    sets = parse_sets(args.set)
    load_before = os.getloadavg()[0]
    rows = []
    for name in args.methods.split(","):
        fields = {f for f in method_spec(name).config_cls.__dataclass_fields__}
        overrides = {k: v for k, v in sets.items() if k in fields}
        if args.real_chunks:
            chunk_rows = bench_real_chunks(name, net, real, args.ipc, args.iterations, overrides,
                                           [int(c) for c in args.real_chunks.split(",")])
            rows.extend(chunk_rows)
            print(format_table(chunk_rows), flush=True)
            continue
        row = bench(name, net, real, args.ipc, args.iterations, overrides)
        rows.append(row)
        print(format_table([{k: v for k, v in row.items() if k != "config"}]), flush=True)
    load_after = os.getloadavg()[0]
    cols = ["method", "ipc", "batch_real", "loops", "compile_s", "s_per_it", "cpu_s_per_it", "it_per_s", "memory_mb"]
    if args.real_chunks:
        cols = ["method", "ipc", "real_chunk", "compile_s", "s_per_it", "min_s", "memory_mb", "load1"]
    print(format_table(rows, cols))
    print(f"load average (1 min): {load_before:.1f} before, {load_after:.1f} after; {os.cpu_count()} CPUs")
    write_json(args.out, {"benchmark": "distill", "command": " ".join(["python", "benchmarks/distill.py", *sys.argv[1:]]),
                          "dataset": ds.name, "model": args.model, "rows": rows, "load_before": load_before,
                          "load_after": load_after, "cpus": os.cpu_count(), "platform": platform.platform(),
                          "jax": jax.__version__, "backend": jax.default_backend()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
