"""A small convolutional (KL-regularised) autoencoder for latent diffusion (Rombach et al.,
LDM, 2022, §3.1): ``downsamples`` stride-2 stages map (H, W, C) images to a
(H / 2^d, W / 2^d, latent_channels) latent grid, e.g. 28x28x1 -> 7x7x4 with d = 2.

Encoder: ``Conv(width)``, then per stage ``blocks`` residual blocks and a stride-2
``Conv(width * 2^i) -> SiLU``, one residual block at the latent resolution, ``GroupNorm -> SiLU ->
Conv`` to (mean, log-variance). The decoder mirrors it with nearest-neighbour upsampling. With
``blocks = 0`` (the default) no residual block runs above the latent resolution, which keeps the
autoencoder cheap enough to train on a CPU.

The encoder outputs a diagonal Gaussian (mean, log-variance); training minimises
``||decode(z) - x||^2 + kl_weight * KL(q(z|x) || N(0, I))`` with ``z`` drawn from it, and
``encode`` returns the mean (deterministic). Inputs whose size is not a multiple of ``2^d`` are
zero-padded before encoding and decoded images are cropped back to ``image_size``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdd.generative.unet import ResBlock, group_norm
from jaxdd.models.layers import Conv


class Encoder(nn.Module):
    latent_channels: int
    width: int
    downsamples: int
    blocks: int

    @nn.compact
    def __call__(self, x):
        f = 2 ** self.downsamples
        x = jnp.pad(x, ((0, 0), (0, -x.shape[1] % f), (0, -x.shape[2] % f), (0, 0)))
        h = Conv(self.width, weight_init="flax")(x)
        for i in range(self.downsamples):
            for _ in range(self.blocks):
                h = ResBlock(h.shape[-1])(h)
            h = nn.silu(Conv(self.width * 2 ** i, strides=(2, 2), weight_init="flax")(h))
        h = ResBlock(h.shape[-1])(h)
        h = Conv(2 * self.latent_channels, weight_init="flax")(nn.silu(group_norm(h.shape[-1])(h)))
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar, -20.0, 10.0)


class Decoder(nn.Module):
    out_channels: int
    width: int
    downsamples: int
    blocks: int
    image_size: Sequence[int]

    @nn.compact
    def __call__(self, z):
        ch = self.width * 2 ** (self.downsamples - 1)
        h = ResBlock(ch)(Conv(ch, weight_init="flax")(z))
        for i in reversed(range(self.downsamples)):
            n, hh, ww, c = h.shape
            h = jax.image.resize(h, (n, 2 * hh, 2 * ww, c), "nearest")
            h = nn.silu(Conv(self.width * 2 ** max(i - 1, 0), weight_init="flax")(h))
            for _ in range(self.blocks):
                h = ResBlock(h.shape[-1])(h)
        h = Conv(self.out_channels, weight_init="flax")(nn.silu(group_norm(h.shape[-1])(h)))
        return h[:, :self.image_size[0], :self.image_size[1]]


class Autoencoder(nn.Module):
    """``encode(x) -> (mean, logvar)``, ``decode(z) -> x``; ``__call__`` reconstructs the mean."""

    out_channels: int
    image_size: Sequence[int]
    latent_channels: int = 4
    width: int = 16
    downsamples: int = 2
    blocks: int = 0

    def setup(self):
        self.encoder = Encoder(self.latent_channels, self.width, self.downsamples, self.blocks)
        self.decoder = Decoder(self.out_channels, self.width, self.downsamples, self.blocks, tuple(self.image_size))

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def __call__(self, x):
        return self.decode(self.encode(x)[0])

    def latent_shape(self) -> tuple[int, int, int]:
        f = 2 ** self.downsamples
        h, w = self.image_size
        return (-(-h // f), -(-w // f), self.latent_channels)


def autoencoder_loss(ae: Autoencoder, params, x: jax.Array, key: jax.Array,
                     kl_weight: float) -> tuple[jax.Array, dict]:
    """``mean ||decode(mu + sigma * e) - x||^2 + kl_weight * mean KL(N(mu, sigma^2) || N(0, 1))``
    (sums over pixels / latent units, means over the batch: the VAE objective of Kingma &
    Welling, 2014, with a small KL weight as in LDM)."""
    mean, logvar = ae.apply({"params": params}, x, method=Autoencoder.encode)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
    recon = ae.apply({"params": params}, z, method=Autoencoder.decode)
    rec = jnp.mean(jnp.sum((recon - x) ** 2, axis=(1, 2, 3)))
    kl = jnp.mean(0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar, axis=(1, 2, 3)))
    return rec + kl_weight * kl, {"reconstruction": rec, "kl": kl}
