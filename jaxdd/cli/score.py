"""jaxdd score: per-example difficulty scores of a dataset's training examples.

    jaxdd score --dataset fashion_mnist --score el2n --num-models 4 --epochs 2 --out runs/scores.npz
    jaxdd score --dataset fashion_mnist --score loss --checkpoint runs/model --out runs/scores.npz

Scores: grand, grand-last, el2n, loss, confidence, misclass, forgetting. Without --checkpoint K
seeded models are trained together for E epochs (SGD lr 0.01, momentum 0.9, weight decay 5e-4,
batch 256, no lr decay) and scored at the chosen epochs (default: the last; 0 = at
initialisation); the score is the mean over models and epochs. With --checkpoint the trained
model(s) stored there (jaxdd.utils.checkpoint) are scored as they are.

Writes scores.npz (scores aligned with the training examples, indices into the full training
split, labels, raw per epoch/model, config as JSON), <out>.json (config and per-class summary),
<out>_extremes.png (per class: easiest 8 | hardest 8) and <out>_hist.png (a histogram per
class). Easy = low score.
"""

from __future__ import annotations

import argparse

from jaxdd.cli._common import (add_alias, add_config_arg, add_dataset_args, add_model_arg, add_parser, add_seed_arg,
                               settings)


def register(subparsers) -> None:
    from jaxdd.difficulty.drivers import SCORES

    p = add_parser(subparsers, "score", __doc__, "per-example difficulty scores (GraNd, EL2N, loss, ...)")
    add_config_arg(p)
    add_dataset_args(p)
    p.add_argument("--score", default="el2n", choices=SCORES, help="which score")
    add_model_arg(p, "network")
    p.add_argument("--num-models", type=int, default=4, help="K: models trained and averaged")
    add_alias(p, "--models", "--num-models")
    p.add_argument("--epochs", type=int, default=10, help="E: training epochs")
    p.add_argument("--score-epochs", default=None, help="comma-separated epochs at which to score (default: E)")
    p.add_argument("--checkpoint", default=None, help="score the trained model(s) in this checkpoint folder instead")
    p.add_argument("--step", type=int, default=None, help="with --checkpoint: which step (default: latest)")
    p.add_argument("--resume-dir", default=None, help="save the ensemble run here after every epoch; rerunning "
                   "the same command resumes from the latest epoch")
    p.add_argument("--lr", type=float, default=0.01, help="training learning rate")
    p.add_argument("--train-batch-size", type=int, default=256, help="training batch size")
    add_alias(p, "--train-batch", "--train-batch-size")
    p.add_argument("--batch-size", type=int, default=256, help="scoring batch size")
    p.add_argument("--norm-method", default="auto", choices=("auto", "direct", "ghost"),
                   help="how grand computes the conv weight-gradient norms: direct, ghost (Goodfellow's trick) "
                   "or auto (the cheaper per layer)")
    add_alias(p, "--method", "--norm-method")
    p.add_argument("--devices", type=int, default=None, help="split batches over this many devices (default: one)")
    p.add_argument("--per-class-png", type=int, default=8, help="examples per class in the extremes PNG")
    p.add_argument("--out", required=True, help="output .npz file")
    add_seed_arg(p)
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    from jaxdd.difficulty.run import run_score

    run_score(settings(args), args.out)
    return 0
