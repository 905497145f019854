"""``jaxdd prior``: train a class-conditional diffusion prior, sample a pool from it.

    jaxdd prior train --dataset NAME --steps N --out priors/NAME [--latent vae|none] [--resume]
    jaxdd prior sample --prior priors/NAME --per-class K --out pool/ [--guidance W] [--steps S]

``train`` writes ``prior.json`` + ``params.npz`` (the EMA weights; used by ``--prior`` of
``jaxdd distill --method ld3m`` and ``prior sample``), ``samples/step_*.png`` (one row per class),
``reconstructions.png`` (latent priors) and ``checkpoints/`` (``--resume`` continues a killed run
bit-identically). ``sample`` writes a pool (``pool.npz`` + ``pool.json``, read by ``jaxdd sample``)
and ``samples.png``; ``--classifier FOLDER`` (a classifier saved by ``jaxdd sample``) adds the
accuracy of that real-data classifier on the samples of each class, a proxy of sample quality.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from jaxdd.cli._common import add_dataset_args, add_seed_arg


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2 (got {text!r})") from None


def register(subparsers) -> None:
    doc = __doc__.split("\n\n")
    p = subparsers.add_parser("prior", help="train a diffusion prior, sample a pool from it",
                              description="\n\n".join(doc[:3]), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="prior_command", metavar="ACTION")

    t = sub.add_parser("train", help="train a class-conditional (latent) diffusion prior on a dataset")
    add_dataset_args(t)
    t.add_argument("--steps", type=int, default=4000, help="denoiser training steps (default 4000)")
    t.add_argument("--ae-steps", type=int, default=1500, help="autoencoder steps before them (default 1500; "
                   "0 with --latent none)")
    t.add_argument("--out", default=None, help="output folder (default priors/DATASET)")
    t.add_argument("--latent", default="vae", choices=["vae", "none"],
                   help="vae: diffusion on the latents of a small KL autoencoder (default); none: in pixel space")
    t.add_argument("--latent-channels", type=int, default=4)
    t.add_argument("--ae-width", type=int, default=16)
    t.add_argument("--ae-downsamples", type=int, default=2, help="latent grid = image size / 2^N (default 2)")
    t.add_argument("--width", type=int, default=32, help="UNet base width (default 32)")
    t.add_argument("--mults", type=_ints, default=(1, 2), help="UNet channel multipliers per level (default 1,2)")
    t.add_argument("--depth", type=int, default=1, help="residual blocks per UNet level (default 1)")
    t.add_argument("--no-attention", action="store_true", help="no self-attention at the lowest resolution")
    t.add_argument("--embedding-dim", type=int, default=64, help="class-embedding size (default 64)")
    t.add_argument("--schedule", default="linear", choices=["linear", "cosine"])
    t.add_argument("--timesteps", type=int, default=1000, help="training timesteps T (default 1000)")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3, help="denoiser Adam lr (default 1e-3)")
    t.add_argument("--ae-lr", type=float, default=1e-3)
    t.add_argument("--p-uncond", type=float, default=0.1, help="class dropout for classifier-free guidance")
    t.add_argument("--ema-decay", type=float, default=0.999)
    t.add_argument("--sample-every", type=int, default=500, help="denoiser steps between sample grids")
    t.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints")
    t.add_argument("--grid-per-class", type=int, default=8)
    t.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of the sample grids")
    t.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale of the grids")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    t.add_argument("--no-progress", action="store_true")
    add_seed_arg(t)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="class-conditional samples of a prior, written as a pool for `jaxdd sample`")
    s.add_argument("--prior", required=True, help="prior folder (from `jaxdd prior train`)")
    s.add_argument("--per-class", type=int, required=True, help="samples per class")
    s.add_argument("--out", required=True, help="pool folder to write")
    s.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    s.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale (default 2)")
    s.add_argument("--batch-size", type=int, default=100)
    s.add_argument("--dataset", default=None, help="check the prior against this dataset and store the pool in "
                   "its normalisation (default: the prior's own)")
    s.add_argument("--data-dir", default=None)
    s.add_argument("--classifier", default=None, help="score the samples with this saved real-data classifier")
    s.add_argument("--no-progress", action="store_true")
    add_seed_arg(s)
    s.set_defaults(func=cmd_sample)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_train(args: argparse.Namespace) -> int:
    from jaxdd.data import load_dataset
    from jaxdd.generative import SmallPrior
    from jaxdd.generative.prior import num_params
    from jaxdd.generative.training import PriorTrainConfig, train_prior
    from jaxdd.utils.io import check_output, format_table, read_json

    ds = load_dataset(args.dataset, data_dir=args.data_dir, zca=args.zca)
    prior = SmallPrior(num_classes=ds.num_classes, image_shape=ds.image_shape,
                       pixel_mean=tuple(map(float, ds.mean)), pixel_std=tuple(map(float, ds.std)),
                       embedding_dim=args.embedding_dim, unet_width=args.width, unet_mults=args.mults,
                       unet_depth=args.depth, attention=not args.no_attention, latent=args.latent,
                       latent_channels=args.latent_channels, ae_width=args.ae_width,
                       ae_downsamples=args.ae_downsamples, noise_schedule=args.schedule, num_timesteps=args.timesteps)
    config = PriorTrainConfig(steps=args.steps, ae_steps=args.ae_steps if args.latent == "vae" else 0,
                              batch_size=args.batch_size, lr=args.lr, ae_lr=args.ae_lr, ema_decay=args.ema_decay,
                              p_uncond=args.p_uncond, seed=args.seed)
    out = check_output(args.out or f"priors/{ds.name}", folder=True)
    t0 = time.time()
    prior, params, history = train_prior(
        prior, ds, config, out, resume=args.resume, sample_every=args.sample_every,
        checkpoint_every=args.checkpoint_every, grid_per_class=args.grid_per_class, sample_steps=args.sample_steps,
        guidance_scale=args.guidance, progress=not args.no_progress)
    meta = read_json(out / "prior.json")
    every = max(1, len(history) // 12)
    print(format_table(history[::every] + ([history[-1]] if (len(history) - 1) % every else []),
                       ["step", "phase", "loss", "seconds"]))
    print()
    print(format_table([{"dataset": ds.name, "latent": "x".join(map(str, prior.latent_shape)),
                         "params": num_params(params), "steps": f"{config.ae_steps}+{config.steps}",
                         "final_loss": history[-1]["loss"] if history else float("nan"),
                         "seconds": round(time.time() - t0, 1), "complete": meta["metadata"].get("complete")}]))
    print(f"wrote {out}/prior.json, params.npz, samples/, checkpoints/")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from jaxdd.generative import check_compatible, load_prior, to_dataset_space
    from jaxdd.generative.sampling import generate
    from jaxdd.sample.pool import make_pool
    from jaxdd.utils.images import save_class_grid
    from jaxdd.utils.io import check_output, format_table, write_json

    if args.per_class < 1:
        raise ValueError(f"--per-class must be >= 1, got {args.per_class}")
    check_output(args.out, folder=True)
    prior, params, meta = load_prior(args.prior)
    dataset_name = meta.get("dataset", {}).get("name", Path(args.prior).name)
    class_names = meta.get("dataset", {}).get("class_names") or [str(c) for c in range(prior.num_classes)]
    mean, std = np.asarray(prior.pixel_mean, np.float32), np.asarray(prior.pixel_std, np.float32)
    ds = None
    if args.dataset:
        from jaxdd.data import load_dataset

        ds = load_dataset(args.dataset, data_dir=args.data_dir)
        check_compatible(prior, ds, where=f"prior {args.prior}")
        dataset_name, class_names, mean, std = ds.name, list(ds.class_names), ds.mean, ds.std
    labels = np.repeat(np.arange(prior.num_classes), args.per_class)
    t0 = time.time()
    images = generate(prior, params, labels, jax.random.key(args.seed), steps=args.steps, cfg_scale=args.guidance,
                      batch_size=args.batch_size, progress=not args.no_progress)
    seconds = time.time() - t0
    images = np.asarray(to_dataset_space(prior, images, mean, std), np.float32)
    config = {"command": "jaxdd prior sample", "prior": str(args.prior), "per_class": args.per_class,
              "steps": args.steps, "guidance": args.guidance, "seed": args.seed, "dataset": args.dataset,
              "seconds": round(seconds, 2)}
    pool = make_pool(images, labels, prior.num_classes, dataset_name, mean, std, seed=args.seed,
                     source_index=np.arange(len(labels)),
                     sources=[{"kind": "prior", "prior": str(args.prior), "steps": args.steps,
                               "guidance": args.guidance, "seed": args.seed}], config=config)
    out = Path(args.out)
    pool.save(out)
    save_class_grid(out / "samples.png", pool.denormalized(), labels, prior.num_classes, min(args.per_class, 10),
                    class_names=class_names)
    rows = [{"class": c, "name": class_names[c], "samples": int(args.per_class)} for c in range(prior.num_classes)]
    summary = {"config": config, "per_class": rows}
    if args.classifier:
        from jaxdd.difficulty.classifier import DifficultyClassifier
        from jaxdd.train import predict_logits

        clf = DifficultyClassifier.load(args.classifier, ds)
        preds = np.asarray(predict_logits(clf.net, clf.variables, images)).mean(0).argmax(-1)
        for r in rows:
            r["classifier_acc"] = float(np.mean(preds[labels == r["class"]] == r["class"]))
        summary["classifier"] = {"path": args.classifier, "accuracy": float(np.mean(preds == labels))}
    print(format_table(rows))
    if "classifier" in summary:
        print(f"real-data classifier accuracy on the samples: {100 * summary['classifier']['accuracy']:.1f} %")
    write_json(out / "sample.json", summary)
    print(f"{len(labels)} samples in {seconds:.1f} s; wrote {out}/pool.npz, pool.json, samples.png, sample.json")
    return 0

