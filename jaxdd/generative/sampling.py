"""The one DDIM sampler every caller uses: ``jaxdd prior sample``, LD3M's generator, DAG and ACS.

:func:`sample_latents` runs deterministic DDIM (:func:`jaxdd.generative.ddim.ddim_sample`) with
classifier-free guidance and, inside a step window, the gradient terms of
:mod:`jaxdd.generative.guidance`; :func:`generate_batch` (jitted) draws ``z_T ~ N(0, I)`` from
``key``, samples and decodes; :func:`generate` does it in batches (batch j from
``fold_in(key, j)``, so the result does not depend on how many batches ran before a restart).

Step window *(open in DAG and ACS; IGD's choice)*: the window ``(lo, hi)`` counts steps like IGD's
respaced timesteps, from ``S - 1`` (the first, noisiest step) down to 0 (the last): a step with
sampling-order index i is guided when ``lo <= S - 1 - i <= hi``. IGD guides steps 30-45 of 50
(the noisy middle: the image's layout and class evidence form there, while the last steps only
add detail that a classifier gradient would turn into adversarial noise); :func:`default_window`
keeps those fractions, 0.6-0.9 of S, for any S.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.generative.ddim import Guidance, ddim_sample
from jaxdd.generative.guidance import GuidanceInputs, Term, guidance_delta
from jaxdd.generative.prior import DiffusionPrior

DEFAULT_STEPS = 50
DEFAULT_CFG = 2.0


def default_window(steps: int) -> tuple[int, int]:
    """IGD's window 30-45 of 50 as fractions 0.6-0.9 of ``steps`` (see module docstring)."""
    return int(round(0.6 * steps)), min(steps - 1, int(round(0.9 * steps)))


def window_steps(steps: int, window: tuple[int, int] | None) -> tuple[int, ...]:
    """Sampling-order indices i of the steps inside ``window`` (``lo <= S - 1 - i <= hi``)."""
    lo, hi = default_window(steps) if window is None else (int(window[0]), int(window[1]))
    if not 0 <= lo <= hi <= steps - 1:
        raise ValueError(f"guidance window ({lo}, {hi}) must satisfy 0 <= lo <= hi <= {steps - 1} (steps "
                         f"counted down from {steps - 1}, the noisiest, to 0); e.g. --window "
                         f"{default_window(steps)[0]},{default_window(steps)[1]}")
    return tuple(i for i in range(steps) if lo <= steps - 1 - i <= hi)


def active_terms(guidance: Sequence[Term]) -> tuple[Term, ...]:
    """The terms with a non-zero scale (zero-scale terms are dropped: bit-identical to unguided)."""
    names = [t.name for t in guidance]
    if len(set(names)) != len(names):
        raise ValueError(f"guidance term names must be unique (their aux is keyed by name), got {names}")
    return tuple(t for t in guidance if t.scale > 0)


def sample_latents(prior: DiffusionPrior, params: Any, z_T: jax.Array, c: jax.Array, *, steps: int = DEFAULT_STEPS,
                   cfg_scale: float = 1.0, guidance: Sequence[Term] = (), window: tuple[int, int] | None = None,
                   labels: jax.Array | None = None, key: jax.Array | None = None, aux: dict | None = None,
                   sample_aux: dict | None = None, skip: jax.Array | None = None, remat: bool = False) -> jax.Array:
    """Clean latents from ``z_T`` (N, *latent) with embeddings ``c`` (N, D): DDIM with CFG ``cfg_scale``
    and the ``guidance`` terms inside ``window``; ``skip``/``remat`` as in :func:`ddim_sample` (LD3M).
    Guidance needs ``labels`` (N,), ``key`` (step i uses ``fold_in(key, i)``) and the terms' aux."""
    terms = active_terms(guidance)
    hooks = ()
    if terms:
        if labels is None or key is None:
            raise ValueError("guided sampling needs the labels and a PRNG key")
        aux, sample_aux = dict(aux or {}), dict(sample_aux or {})

        def delta(ctx):
            inputs = GuidanceInputs(ctx.z_t, ctx.t, ctx.step, ctx.alpha_bar, ctx.x0_hat, ctx.eps, labels,
                                    jax.random.fold_in(key, ctx.step), aux, sample_aux,
                                    lambda z: ctx.denoise(z)[1], ctx.decode)
            return guidance_delta(terms, inputs)

        hooks = (Guidance(delta, steps=window_steps(steps, window), mode="post"),)
    return ddim_sample(prior, params, z_T, c, num_steps=steps, guidance_scale=cfg_scale, hooks=hooks, skip=skip,
                       remat=remat)


@functools.partial(jax.jit, static_argnames=("prior", "steps", "cfg_scale", "guidance", "window"))
def generate_batch(prior: DiffusionPrior, params: Any, labels: jax.Array, key: jax.Array, aux: dict | None = None,
                   sample_aux: dict | None = None, *, steps: int = DEFAULT_STEPS, cfg_scale: float = DEFAULT_CFG,
                   guidance: tuple[Term, ...] = (), window: tuple[int, int] | None = None
                   ) -> tuple[jax.Array, jax.Array]:
    """``(images, latents)`` for ``labels`` (N,): ``z_T ~ N(0, I)`` from ``key``, :func:`sample_latents`
    (guidance key ``fold_in(key, 1)``), decode. Images are in the prior's normalisation."""
    labels = jnp.asarray(labels, jnp.int32)
    z_T = jax.random.normal(key, (labels.shape[0], *prior.latent_shape), jnp.float32)
    c = prior.embedding_table(params)[labels]
    z0 = sample_latents(prior, params, z_T, c, steps=steps, cfg_scale=cfg_scale, guidance=guidance, window=window,
                        labels=labels, key=jax.random.fold_in(key, 1), aux=aux, sample_aux=sample_aux)
    return prior.decode(params, z0), z0


def generate(prior: DiffusionPrior, params: Any, labels: np.ndarray, key: jax.Array, *, steps: int = DEFAULT_STEPS,
             cfg_scale: float = DEFAULT_CFG, guidance: Sequence[Term] = (), window: tuple[int, int] | None = None,
             aux: dict | None = None, sample_aux: dict | None = None, batch_size: int = 100,
             progress: str | bool | None = None, return_latents: bool = False, pad_to_batch: bool = False):
    """Images (N, *image_shape) in the prior's normalisation for ``labels`` (and the latents with
    ``return_latents``), in batches of ``batch_size``: batch j is :func:`generate_batch` with
    ``fold_in(key, j)``; ``sample_aux`` (leading N axis) is batched with the labels.
    ``pad_to_batch``: pad N < ``batch_size`` up to it, so that one compilation serves every N
    (:func:`jaxdd.generative.training.in_batches`); with JAX's partitionable threefry (the default)
    the samples are the unpadded ones up to floating-point differences of the batch shape."""
    from jaxdd.generative.training import in_batches

    labels = np.asarray(labels, np.int32)
    guidance = tuple(guidance)
    window_steps(steps, window)  # validate before any work
    if len(labels) == 0:
        out = (np.zeros((0, *prior.image_shape), np.float32), np.zeros((0, *prior.latent_shape), np.float32))
    else:
        desc = ("sample" if progress is True else progress) or None
        out = in_batches(lambda j, lb, sa: generate_batch(prior, params, lb, jax.random.fold_in(key, j), aux, sa,
                                                          steps=steps, cfg_scale=float(cfg_scale), guidance=guidance,
                                                          window=window),
                         len(labels), batch_size, labels, dict(sample_aux or {}), progress=desc,
                         pad_to_batch=pad_to_batch)
    return out if return_latents else out[0]
