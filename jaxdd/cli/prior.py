"""jaxdd prior: train a class-conditional diffusion prior, sample a pool from it.

    jaxdd prior train --dataset fashion_mnist --steps 2000 --out runs/priors/fashion_mnist [--resume]
    jaxdd prior sample --prior runs/priors/fashion_mnist --per-class 50 --cfg 2 --out runs/prior_pool

train writes prior.json + params.npz (the EMA weights; used by --prior of jaxdd distill --method
ld3m, jaxdd generate and prior sample), samples/step_*.png (one row per class),
reconstructions.png (latent priors) and checkpoints/ (--resume continues a killed run
bit-identically). sample writes a pool (pool.npz + pool.json, read by jaxdd sample) and
samples.png; --classifier FOLDER (a classifier saved by jaxdd sample) adds the accuracy of that
real-data classifier on the samples of each class, a proxy of sample quality.
"""

from __future__ import annotations

import argparse

from jaxdd.cli._common import add_alias, add_config_arg, add_dataset_args, add_parser, add_seed_arg, settings


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2 (got {text!r})") from None


def register(subparsers) -> None:
    doc = __doc__.split("\n\n")
    p = add_parser(subparsers, "prior", __doc__, "train a diffusion prior, sample a pool from it")
    sub = p.add_subparsers(dest="prior_command", metavar="ACTION")

    t = add_parser(sub, "train", doc[0].replace("jaxdd prior:", "jaxdd prior train:") + "\n\n    " +
                   doc[1].strip().splitlines()[0].strip() + "\n\n" + doc[2],
                   "train a class-conditional (latent) diffusion prior on a dataset")
    add_config_arg(t)
    add_dataset_args(t)
    t.add_argument("--steps", type=int, default=4000, help="denoiser training steps")
    t.add_argument("--ae-steps", type=int, default=1500, help="autoencoder steps before them (0 with --latent none)")
    t.add_argument("--out", default=None, help="output folder (default: priors/DATASET)")
    t.add_argument("--latent", default="vae", choices=["vae", "none"],
                   help="vae: diffusion on the latents of a small KL autoencoder; none: in pixel space")
    t.add_argument("--latent-channels", type=int, default=4, help="channels of the autoencoder's latent")
    t.add_argument("--ae-width", type=int, default=16, help="autoencoder base width")
    t.add_argument("--ae-downsamples", type=int, default=2, help="latent grid = image size / 2^N")
    t.add_argument("--width", type=int, default=32, help="UNet base width")
    t.add_argument("--mults", type=_ints, default=(1, 2), help="UNet channel multipliers per level")
    t.add_argument("--depth", type=int, default=1, help="residual blocks per UNet level")
    t.add_argument("--no-attention", action="store_true", help="no self-attention at the lowest resolution")
    t.add_argument("--embedding-dim", type=int, default=64, help="class-embedding size")
    t.add_argument("--schedule", default="linear", choices=["linear", "cosine"], help="noise schedule")
    t.add_argument("--timesteps", type=int, default=1000, help="training timesteps T")
    t.add_argument("--batch-size", type=int, default=128, help="training batch size")
    t.add_argument("--lr", type=float, default=1e-3, help="denoiser Adam learning rate")
    t.add_argument("--ae-lr", type=float, default=1e-3, help="autoencoder Adam learning rate")
    t.add_argument("--p-uncond", type=float, default=0.1, help="class dropout for classifier-free guidance")
    t.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the saved weights")
    t.add_argument("--sample-every", type=int, default=500, help="denoiser steps between sample grids")
    t.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints")
    t.add_argument("--grid-per-class", type=int, default=8, help="samples per class in the grids")
    t.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of the sample grids")
    t.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale of the grids")
    add_alias(t, "--guidance", "--cfg")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_seed_arg(t)
    t.set_defaults(func=cmd_train)

    s = add_parser(sub, "sample", doc[0].replace("jaxdd prior:", "jaxdd prior sample:") + "\n\n    " +
                   doc[1].strip().splitlines()[1].strip() + "\n\n" + doc[2],
                   "class-conditional samples of a prior, written as a pool for jaxdd sample")
    add_config_arg(s)
    s.add_argument("--prior", required=True, help="prior folder (from jaxdd prior train)")
    s.add_argument("--per-class", type=int, required=True, help="samples per class")
    s.add_argument("--out", required=True, help="pool folder to write")
    s.add_argument("--steps", type=int, default=50, help="DDIM steps")
    s.add_argument("--cfg", type=float, default=2.0, help="classifier-free guidance scale")
    add_alias(s, "--guidance", "--cfg")
    s.add_argument("--batch-size", type=int, default=100, help="images sampled per batch")
    s.add_argument("--dataset", default=None, help="check the prior against this dataset and store the pool in "
                   "its normalisation (default: the prior's own)")
    s.add_argument("--data-dir", default=None, help="where the dataset's files live")
    s.add_argument("--classifier", default=None, help="score the samples with this saved real-data classifier")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_seed_arg(s)
    s.set_defaults(func=cmd_sample)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_train(args: argparse.Namespace) -> int:
    from jaxdd.generative.run import run_prior_train

    run_prior_train(settings(args), args.out)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from jaxdd.sample.run import run_prior_sample

    run_prior_sample(settings(args), args.out)
    return 0
