"""Where a DC / DSA iteration spends its time: the parts of one outer step, timed separately.

    python benchmarks/dc_profile.py [--dataset fashion_mnist] [--method dc] [--ipc 10] [--epochs 5]
                                    [--rounds 2] [--baseline] [--ops N] --out dc_profile.json

Parts, each its own compiled program (compile excluded), timed in alternating rounds in one
process (wall and process CPU time, ``resource.getrusage``):

* ``match``: the gradient of the matching loss w.r.t. the synthetic images for all classes
  (the method's memory plan: class batch and real chunk as ``update`` would choose them);
* ``inner``: ``--epochs`` epochs of the inner network training on the synthetic set
  (``train_network``, a ``lax.scan``, as inside ``update``); the per-epoch time is reported;
* ``step``: one jitted SGD step on the synthetic set outside any loop (the per-call cost the
  ``inner`` scan avoids).

``estimate_s`` extrapolates one iteration at the authors' loops: ``outer x match + (outer - 1) x
inner_loop x inner-epoch`` (CPU seconds and wall seconds). ``--baseline`` also times every part
with the convolution JVP of session 6 (input-gradient convolution in XLA's transposed layout),
alternating with the current one, to measure the change. ``--ops N`` lists each part's N most
expensive XLA instructions (``_bench.op_times``: a profiler trace of one run matched to the optimized
HLO), to see which layer and pass the time goes to.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _session6_conv2d():
    """The convolution of session 6: its JVP's input part in the HWIO layout (the input gradient
    is then XLA's transposed-layout convolution, slow inside loops on CPU)."""
    from jaxdd.models import layers

    @functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
    def conv2d(x, kernel, strides, padding):
        return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=layers._CONV_DN)

    @conv2d.defjvp
    def _jvp(strides, padding, primals, tangents):
        (x, kernel), (dx, dk) = primals, tangents
        y = conv2d(x, kernel, strides, padding)
        xp = jnp.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),))
        (sh, sw), (ho, wo) = strides, y.shape[1:3]
        offsets = [(h, w) for h in range(kernel.shape[0]) for w in range(kernel.shape[1])]
        parts = [jnp.einsum("npqi,io->npqo", xp[:, h:h + sh * (ho - 1) + 1:sh, w:w + sw * (wo - 1) + 1:sw], dk[h, w])
                 for h, w in offsets]
        return y, jax.lax.conv_general_dilated(dx, kernel, strides, padding, dimension_numbers=layers._CONV_DN) + sum(parts)

    return conv2d


