"""jaxdd distill: learn a synthetic set with a registered method (dc, dsa, dm, mtt, datm, ld3m).

    jaxdd distill                                   # the embedded default: DM, IPC 1, minutes on a CPU
    jaxdd distill --method dsa --dataset fashion_mnist --ipc 10 --sdc 0.01 --out runs/dsa10
    jaxdd distill --config dm_fmnist_ipc10 --config.ipc=50      # a packaged config, one field changed

Outputs in --out: distilled/ (the distilled set), results.json (config, evaluation, timing),
history.json (loss, synthetic-set GraNd, quick evaluations per iteration), grid.png,
difficulty.png, loss.png and checkpoints/ (--resume continues a killed run and ends bit-identical
to an uninterrupted one). Method settings not covered by a flag are set with --set FIELD=VALUE
(e.g. --set outer_loop=5 --set metric=mse). --config FILE|NAME reads every setting from a
get_config() file (jaxdd/configs/ holds the reported experiments'); flags given explicitly win.
"""

from __future__ import annotations

import argparse

from jaxdd.cli._common import (SetAction, add_alias, add_config_arg, add_model_arg, add_parser, add_seed_arg,
                               settings)


def register(subparsers) -> None:
    from jaxdd.distill import available_methods
    from jaxdd.distill.run import get_config

    d = get_config()
    p = add_parser(subparsers, "distill", __doc__, "distil a dataset (DC, DSA, DM, MTT, DATM, LD3M; SDC, subsets)")
    add_config_arg(p)
    p.add_argument("--method", default=d.method, choices=available_methods(), help="distillation method")
    p.add_argument("--dataset", default=d.dataset, help="dataset name (see jaxdd data list), tfds:NAME or a path")
    p.add_argument("--data-dir", default=d.data_dir, help="where the dataset's files live (TFDS data_dir, IDX folder)")
    p.add_argument("--zca", action="store_true", default=d.zca, help="ZCA-whiten the images (regularisation 0.1)")
    add_model_arg(p, "network to distil with", default=d.model)
    p.add_argument("--ipc", type=int, default=d.ipc, help="synthetic images per class")
    p.add_argument("--budget", default=d.budget, choices=["quick", "paper"],
                   help="defaults for the settings not given: quick = 200 iterations, real batch 64, final evaluation "
                   "3 models x 300 epochs, a quick evaluation every 100 iterations (minutes on a CPU); paper = "
                   "the authors' settings (DC/DSA 1000 iterations, DM 20000, real batch 256, the preset's "
                   "300/1000 epochs, 5 models); default: quick")
    p.add_argument("--iterations", type=int, default=d.iterations,
                   help="distillation iterations (default: from --budget)")
    p.add_argument("--sdc", type=float, default=d.sdc, help="SDC weight lambda (default: 0, off)")
    p.add_argument("--sdc-mode", default=d.sdc_mode, choices=["mean", "batch"],
                   help="SDC penalty: mean per-example gradient norm or batch-gradient norm (default: mean)")
    p.add_argument("--subset", default=d.subset, help="pruned subset (.npz from jaxdd prune) used as the real data")
    p.add_argument("--weights", default=d.weights,
                   help="difficulty scores (.npz with 'scores' [and 'train_indices']) turned into per-example "
                   "weights exp(-z/T) that favour easy examples (T = --weight-temperature)")
    p.add_argument("--weight-temperature", type=float, default=d.weight_temperature,
                   help="T of the difficulty weights; negative favours hard examples")
    p.add_argument("--init", default=d.init, choices=["real", "noise"],
                   help="initial synthetic images (default: real)")
    p.add_argument("--lr-img", type=float, default=d.lr_img, help="image learning rate (default: the method's)")
    p.add_argument("--real-batch-size", dest="batch_real", type=int, metavar="N", default=d.batch_real,
                   help="real images per class per step (default: from --budget)")
    add_alias(p, "--batch-real", "--real-batch-size")
    p.add_argument("--class-batch", type=int, default=d.class_batch,
                   help="classes processed together (default: chosen from XLA's memory estimate against the "
                   "available memory, printed; setting it skips that check)")
    p.add_argument("--prior", default=d.prior, help="ld3m: diffusion prior folder (from jaxdd prior train)")
    p.add_argument("--match", default=d.match, choices=["dm", "dc", "dsa", "mtt"],
                   help="ld3m: the matching loss computed on the generated images (default: dm)")
    p.add_argument("--set", dest="settings", action=SetAction, default=dict(d.settings), metavar="FIELD=VALUE",
                   help="any other method setting (repeatable), e.g. --set outer_loop=5 (default: none)")
    p.add_argument("--out", default=d.out, help="output folder (default: runs/distill-METHOD-DATASET-ipcK)")
    p.add_argument("--resume", action="store_true", default=d.resume,
                   help="continue the run in --out from its latest checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="iterations between checkpoints")
    p.add_argument("--track-every", type=int, default=d.track_every,
                   help="iterations between synthetic-set difficulty records (default: --checkpoint-every)")
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="iterations between quick evaluations (2 models x 50 epochs; default: 100 with --budget "
                   "quick, 500 with paper; 0: only the final evaluation)")
    p.add_argument("--eval-epochs", type=int, default=d.eval_epochs,
                   help="epochs of the final evaluation (default: from --budget)")
    p.add_argument("--eval-models", type=int, default=d.eval_models,
                   help="networks of the final evaluation (default: from --budget)")
    p.add_argument("--eval-preset", default=d.eval_preset,
                   help="evaluation preset: dc, dc-dsa, mtt, datm, lr-grid (default: dc, or dc-dsa for dsa/dm)")
    p.add_argument("--no-eval", action="store_true", default=d.no_eval, help="skip the final evaluation")
    p.add_argument("--devices", type=int, default=d.devices,
                   help="split the real batches over this many devices (default: one device)")
    p.add_argument("--no-progress", action="store_true", default=d.no_progress, help="no progress bars")
    add_seed_arg(p)
    p.set_defaults(func=cmd_distill)


def cmd_distill(args: argparse.Namespace) -> int:
    from jaxdd.distill.run import run_distill

    run_distill(settings(args), args.out)
    return 0
