"""SDC overhead on DM: seconds per jitted DM update without SDC, with SDC through the fast exact
per-example gradient norms (``jaxdd.difficulty.grad_norms``, what SDC uses) and with SDC through
the ``vmap(grad)`` reference (``grand_reference``, what SDC used before).

    python benchmarks/sdc_overhead.py [--dataset embedded] [--model convnet] [--ipc 10] [--batch-real 256]
                                      [--iterations 3] [--sdc 0.01] --out runs/bench_sdc.json

Each variant is compiled (timed separately), warmed up once, then timed over ``--iterations``
updates (median wall and process-CPU seconds). The table gives each variant's time and its ratio
to DM without SDC; the 1-minute load average before and after is recorded: on a shared machine
compare the ratios of one run rather than absolute times across runs. A run on 2 shared CPU cores
(load 19-22): ``benchmarks/results/sdc_overhead.json``.
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
from distill import bench  # the timing of benchmarks/distill.py: compile, warm-up, median of timed updates


def main(argv=None) -> int:
    import jaxdd.difficulty.sdc as losses  # where sdc_penalty looks up per_example_grad_norms
    from jaxdd.data import load_dataset
    from jaxdd.difficulty import grand_reference
    from jaxdd.distill import RealData
    from jaxdd.models import create_network
    from jaxdd.utils.io import format_table, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="embedded")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="convnet")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--sdc", type=float, default=0.01)
    p.add_argument("--iterations", type=int, default=3, help="timed updates per variant (after a warm-up)")
    p.add_argument("--out", default="runs/bench_sdc.json")
    args = p.parse_args(argv)

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    real = RealData.from_dataset(ds)
    net = create_network(args.model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    settings = dict(batch_real=args.batch_real)
    fast = losses.per_example_grad_norms
    variants = [("dm", 0.0, fast), ("dm + sdc (fast norms)", args.sdc, fast),
                ("dm + sdc (vmap(grad))", args.sdc, lambda n, v, x, y: grand_reference(n, v, x, y))]
    load_before = os.getloadavg()[0]
    rows = []
    try:
        for label, sdc, norms in variants:
            losses.per_example_grad_norms = norms  # resolved when the update is traced
            row = bench("dm", net, real, args.ipc, args.iterations, {**settings, "sdc": sdc})
            rows.append({"variant": label, **row})
            print(f"{label}: {rows[-1]['s_per_it']} s/it", flush=True)
    finally:
        losses.per_example_grad_norms = fast
    base = rows[0]["s_per_it"]
    for r in rows:
        r["ratio_to_dm"] = round(r["s_per_it"] / base, 3)
    load_after = os.getloadavg()[0]
    print(format_table([{k: r[k] for k in ("variant", "s_per_it", "ratio_to_dm", "cpu_s_per_it", "compile_s",
                                            "memory_mb")} for r in rows]))
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    write_json(args.out, {"benchmark": "sdc_overhead", "dataset": ds.name, "model": args.model, "ipc": args.ipc,
                          "settings": settings,
                          "sdc": args.sdc, "iterations": args.iterations, "rows": rows,
                          "load_avg_1min": [load_before, load_after], "backend": jax.default_backend(),
                          "devices": len(jax.devices()), "cpu_count": os.cpu_count(),
                          "machine": platform.machine()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
