"""jaxdd prune: keep a fraction of the training set chosen by difficulty score.

    jaxdd prune --dataset fashion_mnist --scores runs/scores.npz --keep 0.6 --order easy --out runs/subset.npz

Keeps round(keep · n_c) (at least 1) examples of every class c (or of the whole set with
--global): the lowest scores (easy), the highest (hard), or a random draw. The scores must come
from jaxdd score on the same dataset. subset.npz is an npz dataset file: pass it as --dataset
subset.npz to any command (distillation, evaluation, scoring), or as --subset to jaxdd distill.
<out>.json records the config and the per-class counts.
"""

from __future__ import annotations

import argparse

from jaxdd.cli._common import add_config_arg, add_dataset_args, add_parser, add_seed_arg, settings


def register(subparsers) -> None:
    from jaxdd.prune import ORDERS

    p = add_parser(subparsers, "prune", __doc__, "keep the easiest/hardest/random fraction of a dataset by score")
    add_config_arg(p)
    add_dataset_args(p)
    p.add_argument("--scores", required=True, help="scores.npz written by jaxdd score")
    p.add_argument("--keep", type=float, required=True, help="fraction to keep, in (0, 1]")
    p.add_argument("--order", default="easy", choices=ORDERS, help="which examples to keep")
    p.add_argument("--global", dest="global_", action="store_true", help="rank over the whole set, not per class")
    p.add_argument("--out", required=True, help="output .npz dataset file")
    add_seed_arg(p)
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from jaxdd.prune.run import run_prune

    run_prune(settings(args), args.out)
    return 0
