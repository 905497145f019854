"""LD3M: dataset distillation in the latent space of a frozen diffusion model (Moser et al.,
"Latent Dataset Distillation with Diffusion Models", 2024).

Each synthetic image i has a learnable latent ``z_i`` (initialised by encoding a real image of
its class) and class embedding ``c_i`` (initialised from the prior's embedding table), plus a
fixed noise draw ``n_i``. The generator is deterministic DDIM with S steps (default 10) from
``z_T = sqrt(alpha_bar_{T-1}) z + sqrt(1 - alpha_bar_{T-1}) n`` in which, at step index
``k = S-1 .. 0`` (K = S-1), the predicted clean latent becomes ``(1 - k/K) x0_hat + (k/K) z``
(so the first step uses z itself), followed by the decoder; see :mod:`jaxdd.generative.ddim`.

Memory (paper §3.3): the images are generated without gradients, the matching loss gives
``dL/dimages``, and ``dL/d(z, c)`` is obtained by a vjp through the generator chunk by chunk
(``chunk_size`` images at a time, ``lax.map``) with every DDIM step rematerialised
(``jax.checkpoint``): memory grows with the chunk size, not with the number of images, and with
one latent per step instead of every activation of every step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.generative.ddim import noise_to_last_step
from jaxdd.generative.prior import DiffusionPrior, from_dataset_space, to_dataset_space
from jaxdd.generative.sampling import sample_latents


@dataclasses.dataclass(frozen=True)
class LD3MGenerator:
    """The frozen generator G(z, c) -> images in the dataset's normalisation (hashable config).

    ``mean``/``std``: the dataset's per-channel normalisation (None: keep the prior's).
    """

    prior: DiffusionPrior
    num_steps: int = 10
    guidance_scale: float = 1.0
    chunk_size: int = 16
    remat: bool = True
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.num_steps < 1:
            raise ValueError(f"LD3M needs at least one DDIM step, got num_steps={self.num_steps}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        for name in ("mean", "std"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(v) for v in np.ravel(getattr(self, name))))

    def __call__(self, params: Any, z: jax.Array, c: jax.Array, noise: jax.Array) -> jax.Array:
        """Images for latents z (N, *latent_shape), embeddings c (N, D), noise like z (differentiable)."""
        z_T = noise_to_last_step(self.prior, z, noise)
        z0 = sample_latents(self.prior, params, z_T, c, steps=self.num_steps, cfg_scale=self.guidance_scale,
                            skip=z, remat=self.remat)
        images = self.prior.decode(params, z0)
        if self.mean is None:
            return images
        return to_dataset_space(self.prior, images, self.mean, self.std)

    def encode(self, params: Any, images: jax.Array) -> jax.Array:
        """Latents of images given in the dataset's normalisation (LD3M's real initialisation)."""
        if self.mean is not None:
            images = from_dataset_space(self.prior, images, self.mean, self.std)
        return self.prior.encode(params, images)

    def _chunked(self, fn: Callable, *arrays: jax.Array) -> Any:
        """Apply ``fn`` to ``chunk_size`` rows at a time (sequentially, ``lax.map``), trim padding."""
        n = arrays[0].shape[0]
        b = min(self.chunk_size, n)
        pad = -n % b
        chunks = [jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)).reshape(-1, b, *a.shape[1:]) for a in arrays]
        out = jax.lax.map(lambda xs: fn(*xs), tuple(chunks))
        return jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:])[:n], out)

    def generate(self, params: Any, z: jax.Array, c: jax.Array, noise: jax.Array) -> jax.Array:
        """All images, chunk by chunk, without building a backward pass."""
        params = jax.lax.stop_gradient(params)
        return jax.lax.stop_gradient(self._chunked(lambda *a: self(params, *a), z, c, noise))

    def vjp(self, params: Any, z: jax.Array, c: jax.Array, noise: jax.Array,
            g_images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(dL/dz, dL/dc)`` given ``g_images = dL/dimages``, chunk by chunk (see module doc)."""
        def chunk(z, c, noise, g):
            _, pullback = jax.vjp(lambda z, c: self(params, z, c, noise), z, c)
            return pullback(g)

        return self._chunked(chunk, z, c, noise, g_images)

    def value_and_grad(self, loss_fn: Callable[[jax.Array], tuple[jax.Array, Any]], params: Any,
                       z: jax.Array, c: jax.Array, noise: jax.Array):
        """``((loss, aux), (dL/dz, dL/dc))`` for ``loss_fn(images) -> (loss, aux)`` through G."""
        images = self.generate(params, z, c, noise)
        (loss, aux), g_images = jax.value_and_grad(loss_fn, has_aux=True)(images)
        return (loss, aux), self.vjp(params, z, c, noise, g_images)
