"""Noise schedules, the forward process and the deterministic DDIM update.

A schedule is the table of cumulative signal levels ``alpha_bar[t] = prod_{s<=t} (1 - beta_s)``
for ``t = 0 .. T-1``. The forward process (Ho et al., DDPM, 2020, eq. 4) is
``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``; the denoiser predicts ``eps``.

The deterministic DDIM update (Song et al., 2021, eq. 12 with sigma = 0) from ``t`` to an
earlier ``t'``::

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t)
    x_t'   = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t') eps_hat

and after the last step ``alpha_bar = 1``, i.e. the output is ``x0_hat``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "cosine")


class NoiseSchedule(NamedTuple):
    """``alpha_bar`` of shape (T,), float32 (index t = 0 is the least noisy timestep)."""

    alpha_bar: jax.Array

    @property
    def num_timesteps(self) -> int:
        return int(self.alpha_bar.shape[0])


def make_schedule(kind: str = "linear", num_timesteps: int = 1000, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> NoiseSchedule:
    """The ``linear`` schedule of DDPM (betas evenly spaced from ``beta_start`` to ``beta_end``;
    Ho et al., 2020) or the ``cosine`` schedule (Nichol & Dhariwal, 2021, eq. 17:
    ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos^2((t/T + 0.008) / 1.008 * pi/2)``, betas clipped
    at 0.999), with timestep index t in 0..T-1 standing for their t + 1. Computed in float64."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if kind == "linear":
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
        alpha_bar = np.cumprod(1.0 - betas)
    elif kind == "cosine":
        s = 0.008
        f = lambda t: np.cos((t / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        steps = np.arange(num_timesteps + 1, dtype=np.float64)
        betas = np.clip(1.0 - f(steps[1:]) / f(steps[:-1]), 0.0, 0.999)
        alpha_bar = np.cumprod(1.0 - betas)
    else:
        raise ValueError(f"unknown noise schedule {kind!r}; choose one of {SCHEDULES}")
    return NoiseSchedule(jnp.asarray(alpha_bar, jnp.float32))


def _per_sample(a: jax.Array, x: jax.Array) -> jax.Array:
    """Broadcast a scalar or per-sample (N,) array against x of shape (N, ...)."""
    a = jnp.asarray(a, x.dtype)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def q_sample(schedule: NoiseSchedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise`` (DDPM eq. 4); t scalar or (N,)."""
    ab = _per_sample(schedule.alpha_bar[t], x0)
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def predict_x0(x_t: jax.Array, eps: jax.Array, alpha_bar_t: jax.Array) -> jax.Array:
    """``x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)``."""
    ab = _per_sample(alpha_bar_t, x_t)
    return (x_t - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)


def ddim_update(x0_hat: jax.Array, eps: jax.Array, alpha_bar_prev: jax.Array) -> jax.Array:
    """``x_t' = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t') eps`` (DDIM eq. 12, sigma 0)."""
    ab = _per_sample(alpha_bar_prev, x0_hat)
    return jnp.sqrt(ab) * x0_hat + jnp.sqrt(1.0 - ab) * eps


def ddim_step(x_t: jax.Array, eps: jax.Array, alpha_bar_t: jax.Array,
              alpha_bar_prev: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One deterministic DDIM step: ``(x_t', x0_hat)``."""
    x0_hat = predict_x0(x_t, eps, alpha_bar_t)
    return ddim_update(x0_hat, eps, alpha_bar_prev), x0_hat


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
    """The S = ``num_steps`` timesteps visited by DDIM, first (noisiest) to last:
    ``tau_i = round(i T / S) - 1`` for i = S .. 1, so sampling starts at the last timestep T - 1
    ("trailing" spacing, Lin et al., 2024, Table 2); e.g. T = 1000, S = 10 gives 999, 899, ..., 99."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"the number of DDIM steps must lie in [1, {num_timesteps}] (the schedule's "
                         f"timesteps), got {num_steps}")
    i = np.arange(num_steps, 0, -1)
    return (np.round(i * num_timesteps / num_steps) - 1).astype(np.int32)
