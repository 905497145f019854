"""``jaxdd pool``: build a pool of candidate images for difficulty-guided sampling (``jaxdd sample``).

    jaxdd pool --method dm --runs 5 --ipc K --dataset NAME --out pool/ [--iterations N] [--seed 0]
    jaxdd pool --method real --ipc K [--size S] --dataset NAME --out pool/
    jaxdd pool --from run1/ run2/ extra.npz --dataset NAME --out pool/

``--method M`` runs the distillation method M ``--runs`` times (seeds ``seed .. seed+runs-1``) at
IPC K through the distillation driver and pools the results: 5 runs give the default pool size of
5 x IPC per class. ``real`` draws ``--size`` (default 5 x IPC) random real images per class.
``--from`` pools existing distilled-set folders, pool folders or .npz files. Writes
``pool.npz`` + ``pool.json`` (see :mod:`jaxdd.sample.pool`), ``pool.png`` and ``pool_build.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from jaxdd.cli._common import add_dataset_args, add_seed_arg, parse_sets
from jaxdd.utils.io import check_output, format_table, write_json

POOL_FACTOR = 5


def register(subparsers) -> None:
    p = subparsers.add_parser("pool", help="build a pool of candidate images for `jaxdd sample` (DGS)",
                              description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--method", help="distillation method to run several times (e.g. dm, dc), or 'real'")
    src.add_argument("--from", dest="sources", nargs="+", metavar="PATH",
                     help="pool these distilled-set folders, pool folders or .npz files")
    add_dataset_args(p)
    p.add_argument("--ipc", type=int, default=None, help="images per class of each run (required with --method)")
    p.add_argument("--runs", type=int, default=POOL_FACTOR, help=f"distillation runs (default {POOL_FACTOR})")
    p.add_argument("--size", type=int, default=None,
                   help=f"with --method real: images per class (default {POOL_FACTOR} x IPC)")
    p.add_argument("--iterations", type=int, default=None, help="distillation iterations per run "
                   "(default: the method's)")
    p.add_argument("--model", default="convnet", help="network the method distils with (default convnet)")
    p.add_argument("--batch-real", type=int, default=None, help="real images per class per matching step "
                   "(default: the method's)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other method config field (VALUE parsed as JSON, else a string); repeatable")
    p.add_argument("--out", required=True, help="output pool folder")
    add_seed_arg(p)
    p.set_defaults(func=cmd_pool)



def cmd_pool(args: argparse.Namespace) -> int:
    import jax

    from jaxdd.data.registry import load_dataset
    from jaxdd.sample.pool import concatenate_pools, load_pool, real_pool
    from jaxdd.utils.images import save_class_grid

    config = {"command": "pool", **{k: v for k, v in vars(args).items() if k != "func"}}
    start = time.time()
    check_output(args.out, folder=True)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, zca=args.zca)
    if args.sources:
        pool = concatenate_pools([load_pool(s, ds) for s in args.sources])
        pool = dataclasses.replace(pool, config=config)
    else:
        if args.ipc is None or args.ipc < 1:
            raise ValueError("--method needs --ipc K (images per class of each run, K >= 1)")
        if args.method == "real":
            size = args.size or POOL_FACTOR * args.ipc
            pool = real_pool(jax.random.key(args.seed), ds, size, config=config)
        else:
            if args.runs < 1:
                raise ValueError(f"--runs must be >= 1, got {args.runs}")
            from jaxdd.sample.pool import build_distill_pool

            overrides = parse_sets(args.settings)
            if args.batch_real is not None:
                overrides["batch_real"] = args.batch_real
            pool = build_distill_pool(args.method, ds, args.ipc, runs=args.runs, seed=args.seed,
                                      iterations=args.iterations, model=args.model, out=Path(args.out) / "runs",
                                      config=config, **overrides)
    pool.save(args.out)
    view = ds.denormalize if ds.zca is not None else (lambda x: np.clip(x * ds.std + ds.mean, 0, 1))
    save_class_grid(Path(args.out) / "pool.png", view(pool.images), pool.labels, ds.num_classes,
                    class_names=ds.class_names)
    rows = []
    for r, src in enumerate(pool.sources):
        mine = pool.run == r
        rows.append({"run": r, "kind": src.get("kind", "?"), "method": src.get("method") or "-",
                     "seed": src.get("seed", "-"), "images": int(mine.sum()),
                     "per class": " ".join(str(v) for v in np.bincount(pool.labels[mine], minlength=ds.num_classes))})
    elapsed = time.time() - start
    write_json(Path(args.out) / "pool_build.json", {"config": config, "pool": pool.describe(), "runs": rows,
                                                    "seconds": round(elapsed, 1)})
    print(format_table(rows, ["run", "kind", "method", "seed", "images", "per class"]))
    print(f"\npool of {len(pool)} images ({' '.join(str(v) for v in pool.class_sizes())} per class) for "
          f"{ds.name}; wrote {args.out}/pool.npz, pool.json, pool.png, pool_build.json ({elapsed:.1f} s)")
    return 0
