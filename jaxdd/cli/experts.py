"""jaxdd experts: train expert trajectories for trajectory matching (MTT, DATM).

    jaxdd experts --dataset fashion_mnist --num-experts 5 --epochs 50 --out buffers/fashion_mnist
    jaxdd experts --dataset fashion_mnist --subset runs/subset.npz --model convnet-w32 --num-experts 5 --out buffers/w32

Trains N freshly initialised networks on the real training set (SGD lr 0.01, no momentum, batch
256, per-sample DSA; the MTT reference buffer.py), --parallel at a time (vmapped; with --devices
every batch is split over the devices), and saves every expert's parameters after every epoch as
one expert_XXXXX.npy (epochs + 1 rows) plus the index buffer.json (config, dataset, parameter
layout, per-expert accuracies). Rerunning the same command on the same folder resumes: finished
experts are kept, the next unfinished one is trained (a larger --num-experts adds experts).
Distil with jaxdd distill --method mtt|datm --set buffer=buffers/NAME.
"""

from __future__ import annotations

import argparse

from jaxdd.cli._common import (add_alias, add_config_arg, add_dataset_args, add_model_arg, add_parser, add_seed_arg,
                               settings)


def register(subparsers) -> None:
    p = add_parser(subparsers, "experts", __doc__, "train expert trajectories (MTT/DATM buffers), resumable")
    add_config_arg(p)
    add_dataset_args(p)
    p.add_argument("--num-experts", type=int, required=True, help="number of experts in the buffer")
    p.add_argument("--epochs", type=int, default=50, help="epochs per expert (50 in MTT)")
    p.add_argument("--out", required=True, help="buffer folder (resumed if it exists)")
    p.add_argument("--subset", default=None, help="train on a subset (.npz from jaxdd prune)")
    add_model_arg(p, "expert network", old=("--arch",))
    p.add_argument("--parallel", type=int, default=1,
                   help="experts trained at once, vmapped (1: XLA:CPU runs vmapped convolutions as grouped "
                   "convolutions, several times slower per model; raise it on a GPU/TPU) (default: 1)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (0 in MTT)")
    p.add_argument("--batch-size", type=int, default=256, help="training batch size")
    add_alias(p, "--batch", "--batch-size")
    p.add_argument("--no-dsa", action="store_true", help="train without DSA augmentation")
    p.add_argument("--devices", type=int, default=None, help="split every batch over this many devices "
                   "(default: one device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_seed_arg(p)
    p.set_defaults(func=cmd_experts)


def cmd_experts(args: argparse.Namespace) -> int:
    from jaxdd.experts.run import run_experts

    run_experts(settings(args), args.out)
    return 0
