"""jaxdd pool: build a pool of candidate images for difficulty-guided sampling (jaxdd sample).

    jaxdd pool --method dm --runs 5 --ipc 10 --dataset fashion_mnist --out runs/pool_dm
    jaxdd pool --method real --ipc 10 --dataset fashion_mnist --out runs/pool_real
    jaxdd pool --from runs/dm_a/distilled runs/dm_b/distilled --dataset fashion_mnist --out runs/pool_ab

--method M runs the distillation method M --runs times (seeds seed .. seed+runs-1) at IPC K
through the distillation driver and pools the results: 5 runs give the default pool size of
5 x IPC per class. real draws --size (default 5 x IPC) random real images per class. --from
pools existing distilled-set folders, pool folders or .npz files. Writes pool.npz + pool.json
(jaxdd.sample.pool), pool.png and pool_build.json.
"""

from __future__ import annotations

import argparse

from jaxdd.cli._common import (SetAction, add_alias, add_config_arg, add_dataset_args, add_model_arg, add_parser,
                               add_seed_arg)
from jaxdd.sample.run import POOL_FACTOR


def register(subparsers) -> None:
    p = add_parser(subparsers, "pool", __doc__, "build a pool of candidate images for jaxdd sample (DGS)")
    add_config_arg(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--method", help="distillation method to run several times (e.g. dm, dc), or real "
                     "(one of --method / --from is required)")
    src.add_argument("--from", dest="sources", nargs="+", metavar="PATH",
                     help="pool these distilled-set folders, pool folders or .npz files (default: none)")
    add_dataset_args(p)
    p.add_argument("--ipc", type=int, default=None, help="images per class of each run (required with --method)")
    p.add_argument("--runs", type=int, default=POOL_FACTOR, help="distillation runs")
    p.add_argument("--size", type=int, default=None,
                   help=f"with --method real: images per class (default: {POOL_FACTOR} x IPC)")
    p.add_argument("--iterations", type=int, default=None, help="distillation iterations per run "
                   "(default: the method's)")
    add_model_arg(p, "network the method distils with")
    p.add_argument("--real-batch-size", dest="batch_real", type=int, default=None, metavar="N",
                   help="real images per class per matching step (default: the method's)")
    add_alias(p, "--batch-real", "--real-batch-size")
    p.add_argument("--set", dest="settings", action=SetAction, default={}, metavar="FIELD=VALUE",
                   help="any other method config field (VALUE parsed as JSON, else a string); repeatable "
                   "(default: none)")
    p.add_argument("--out", required=True, help="output pool folder")
    add_seed_arg(p)
    p.set_defaults(func=cmd_pool)


def cmd_pool(args: argparse.Namespace) -> int:
    from jaxdd.cli._common import settings
    from jaxdd.sample.run import run_pool

    if not args.method and not args.sources:
        raise ValueError("name the pool's source: --method M (or real) or --from PATH ...")
    run_pool(settings(args), args.out)
    return 0
