"""Peak memory and time of the MTT gradient in each memory mode, for several numbers of student steps.

    python benchmarks/mtt_memory.py                                   # ConvNet, Fashion-MNIST shapes, IPC 1
    python benchmarks/mtt_memory.py --ipc 10 --steps 10 20 40 80 --repeats 1 --out runs/bench/mtt_memory.json

For every (mode, syn_steps) the jitted ``value_and_grad`` of
:func:`jaxdd.distill.trajectory.trajectory_loss` w.r.t. the images and the learnable lr is lowered
and compiled; XLA's ``memory_analysis()`` gives the exact sizes of its buffer plan: temporaries
(activations, stored student states, scan residuals), arguments and outputs. "peak" is
temp + arguments + outputs (an upper bound of what the program holds at once). Then the compiled
function runs ``--repeats`` times (median wall time; ``--no-time`` skips it). Modes: ``unroll``,
``remat``, ``tesla`` (segments of ⌈√N⌉ steps) and ``tesla-all`` (every student state stored).
Goal (issue 5): with remat or the constant-memory mode, 80 steps use at most 1.5x the memory of 10.
Prints a table and writes JSON with the config.
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

from jaxdd.distill.base import available_memory_bytes
from jaxdd.distill.trajectory import resolve_checkpoint_every, trajectory_loss
from jaxdd.models import create_network
from jaxdd.utils.io import format_table, write_json

MODES = {"unroll": ("unroll", None), "remat": ("remat", None), "tesla": ("tesla", "sqrt"),
         "tesla-all": ("tesla", None)}
MIB = 2 ** 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="convnet")
    p.add_argument("--image-shape", type=int, nargs=3, default=[28, 28, 1], help="H W C (default Fashion-MNIST)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--ipc", type=int, default=1, help="images per class; the student batch is the whole set")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 80])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--dsa", action="store_true", help="per-sample DSA inside the student steps")
    p.add_argument("--sdc", type=float, default=0.0, help="SDC weight inside the student steps")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per setting (0 = compile only)")
    p.add_argument("--no-time", action="store_true", help="memory plan only, no runs")
    p.add_argument("--out", default="runs/bench/mtt_memory.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from tqdm.auto import tqdm

    args = parse_args(argv)
    shape = tuple(args.image_shape)
    net = create_network(args.arch, num_classes=args.classes, input_shape=shape)
    start = net.init(jax.random.key(0))["params"]
    target = jax.tree.map(lambda p: 0.9 * p, net.init(jax.random.key(1))["params"])
    n = args.classes * args.ipc
    x = jax.random.normal(jax.random.key(2), (n,) + shape, jnp.float32)
    y = jnp.repeat(jnp.arange(args.classes, dtype=jnp.int32), args.ipc)
    lr = jnp.float32(0.01)
    strategy = "color_crop_cutout_scale_rotate" if args.dsa else None
    param_mib = net.num_params() * 4 / MIB

    rows, results = [], []
    jobs = [(m, s) for m in args.modes for s in args.steps]
    for mode_name, steps in tqdm(jobs, desc="mtt memory", leave=False):
        memory, every = MODES[mode_name]

        def loss(images, lr_, steps=steps, memory=memory, every=every):
            return trajectory_loss(net, images, y, lr_, start, target, jax.random.key(3), syn_steps=steps,
                                   dsa_strategy=strategy, memory=memory, checkpoint_every=every, sdc=args.sdc)[0]

        fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        t0 = time.perf_counter()
        compiled = fn.lower(x, lr).compile()
        compile_s = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        temp, arg, out = mem.temp_size_in_bytes, mem.argument_size_in_bytes, mem.output_size_in_bytes
        seconds, skipped = None, None
        timed = not args.no_time and args.repeats > 0
        free = available_memory_bytes() if timed else None
        if free is not None and temp + arg + out > 0.9 * free:
            skipped = f"plan {(temp + arg + out) / MIB:.0f} MiB > 90% of the {free / MIB:.0f} MiB available"
        elif timed:
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(x, lr))
                times.append(time.perf_counter() - t0)
            seconds = float(np.median(times))
        k = resolve_checkpoint_every(every, steps) if memory == "tesla" else None
        results.append({"mode": mode_name, "syn_steps": steps, "segment": k, "temp_bytes": temp, "argument_bytes": arg,
                        "output_bytes": out, "peak_bytes": temp + arg + out, "compile_s": round(compile_s, 2),
                        "seconds": seconds, "not_timed": skipped})
    base = {r["mode"]: r["peak_bytes"] for r in results if r["syn_steps"] == min(args.steps)}
    for r in results:
        r["ratio_to_fewest_steps"] = r["peak_bytes"] / base[r["mode"]]
        rows.append({"mode": r["mode"], "steps": r["syn_steps"], "temp MiB": r["temp_bytes"] / MIB,
                     "peak MiB": r["peak_bytes"] / MIB, f"x {min(args.steps)} steps": r["ratio_to_fewest_steps"],
                     "s / iteration": f"{r['seconds']:.2f}" if r["seconds"] is not None
                     else "too big" if r["not_timed"] else "-",
                     "compile s": r["compile_s"]})
    table = format_table(rows)
    print(table)
    hi, lo = max(args.steps), min(args.steps)
    goal = {}
    for mode in ("remat", "tesla", "tesla-all"):
        rr = {r["syn_steps"]: r["peak_bytes"] for r in results if r["mode"] == mode}
        if hi in rr and lo in rr:
            goal[mode] = rr[hi] / rr[lo]
    if goal:
        print("\n" + ", ".join(f"{m}: {hi} steps = {v:.2f}x the memory of {lo}" for m, v in goal.items())
              + " (goal <= 1.5x for remat or the constant-memory mode)")
    write_json(args.out, {
        "config": {**vars(args), "network": net.name, "num_params": net.num_params(), "param_mib": param_mib,
                   "images": n},
        "environment": {"jax": jax.__version__, "backend": jax.default_backend(), "devices": len(jax.devices()),
                        "cpu_count": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        "results": results, "goal_ratios": goal, "table": rows})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
