"""jaxdd eval and jaxdd baseline: score training sets with the evaluation protocol.

    jaxdd eval --distilled runs/dm10/distilled --model convnet,resnet18 --preset dc-dsa --num-models 5
    jaxdd eval --distilled runs/dm10/distilled --metrics lrs,ars --real-acc 88.65 --out runs/dm10/robust.json
    jaxdd baseline --dataset fashion_mnist --ipc 1,10,50 --full --select random --out runs/baseline.json

eval trains fresh networks of every listed architecture on the distilled set only and tests them
on the real test set (mean ± std over models); --metrics lrs,ars adds DD-Ranking's label- and
augmentation-robust scores (jaxdd.evaluate.robust). baseline does the same for IPC random real
images per class, or IPC chosen by k-Center greedy / Herding on ConvNet features (--select),
and the full training set with --full, and writes a PNG grid of each set next to the JSON
(<out stem>_<select>_ipc<K>.png). Presets: dc, dc-dsa (dsa, dm), mtt, datm, lr-grid.
"""

from __future__ import annotations

import argparse

from jaxdd.cli._common import (add_alias, add_config_arg, add_dataset_args, add_model_arg, add_parser, add_seed_arg,
                               settings)


def _common_args(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--preset", default="dc", help="evaluation preset: dc, dc-dsa (dsa, dm), mtt, datm, lr-grid")
    p.add_argument("--num-models", type=int, default=None,
                   help="networks trained per result (default: the preset's, 5)")
    add_alias(p, "--models", "--num-models")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's, 300 or 1000)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's, or the set's "
                   "learned lr)")
    p.add_argument("--devices", type=int, default=None, help="split every batch over this many devices (default: "
                   "one device)")
    p.add_argument("--out", default=None, help=out_help)
    add_seed_arg(p)


def register(subparsers) -> None:
    doc = __doc__.split("\n\n")
    description = "\n\n".join(doc)
    p = add_parser(subparsers, "eval", description, "evaluate a distilled set (cross-architecture)")
    add_config_arg(p)
    p.add_argument("--distilled", required=True, help="distilled-set folder (distilled.npz + distilled.json)")
    add_dataset_args(p, default=None)
    p._option_string_actions["--dataset"].help = "dataset name or path (default: the one the set was distilled from)"
    add_model_arg(p, "networks to evaluate", several=True, old=("--archs", "--arch"))
    p.add_argument("--metrics", default="", help="also DD-Ranking's robust scores: lrs (label-robust), ars "
                   "(augmentation-robust), e.g. lrs,ars; trains extra models on random real images of the same IPC "
                   "(and on the full data for lrs unless --real-acc) (default: none)")
    p.add_argument("--real-acc", type=float, default=None, help="known full-data test accuracy in %% for LRS "
                   "(e.g. from jaxdd baseline --full; default: train on the full training split)")
    p.add_argument("--lrs-weight", type=float, default=0.5, help="w in LRS: w IOR - (1 - w) HLR")
    p.add_argument("--ars-weight", type=float, default=0.5, help="gamma in ARS")
    _common_args(p, "results JSON file (default: runs/eval-NAME.json, NAME the set's run folder)")
    p.set_defaults(func=cmd_eval)

    b = add_parser(subparsers, "baseline", description, "random-real (and full-data) baselines under a preset")
    add_config_arg(b)
    add_dataset_args(b)
    b.add_argument("--ipc", default="1,10,50", help="comma-separated images per class")
    b.add_argument("--full", action="store_true", help="also train on the full training set")
    add_model_arg(b, "network", old=("--arch",))
    b.add_argument("--select", default="random", choices=["random", "kcenter", "herding"],
                   help="how the IPC images per class are chosen: random real, k-Center greedy or Herding "
                   "on ConvNet features (jaxdd.prune.coreset)")
    b.add_argument("--embed-epochs", type=int, default=0, help="kcenter/herding: train the feature ConvNet on the "
                   "full training split for this many epochs first (0: a randomly initialised ConvNet)")
    b.add_argument("--save-sets", action="store_true", help="also save each chosen set as a distilled-set folder "
                   "<out stem>_<select>_ipc<K>/ (e.g. for jaxdd eval --metrics lrs,ars)")
    _common_args(b, "results JSON file (default: runs/baseline-DATASET-SELECT.json)")
    b.set_defaults(func=cmd_baseline)


def cmd_eval(args: argparse.Namespace) -> int:
    from jaxdd.evaluate.run import run_eval

    run_eval(settings(args), args.out)
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from jaxdd.prune.run import run_baseline

    run_baseline(settings(args), args.out)
    return 0
