"""``run_prior_train(config, workdir)``: build a ``SmallPrior`` from the settings of ``jaxdd prior
train`` (a mapping, ``ConfigDict`` or ``argparse.Namespace``), train it on the dataset
(:func:`jaxdd.generative.training.train_prior`), print the loss curve and write the prior to ``workdir``."""

from __future__ import annotations

import time
from pathlib import Path


def run_prior_train(config, workdir: str | Path | None = None):
    """Train the prior the settings describe into ``workdir`` (default ``config.out``, else
    ``priors/DATASET``); returns ``(prior, params, history)``."""
    from jaxdd.data import load_dataset
    from jaxdd.generative.prior import SmallPrior, num_params
    from jaxdd.generative.training import PriorTrainConfig, train_prior
    from jaxdd.utils.config import as_fields
    from jaxdd.utils.io import check_output, format_table, read_json, require_local

    c = as_fields(config)
    require_local(workdir or c.out, "--out", "prior training (jaxdd.generative.training)")
    ds = load_dataset(c.dataset, data_dir=c.data_dir, zca=c.zca)
    prior = SmallPrior(num_classes=ds.num_classes, image_shape=ds.image_shape,
                       pixel_mean=tuple(map(float, ds.mean)), pixel_std=tuple(map(float, ds.std)),
                       embedding_dim=c.embedding_dim, unet_width=c.width, unet_mults=tuple(c.mults),
                       unet_depth=c.depth, attention=not c.no_attention, latent=c.latent,
                       latent_channels=c.latent_channels, ae_width=c.ae_width, ae_downsamples=c.ae_downsamples,
                       noise_schedule=c.schedule, num_timesteps=c.timesteps)
    train_config = PriorTrainConfig(steps=c.steps, ae_steps=c.ae_steps if c.latent == "vae" else 0,
                                    batch_size=c.batch_size, lr=c.lr, ae_lr=c.ae_lr, ema_decay=c.ema_decay,
                                    p_uncond=c.p_uncond, seed=c.seed)
    out = check_output(workdir or c.out or f"priors/{ds.name}", folder=True)
    t0 = time.time()
    prior, params, history = train_prior(
        prior, ds, train_config, out, resume=c.resume, sample_every=c.sample_every,
        checkpoint_every=c.checkpoint_every, grid_per_class=c.grid_per_class, sample_steps=c.sample_steps,
        guidance_scale=c.cfg, progress=not c.no_progress)
    meta = read_json(out / "prior.json")
    every = max(1, len(history) // 12)
    print(format_table(history[::every] + ([history[-1]] if (len(history) - 1) % every else []),
                       ["step", "phase", "loss", "seconds"]))
    print()
    print(format_table([{"dataset": ds.name, "latent": "x".join(map(str, prior.latent_shape)),
                         "params": num_params(params), "steps": f"{train_config.ae_steps}+{train_config.steps}",
                         "final_loss": history[-1]["loss"] if history else float("nan"),
                         "seconds": round(time.time() - t0, 1), "complete": meta["metadata"].get("complete")}]))
    print(f"wrote {out}/prior.json, params.npz, samples/, checkpoints/")
    return prior, params, history
