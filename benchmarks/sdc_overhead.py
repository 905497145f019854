"""SDC overhead on DM: seconds per jitted DM update without SDC, with SDC through the fast exact
per-example gradient norms (``jaxdd.difficulty.grad_norms``, what SDC uses), with the same norms
forced to the direct conv form (``method="direct"``: what ``auto`` chose for the ConvNet before the
pixel-Gram form) and with SDC through the ``vmap(grad)`` reference (``grand_reference``).

    python benchmarks/sdc_overhead.py [--dataset embedded] [--model convnet] [--ipc 10] [--batch-real 256]
                                      [--iterations 3] [--sdc 0.01] [--skip-vmap] --out runs/bench_sdc.json
    python benchmarks/sdc_overhead.py --conv-forms [--iterations 5] --out runs/bench_conv_forms.json

Every variant is compiled (timed separately) and warmed up once; then the variants are timed in
``--iterations`` alternating rounds (so a changing machine load hits each alike): median wall and
process-CPU seconds. The table gives each variant's time and its ratios to DM without SDC (wall and
CPU); the 1-minute load average before and after is recorded: on a shared machine compare the
ratios of one run rather than absolute times across runs.

``--conv-forms`` instead times the per-example squared kernel-gradient norms of one 3x3 conv
(batch 100) and their gradient w.r.t. the layer input and output gradient, direct vs Gram form,
for a few feature-map sizes and widths (the calibration of ``_GHOST_ADVANTAGE`` in
``jaxdd/difficulty/gradnorm.py``). Runs: ``benchmarks/results/sdc_overhead*.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from _bench import alternate, compiled_memory_bytes, megabytes

CONV_SHAPES = ((16, 64, 64), (16, 128, 128), (12, 128, 128), (8, 64, 64), (8, 128, 128))  # (H=W, Cin, Cout)


def conv_forms(rounds: int) -> list[dict]:
    from jaxdd.difficulty import gradnorm

    fns, rows = {}, []
    for hw, cin, cout in CONV_SHAPES:
        a = jax.random.normal(jax.random.key(0), (100, hw, hw, cin))
        g = jax.random.normal(jax.random.key(1), (100, hw, hw, cout))
        for method in ("direct", "ghost"):
            def norms(a, g, method=method):
                return jnp.sum(jnp.sqrt(gradnorm._conv_weight_sq(a, g, (3, 3), (1, 1), ((1, 1), (1, 1)), method)))
            for part, fn in (("value", norms), ("gradient", jax.grad(norms, (0, 1)))):
                fns[(hw, cin, cout, method, part)] = (jax.jit(fn).lower(a, g).compile(), (a, g))
    times = alternate(fns, rounds)
    for (hw, cin, cout, method, part), (wall, cpu) in times.items():
        p = hw * hw
        direct = p * 9 * cin * cout
        gram = p * p * cout + p * p * cin + 9 * p * p  # the pixel-Gram form at stride 1
        rows.append({"shape": f"{hw}x{hw}, {cin}->{cout}", "direct/gram multiply-adds": round(direct / gram, 2),
                     "form": method, "part": part, "s": round(wall, 4), "cpu_s": round(cpu, 4)})
    return rows


def main(argv=None) -> int:
    import jaxdd.difficulty.sdc as losses  # where sdc_penalty looks up per_example_grad_norms
    from jaxdd.data import load_dataset
    from jaxdd.difficulty import grad_norms, grand_reference
    from jaxdd.distill import RealData, build_method
    from jaxdd.models import create_network
    from jaxdd.utils.io import format_table, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="embedded")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="convnet")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--sdc", type=float, default=0.01)
    p.add_argument("--iterations", type=int, default=3, help="alternating timed rounds (after a warm-up)")
    p.add_argument("--skip-vmap", action="store_true", help="leave out the vmap(grad) variant")
    p.add_argument("--conv-forms", action="store_true", help="instead: time the conv norm forms (module docstring)")
    p.add_argument("--out", default="runs/bench_sdc.json")
    args = p.parse_args(argv)
    machine = {"backend": jax.default_backend(), "devices": len(jax.devices()), "cpu_count": os.cpu_count(),
               "machine": platform.machine()}
    load_before = os.getloadavg()[0]
    if args.conv_forms:
        rows = conv_forms(args.iterations)
        load_after = os.getloadavg()[0]
        print(format_table(rows))
        print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
        write_json(args.out, {"benchmark": "sdc_conv_forms", "batch": 100, "iterations": args.iterations, "rows": rows,
                              "load_avg_1min": [load_before, load_after], **machine})
        print(f"wrote {args.out}")
        return 0

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    real = RealData.from_dataset(ds)
    net = create_network(args.model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    settings = dict(batch_real=args.batch_real)
    fast = losses.per_example_grad_norms
    variants = [("dm", 0.0, fast), ("dm + sdc (fast norms)", args.sdc, fast),
                ("dm + sdc (fast norms, direct conv form)", args.sdc,
                 lambda n, v, x, y: grad_norms(n, v, x, y, method="direct"))]
    if not args.skip_vmap:
        variants.append(("dm + sdc (vmap(grad))", args.sdc, lambda n, v, x, y: grand_reference(n, v, x, y)))
    fns, rows = {}, []
    try:
        for label, sdc, norms in variants:
            losses.per_example_grad_norms = norms  # resolved when the update is traced
            method = build_method("dm", net, ipc=args.ipc, sdc=sdc, **settings)
            state = method.init(jax.random.key(0), real)
            t = time.time()
            compiled = jax.jit(lambda s, r, m=method: m.update(s, r)).lower(state, real).compile()
            rows.append({"variant": label, "compile_s": round(time.time() - t, 1),
                         "memory_mb": megabytes(compiled_memory_bytes(compiled))})
            fns[label] = (compiled, (state, real))
            print(f"{label}: compiled in {rows[-1]['compile_s']} s", flush=True)
    finally:
        losses.per_example_grad_norms = fast
    times = alternate(fns, args.iterations)
    base_wall, base_cpu = times["dm"]
    for r in rows:
        wall, cpu = times[r["variant"]]
        r.update(s_per_it=round(wall, 4), cpu_s_per_it=round(cpu, 4), ratio_to_dm=round(wall / base_wall, 3),
                 cpu_ratio_to_dm=round(cpu / base_cpu, 3))
    load_after = os.getloadavg()[0]
    print(format_table([{k: r[k] for k in ("variant", "s_per_it", "cpu_s_per_it", "ratio_to_dm", "cpu_ratio_to_dm",
                                            "compile_s", "memory_mb")} for r in rows]))
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    write_json(args.out, {"benchmark": "sdc_overhead", "dataset": ds.name, "model": args.model, "ipc": args.ipc,
                          "settings": settings, "sdc": args.sdc, "iterations": args.iterations,
                          "timing": "alternating rounds", "rows": rows,
                          "load_avg_1min": [load_before, load_after], **machine})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
