"""A small class-conditional UNet denoiser ``eps_theta(x_t, t, c)`` (Ho et al., DDPM, 2020;
conditioning by adaptive group norm as in Dhariwal & Nichol, 2021).

Levels: ``len(channel_mults)`` resolutions, each with ``depth`` residual blocks
``GroupNorm -> SiLU -> Conv3x3 -> AdaGN(cond) -> SiLU -> Conv3x3 (+ skip)``,
a stride-2 convolution between levels, one self-attention block at the lowest resolution
(``attention=True``), and the mirrored up path with skip concatenation. The conditioning vector
is ``MLP(sinusoidal(t)) + Dense(c)``, where ``c`` is a class embedding *vector* (so that LD3M can
learn it continuously; the embedding table itself lives with the prior). Inputs whose size is not
a multiple of ``2 ** (levels - 1)`` are zero-padded and the output is cropped back.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdd.models.layers import Conv, Dense


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of (N,) timesteps (Vaswani et al., 2017; as in DDPM): (N, dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def group_norm(channels: int, name: str | None = None) -> nn.GroupNorm:
    groups = math.gcd(channels, 8)
    return nn.GroupNorm(num_groups=groups, epsilon=1e-5, name=name)


class ResBlock(nn.Module):
    """``x + Conv(SiLU(AdaGN(Conv(SiLU(GN(x))), cond)))`` with ``AdaGN(h, cond) = GN(h) (1 + s) + b``,
    ``(s, b) = Dense(SiLU(cond))`` (Dhariwal & Nichol, 2021, §3; an additive bias before a group
    norm would be normalised away)."""

    features: int

    @nn.compact
    def __call__(self, x, cond=None):
        h = Conv(self.features, weight_init="flax")(nn.silu(group_norm(x.shape[-1])(x)))
        h = group_norm(self.features)(h)
        if cond is not None:
            scale, shift = jnp.split(Dense(2 * self.features, weight_init="flax")(nn.silu(cond)), 2, axis=-1)
            h = h * (1.0 + scale[:, None, None, :]) + shift[:, None, None, :]
        h = Conv(self.features, weight_init="flax")(nn.silu(h))
        if x.shape[-1] != self.features:
            x = Conv(self.features, kernel_size=(1, 1), padding=0, weight_init="flax")(x)
        return x + h


class Attention(nn.Module):
    """Single-head self-attention over the spatial positions, residual."""

    @nn.compact
    def __call__(self, x):
        n, h, w, ch = x.shape
        y = group_norm(ch)(x).reshape(n, h * w, ch)
        y = nn.SelfAttention(num_heads=1, qkv_features=ch, out_features=ch)(y)
        return x + y.reshape(n, h, w, ch)


class UNet(nn.Module):
    """``eps = UNet(x_t, t, c)`` for x_t (N, H, W, C), integer or float t (N,), c (N, D)."""

    out_channels: int
    width: int = 32
    channel_mults: Sequence[int] = (1, 2)
    depth: int = 1
    attention: bool = True

    @nn.compact
    def __call__(self, x, t, c):
        n, height, width_px, _ = x.shape
        f = 2 ** (len(self.channel_mults) - 1)
        ph, pw = -height % f, -width_px % f
        if ph or pw:
            x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
        cdim = 4 * self.width
        cond = Dense(cdim, weight_init="flax")(timestep_embedding(t, self.width))
        cond = Dense(cdim, weight_init="flax")(nn.silu(cond))
        cond = cond + Dense(cdim, weight_init="flax")(c)

        h = Conv(self.width, weight_init="flax")(x)
        skips = [h]
        for level, mult in enumerate(self.channel_mults):
            for _ in range(self.depth):
                h = ResBlock(self.width * mult)(h, cond)
                skips.append(h)
            if level < len(self.channel_mults) - 1:
                h = Conv(h.shape[-1], strides=(2, 2), weight_init="flax")(h)
                skips.append(h)
        h = ResBlock(h.shape[-1])(h, cond)
        if self.attention:
            h = Attention()(h)
        h = ResBlock(h.shape[-1])(h, cond)
        for level, mult in reversed(list(enumerate(self.channel_mults))):
            for _ in range(self.depth + 1):
                h = ResBlock(self.width * mult)(jnp.concatenate([h, skips.pop()], axis=-1), cond)
            if level > 0:
                h = jax.image.resize(h, (n, h.shape[1] * 2, h.shape[2] * 2, h.shape[3]), "nearest")
                h = Conv(h.shape[-1], weight_init="flax")(h)
        h = Conv(self.out_channels, weight_init="flax")(nn.silu(group_norm(h.shape[-1])(h)))
        return h[:, :height, :width_px]
