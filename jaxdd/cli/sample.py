"""jaxdd sample: choose a distilled set from a pool by difficulty-guided sampling (DGS).

    jaxdd sample --pool runs/pool_dm --dataset fashion_mnist --ipc 10 --target real --out runs/dgs10
    jaxdd sample --pool runs/pool_dm --dataset fashion_mnist --ipc 10 --target random --out runs/rand10

A difficulty classifier is loaded from --classifier (or trained on the real data and saved there;
default OUT/classifier), scores the pool and the real training images (d = 1 - p(y|x)) and DGS
chooses IPC images per class (target random = uniform random choice from the same pool, the
baseline). Writes to OUT: the distilled set (distilled.npz + distilled.json), chosen.png (one row
per class), difficulty.png (histograms of the transformed difficulty of pool, real data and chosen
set), scores.npz (pool and real scores) and sample.json (config, per-class table).
"""

from __future__ import annotations

import argparse

from jaxdd.cli._common import add_alias, add_config_arg, add_dataset_args, add_model_arg, add_parser, add_seed_arg


def register(subparsers) -> None:
    p = add_parser(subparsers, "sample", __doc__, "choose a distilled set from a pool by difficulty (DGS)")
    add_config_arg(p)
    p.add_argument("--pool", required=True, help="pool folder (jaxdd pool), distilled-set folder or .npz "
                   "with images and labels")
    add_dataset_args(p)
    p.add_argument("--ipc", type=int, required=True, help="images per class to choose")
    p.add_argument("--target", default="real", help="real | uniform | hill | slope | cliff | random | a file of "
                   "10 bin weights (.json list, .npy, text)")
    p.add_argument("--out", required=True, help="output folder for the distilled set")
    p.add_argument("--classifier", default=None, help="difficulty classifier folder: loaded if it exists, "
                   "else trained and saved there (default: OUT/classifier)")
    add_model_arg(p, "difficulty classifier network", old=("--clf-model",))
    p.add_argument("--clf-epochs", type=int, default=None, help="classifier training epochs (default: 5)")
    p.add_argument("--num-models", type=int, default=1, help="ensemble size of the classifier")
    add_alias(p, "--clf-models", "--num-models")
    p.add_argument("--grid-size", type=int, default=None, help="(b, t) search grid {0..G-1}^2 (default: IPC // 2)")
    add_seed_arg(p)
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    from jaxdd.cli._common import settings
    from jaxdd.sample.run import run_sample

    run_sample(settings(args), args.out)
    return 0