def main(argv=None) -> int:
    from jaxdd.data import load_dataset
    from jaxdd.distill import RealData, build_method
    from jaxdd.models import create_network, layers
    from jaxdd.utils.io import format_table, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--method", default="dc", choices=("dc", "dsa"))
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--epochs", type=int, default=5, help="inner-training epochs in the timed 'inner' part")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--parts", default="match,inner,step")
    p.add_argument("--baseline", action="store_true", help="also time the session-6 convolution JVP (A/B)")
    p.add_argument("--plans", default=None, metavar="K:R,...",
                   help="time 'match' with these (class batch, real chunk; 0 = all at once) instead of the memory plan")
    p.add_argument("--ops", type=int, default=0, metavar="N",
                   help="also list each part's N most expensive XLA instructions (a profiler trace of one run)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    real = RealData.from_dataset(ds)
    net = create_network("convnet", num_classes=ds.num_classes, input_shape=ds.image_shape)
    method = build_method(args.method, net, dataset=ds, ipc=args.ipc)
    cfg = method.config
    state = method.init(jax.random.key(0), real)
    variables = net.init(jax.random.key(1))
    x_real, w = method._real_batch(jax.random.key(2), real)
    plan = method.memory_plan(real)
    key = jax.random.key(3)
    trainer = method._trainer()
    opt = trainer.config.optimizer(cfg.lr_net).init(variables["params"])
    short = build_method(args.method, net, dataset=ds, ipc=args.ipc, inner_loop=args.epochs)

    def match(p):
        return (lambda im, v, xr, k: jax.grad(lambda i: method.matching_loss(i, state.labels, v, xr, w, k, p)[0])(im),
                (state.images, variables, x_real, key))

    parts = {
        "match": match(plan),
        "inner": (lambda v, im, k: short.train_network(v, im, state.labels, k), (variables, state.images, key)),
        "step": (lambda v, o, im, k: trainer.model_step(v, o, im, state.labels, k, jnp.float32(cfg.lr_net))[0],
                 (variables, opt, state.images, key)),
    }
    for kr in (args.plans.split(",") if args.plans else []):
        k, r = (int(v) for v in kr.split(":"))
        parts[f"match{k}:{r}"] = match((k, r or None))
    if args.plans:
        args.parts = ",".join(name for name in args.parts.split(",") if name != "match")
        args.parts = ",".join(filter(None, [args.parts, *(n for n in parts if n.startswith("match") and ":" in n)]))
    variants = {"now": layers.conv2d}
    if args.baseline:
        variants["session6"] = _session6_conv2d()
    compiled = {}
    for name in args.parts.split(","):
        fn, fargs = parts[name]
        for var, conv in variants.items():
            layers.conv2d = conv  # layers.conv looks the function up at trace time
            try:
                t = time.time()
                c = jax.jit(lambda *a, fn=fn: fn(*a)).lower(*fargs).compile()  # a new function: no trace cache
                compile_s = time.time() - t
            finally:
                layers.conv2d = variants["now"]
            jax.block_until_ready(c(*fargs))  # warm-up
            compiled[(name, var)] = {"c": c, "args": fargs, "compile_s": round(compile_s, 1), "wall": [], "cpu": []}
            print(f"compiled {name} ({var}) in {compile_s:.1f} s", flush=True)
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for r in compiled.values():
            t, c = time.time(), _cpu()
            jax.block_until_ready(r["c"](*r["args"]))
            r["wall"].append(time.time() - t)
            r["cpu"].append(_cpu() - c)
    rows = []
    for (name, var), r in compiled.items():
        div = args.epochs if name == "inner" else 1
        rows.append({"part": name + (" (per epoch)" if name == "inner" else ""), "conv": var,
                     "compile_s": r["compile_s"], "wall_s": round(float(np.median(r["wall"])) / div, 3),
                     "cpu_s": round(float(np.median(r["cpu"])) / div, 3)})
    by = {(r["part"].split()[0], r["conv"]): r for r in rows}
    for var in variants:
        if ("match", var) in by and ("inner", var) in by:
            m, i = by[("match", var)], by[("inner", var)]
            n_inner = (cfg.outer_loop - 1) * cfg.inner_loop
            rows.append({"part": f"estimate: {cfg.outer_loop} x match + {n_inner} x inner epoch", "conv": var,
                         "compile_s": None, "wall_s": round(cfg.outer_loop * m["wall_s"] + n_inner * i["wall_s"], 1),
                         "cpu_s": round(cfg.outer_loop * m["cpu_s"] + n_inner * i["cpu_s"], 1)})
    load_after = os.getloadavg()[0]
    ops = {}
    if args.ops:
        from _bench import op_times

        for (name, var), r in compiled.items():
            ops[f"{name} ({var})"] = op_times(r["c"], r["args"], top=args.ops)
            print(f"\n{name} ({var}): the {args.ops} most expensive XLA instructions of one run")
            print(format_table(ops[f"{name} ({var})"]))
    print(format_table(rows))
    print(f"plan {plan}; load average (1 min) {load_before:.1f} before, {load_after:.1f} after; {os.cpu_count()} CPUs")
    if args.out:
        write_json(args.out, {"benchmark": "dc_profile", "command": " ".join(["python", "benchmarks/dc_profile.py",
                                                                              *sys.argv[1:]]),
                              "method": args.method, "ipc": args.ipc, "loops": [cfg.outer_loop, cfg.inner_loop],
                              "plan": list(plan), "rows": rows, "ops": ops, "load_before": load_before,
                              "load_after": load_after,
                              "cpus": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
