"""Training the small prior: the autoencoder (latent diffusion only), then the denoiser.

Phase 1 (``ae_steps``, skipped for pixel-space priors): the KL autoencoder objective of
:func:`~jaxdd.generative.autoencoder.autoencoder_loss`. At the switch the latent scale factor
``1 / std(encoder means)`` is measured on the training set (LDM, Rombach et al., 2022, App. G).

Phase 2 (``steps``): epsilon prediction with classifier-free-guidance class dropout (Ho et al.,
DDPM, 2020, eq. 14; Ho & Salimans, 2022)::

    L = E_{z0, y, t ~ U{0..T-1}, eps ~ N(0, I)} || eps - eps_theta(sqrt(ab_t) z0 + sqrt(1 - ab_t) eps, t, c) ||^2,
    c = table[y], replaced by the null row table[-1] with probability p_uncond,

on the denoiser and the embedding table (the autoencoder is frozen), with Adam (linear warm-up,
cosine decay to 10 %), global-norm clipping and an EMA of the weights (decay
``min(ema_decay, (1 + n) / (10 + n))`` after n steps) that is what gets saved and sampled.

Step s draws its batch and noise from ``fold_in(key, s)`` so a resumed run repeats the
uninterrupted one bit for bit (:func:`train_prior` with a checkpoint folder).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdd.generative.autoencoder import autoencoder_loss
from jaxdd.generative.prior import SmallPrior, check_compatible, null_embedding, save_prior
from jaxdd.generative.schedule import q_sample
from jaxdd.utils.io import to_jsonable


@dataclasses.dataclass(frozen=True)
class PriorTrainConfig:
    steps: int = 4000
    ae_steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    ae_lr: float = 1e-3
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    p_uncond: float = 0.1
    kl_weight: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "ae_steps", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond (class dropout) must lie in [0, 1), got {self.p_uncond}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")


class PriorTrainState(NamedTuple):
    step: jax.Array          # () int32, global step (autoencoder steps first)
    params: dict             # the prior's parameters (raw, trained)
    ema: dict                # EMA of params["unet"], params["embedding"]
    ae_opt: Any
    opt: Any
    latent_scale: jax.Array  # () float32, 1.0 until measured


def _schedule(lr: float, warmup: int, total: int):
    warmup = min(warmup, max(total - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total, warmup + 1), end_value=0.1 * lr)


def optimizers(config: PriorTrainConfig) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """(autoencoder optimiser, denoiser optimiser)."""
    def make(lr, total):
        return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(_schedule(lr, config.warmup_steps, total)))
    return make(config.ae_lr, config.ae_steps), make(config.lr, config.steps)


def _trainable(params: dict) -> dict:
    return {"unet": params["unet"], "embedding": params["embedding"]}


def init_train_state(prior: SmallPrior, config: PriorTrainConfig, key: jax.Array) -> PriorTrainState:
    params = prior.init(key)
    ae_tx, tx = optimizers(config)
    return PriorTrainState(step=jnp.zeros((), jnp.int32), params=params, ema=_trainable(params),
                           ae_opt=ae_tx.init(params.get("autoencoder", {})), opt=tx.init(_trainable(params)),
                           latent_scale=jnp.ones((), jnp.float32))


def ema_params(state: PriorTrainState) -> dict:
    """The parameters to sample with and save: the EMA denoiser/table, the autoencoder."""
    return {**state.params, **state.ema}


def diffusion_loss(prior: SmallPrior, params: dict, z0: jax.Array, labels: jax.Array, key: jax.Array,
                   p_uncond: float) -> jax.Array:
    """Mean squared epsilon error with class dropout (module docstring)."""
    k_t, k_eps, k_drop = jax.random.split(key, 3)
    n = z0.shape[0]
    t = jax.random.randint(k_t, (n,), 0, prior.num_timesteps)
    eps = jax.random.normal(k_eps, z0.shape, z0.dtype)
    c = prior.embedding_table(params)[labels]
    drop = jax.random.uniform(k_drop, (n, 1)) < p_uncond
    c = jnp.where(drop, null_embedding(prior, params, n), c)
    pred = prior.eps(params, q_sample(prior.schedule, z0, t, eps), t, c)
    return jnp.mean((pred - eps) ** 2)


def _batch(key: jax.Array, n: int, batch_size: int) -> jax.Array:
    return jax.random.randint(key, (batch_size,), 0, n)


@functools.partial(jax.jit, static_argnames=("prior", "config"))
def ae_update(prior: SmallPrior, config: PriorTrainConfig, state: PriorTrainState, x: jax.Array,
              key: jax.Array) -> tuple[PriorTrainState, dict]:
    """One autoencoder step on a random batch of ``x`` (all training images)."""
    k_batch, k_z = jax.random.split(jax.random.fold_in(key, state.step))
    xb = x[_batch(k_batch, x.shape[0], config.batch_size)]
    (loss, parts), grads = jax.value_and_grad(
        lambda p: autoencoder_loss(prior.autoencoder, p, xb, k_z, config.kl_weight), has_aux=True)(
        state.params["autoencoder"])
    tx, _ = optimizers(config)
    updates, ae_opt = tx.update(grads, state.ae_opt, state.params["autoencoder"])
    params = {**state.params, "autoencoder": optax.apply_updates(state.params["autoencoder"], updates)}
    return state._replace(step=state.step + 1, params=params, ae_opt=ae_opt), {"loss": loss, **parts}


@functools.partial(jax.jit, static_argnames=("prior", "config"))
def diffusion_update(prior: SmallPrior, config: PriorTrainConfig, state: PriorTrainState, z: jax.Array,
                     y: jax.Array, key: jax.Array) -> tuple[PriorTrainState, dict]:
    """One denoiser step on a random batch of latents ``z`` (all, pre-encoded) with labels ``y``."""
    k_batch, k_loss = jax.random.split(jax.random.fold_in(key, state.step))
    idx = _batch(k_batch, z.shape[0], config.batch_size)
    loss, grads = jax.value_and_grad(
        lambda tr: diffusion_loss(prior, {**state.params, **tr}, z[idx], y[idx], k_loss, config.p_uncond))(
        _trainable(state.params))
    _, tx = optimizers(config)
    updates, opt = tx.update(grads, state.opt, _trainable(state.params))
    trained = optax.apply_updates(_trainable(state.params), updates)
    n = (state.step - config.ae_steps).astype(jnp.float32)
    decay = jnp.minimum(config.ema_decay, (1.0 + n) / (10.0 + n))
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, trained)
    return state._replace(step=state.step + 1, params={**state.params, **trained}, ema=ema, opt=opt), {"loss": loss}


@functools.partial(jax.jit, static_argnames=("prior",))
def _encode_chunk(prior: SmallPrior, params: dict, x: jax.Array) -> jax.Array:
    return prior.encode(params, x)


def in_batches(fn, n: int, batch_size: int, *arrays: Any, progress: str | None = None,
               pad_to_batch: bool = False) -> Any:
    """``concat_j fn(j, *batch_j)`` over batches of ``batch_size`` rows of ``arrays`` (n rows; each a
    pytree of arrays); the last batch is padded with zeros (and the padding dropped) so that one
    compilation serves every batch. With ``n < batch_size`` the one batch has n rows, or
    ``batch_size`` rows with ``pad_to_batch`` (one compilation for every n: for accelerators, where
    compiling costs more than the padded rows). ``fn`` may return a pytree of arrays with a leading
    batch axis."""
    from tqdm.auto import tqdm

    b = max(1, batch_size if pad_to_batch else min(batch_size, n))
    out = []
    pad = lambda c, k: np.concatenate([c, np.zeros((b - k, *c.shape[1:]), c.dtype)]) if k < b else c  # noqa: E731
    for j, i in enumerate(tqdm(range(0, n, b), desc=progress, disable=progress is None, leave=False)):
        k = min(b, n - i)
        chunk = [jax.tree.map(lambda a: jnp.asarray(pad(np.asarray(a[i:i + b]), k)), a) for a in arrays]
        out.append(jax.tree.map(lambda o: np.asarray(o)[:k], fn(j, *chunk)))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *out)


def encode_all(prior: SmallPrior, params: dict, x: np.ndarray, batch_size: int = 1000) -> jax.Array:
    """Latents of every image, in batches."""
    x = np.asarray(x, np.float32)
    return jnp.asarray(in_batches(lambda j, xb: _encode_chunk(prior, params, xb), len(x), batch_size, x))


def measure_latent_scale(prior: SmallPrior, params: dict, x: np.ndarray, max_images: int = 10000) -> float:
    """``1 / std`` of the (unscaled) encoder means over up to ``max_images`` training images."""
    unscaled = dataclasses.replace(prior, latent_scale=1.0)
    z = encode_all(unscaled, params, np.asarray(x)[:max_images])
    return float(1.0 / max(float(jnp.std(z)), 1e-6))


def save_sample_grid(path, prior, params, dataset, key, per_class: int = 8, num_steps: int = 50,
                     guidance_scale: float = 2.0) -> str:
    """A PNG with one row of ``per_class`` samples per class (in the dataset's pixel space)."""
    from jaxdd.generative.prior import to_dataset_space
    from jaxdd.generative.sampling import generate
    from jaxdd.utils.images import save_class_grid

    labels = np.repeat(np.arange(prior.num_classes), per_class)
    imgs = generate(prior, params, labels, key, steps=num_steps, cfg_scale=guidance_scale)
    imgs = np.asarray(to_dataset_space(prior, imgs, dataset.mean, dataset.std))
    return save_class_grid(path, dataset.denormalize(imgs), labels, prior.num_classes, per_class)


def train_prior(prior: SmallPrior, dataset, config: PriorTrainConfig, out: str | Path | None = None, *,
                resume: bool = False, sample_every: int = 500, checkpoint_every: int = 500,
                log_every: int = 100, grid_per_class: int = 8, sample_steps: int = 50,
                guidance_scale: float = 2.0, progress: bool = True, stop_at: int | None = None):
    """Train ``prior`` on ``dataset``'s training split; returns ``(prior, params, history)``.

    With ``out``: orbax checkpoints in ``out/checkpoints`` every ``checkpoint_every`` steps (and at
    the end), ``resume=True`` continues from the latest one, per-class sample grids
    ``out/samples/step_*.png`` every ``sample_every`` denoiser steps, and the prior itself
    (``prior.json`` + ``params.npz``, EMA weights) at every grid and at the end.
    ``stop_at`` ends the run early at that global step (to test resuming).
    """
    from tqdm.auto import tqdm

    from jaxdd.utils.checkpoint import Checkpointer

    check_compatible(prior, dataset, where="the prior to train")
    if prior.autoencoder is None and config.ae_steps:
        config = dataclasses.replace(config, ae_steps=0)
    key = jax.random.key(config.seed)
    k_init, k_train, k_grid = jax.random.split(key, 3)
    state = init_train_state(prior, config, k_init)
    history: list[dict] = []
    total = config.ae_steps + config.steps
    ckpt = None
    meta_base = json.loads(json.dumps(to_jsonable({  # as it reads back from a checkpoint's JSON
        "prior_config": prior.config(), "train_config": dataclasses.asdict(config), "dataset": dataset.describe()})))
    if out is not None:
        out = Path(out)
        ckpt = Checkpointer(out / "checkpoints", max_to_keep=2)
        if ckpt.latest_step() is not None:
            if not resume:
                raise ValueError(f"{out} already holds a training run (checkpoint step {ckpt.latest_step()}): pass "
                                 "--resume to continue it, or choose another --out folder")
            step, state, meta = ckpt.restore_latest(state)
            saved = {k: meta.get(k) for k in ("prior_config", "train_config")}
            if saved["prior_config"] != meta_base["prior_config"] or saved["train_config"] != meta_base["train_config"]:
                raise ValueError(f"{out}: the checkpoint was written with another prior or training configuration; "
                                 "resume with the same options, or choose another --out folder")
            history = list(meta.get("history", []))
    x = jnp.asarray(dataset.x_train)
    y = jnp.asarray(dataset.y_train)
    t0 = time.time()
    elapsed0 = history[-1]["seconds"] if history else 0.0
    z = None  # the training latents, encoded once the autoencoder is final
    start = int(state.step)
    end = total if stop_at is None else min(stop_at, total)
    losses: list[float] = []
    bar = tqdm(range(start, end), desc="prior", disable=not progress, dynamic_ncols=True, initial=start, total=total)
    for s in bar:
        if s < config.ae_steps:
            state, metrics = ae_update(prior, config, state, x, k_train)
            phase = "autoencoder"
        else:
            if z is None:
                if prior.autoencoder is not None:
                    if s == config.ae_steps:  # the first denoiser step: measure the latent scale
                        scale = measure_latent_scale(prior, state.params, dataset.x_train)
                        state = state._replace(latent_scale=jnp.float32(scale))
                        if out is not None:
                            save_recon_grid(out / "reconstructions.png", prior, state.params, dataset)
                    prior = dataclasses.replace(prior, latent_scale=float(state.latent_scale))
                z = encode_all(prior, state.params, dataset.x_train)
            state, metrics = diffusion_update(prior, config, state, z, y, k_train)
            phase = "denoiser"
        losses.append(float(metrics["loss"]))
        done = s + 1
        if done % log_every == 0 or done == end or done == config.ae_steps:
            history.append({"step": done, "phase": phase, "loss": float(np.mean(losses)),
                            "seconds": round(elapsed0 + time.time() - t0, 1)})
            losses = []
            bar.set_postfix(phase=phase[:4], loss=f"{history[-1]['loss']:.4f}")
        if out is not None and phase == "denoiser" and ((done - config.ae_steps) % sample_every == 0 or done == total):
            params = ema_params(state)
            save_sample_grid(out / "samples" / f"step_{done:06d}.png", prior, params, dataset, k_grid,
                             per_class=grid_per_class, num_steps=sample_steps, guidance_scale=guidance_scale)
            save_prior(out, prior, params, {**meta_base, "step": done, "history": history, "complete": done == total})
        if ckpt is not None and (done % checkpoint_every == 0 or done == end):
            ckpt.save(done, state, {**meta_base, "history": history})
    bar.close()
    if ckpt is not None:
        ckpt.close()
    if prior.autoencoder is not None:
        prior = dataclasses.replace(prior, latent_scale=float(state.latent_scale))
    return prior, ema_params(state), history


def save_recon_grid(path, prior: SmallPrior, params: dict, dataset, n: int = 16) -> str:
    """Real images (top row) and their autoencoder reconstructions (bottom row)."""
    from jaxdd.utils.images import save_image_grid

    x = np.asarray(dataset.x_train[:n])
    rec = np.asarray(prior.autoencoder.apply({"params": params["autoencoder"]}, jnp.asarray(x)))
    return save_image_grid(path, dataset.denormalize(np.concatenate([x, rec])), nrow=n)
