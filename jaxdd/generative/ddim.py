"""Deterministic DDIM sampling (Song et al., 2021) with ``lax.scan``, classifier-free guidance
(Ho & Salimans, 2022) and guidance hooks.

One step at timestep t (index ``i`` in sampling order, 0 = noisiest) with embedding c::

    eps   = eps_u + w (eps_c - eps_u)           # CFG: eps_c = eps(z_t, t, c), eps_u with the null row
    eps  -= sqrt(1 - alpha_bar_t) g             # hook, mode "eps" (classifier guidance, Dhariwal &
                                                # Nichol, 2021, eq. 14, with g = grad log p)
    z_t  += g; eps = eps(z_t)                   # hook, mode "x": the model re-evaluated at the moved latent
    x0    = (z_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
    x0    = (1 - k/K) x0 + (k/K) z_skip         # LD3M only: k = S-1-i counts down, K = S-1
    z_t'  = sqrt(alpha_bar_t') x0 + sqrt(1 - alpha_bar_t') eps   # alpha_bar = 1 after the last step
    z_t' += g                                   # hook, mode "post": g computed at (z_t, eps, x0), added to
                                                # the next latent (influence-guided diffusion, Chen et al.
                                                # 2025, mchen725/DD_IGD; see jaxdd.generative.guidance)

With ``w = 1`` the unconditional pass is skipped. A :class:`Guidance` hook is a function of a
:class:`GuidanceContext` returning ``g`` (shaped like z_t), applied at the chosen steps only
(``lax.cond``, so inactive steps cost nothing; mode "x" costs one more model call). Hooks can differentiate through the model with
``ctx.denoise`` (z_t -> (eps, x0_hat) at this step) and ``ctx.decode``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.generative.prior import DiffusionPrior, null_embedding
from jaxdd.generative.schedule import ddim_timesteps, ddim_update, predict_x0, q_sample

GUIDANCE_MODES = ("eps", "x", "post")


class GuidanceContext(NamedTuple):
    z_t: jax.Array          # (N, *latent_shape) current noisy latent
    t: jax.Array            # () int timestep
    step: jax.Array         # () int index in sampling order (0 = first, noisiest)
    alpha_bar: jax.Array    # () alpha_bar_t
    eps: jax.Array          # guided noise prediction at z_t
    x0_hat: jax.Array       # predicted clean latent at z_t
    c: jax.Array            # (N, D) class embeddings
    denoise: Callable[[jax.Array], tuple[jax.Array, jax.Array]]  # z_t -> (eps, x0_hat), differentiable
    decode: Callable[[jax.Array], jax.Array]                      # latent -> image, differentiable


@dataclasses.dataclass(frozen=True)
class Guidance:
    """``fn(ctx) -> g`` applied at sampling-order steps ``steps`` (None: every step), see module doc."""

    fn: Callable[[GuidanceContext], jax.Array]
    steps: tuple[int, ...] | None = None
    mode: str = "eps"

    def __post_init__(self):
        if self.mode not in GUIDANCE_MODES:
            raise ValueError(f"unknown guidance mode {self.mode!r}; choose one of {GUIDANCE_MODES}")
        if self.steps is not None:
            object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))

    def mask(self, num_steps: int) -> np.ndarray:
        if self.steps is None:
            return np.ones(num_steps, bool)
        bad = [s for s in self.steps if not 0 <= s < num_steps]
        if bad:
            raise ValueError(f"guidance steps {bad} lie outside the {num_steps} sampling steps [0, {num_steps})")
        m = np.zeros(num_steps, bool)
        m[list(self.steps)] = True
        return m


def guided_eps(prior: DiffusionPrior, params: Any, z_t: jax.Array, t: jax.Array, c: jax.Array,
               guidance_scale: float = 1.0) -> jax.Array:
    """Classifier-free guided noise ``eps_u + w (eps_c - eps_u)`` (one batched call when w != 1)."""
    n = z_t.shape[0]
    tt = jnp.broadcast_to(jnp.asarray(t, jnp.int32), (n,))
    if guidance_scale == 1.0:
        return prior.eps(params, z_t, tt, c)
    both = prior.eps(params, jnp.concatenate([z_t, z_t]), jnp.concatenate([tt, tt]),
                     jnp.concatenate([c, null_embedding(prior, params, n).astype(c.dtype)]))
    eps_c, eps_u = both[:n], both[n:]
    return eps_u + guidance_scale * (eps_c - eps_u)


def ddim_sample(prior: DiffusionPrior, params: Any, z_T: jax.Array, c: jax.Array, *, num_steps: int = 50,
                guidance_scale: float = 1.0, hooks: Sequence[Guidance] = (), skip: jax.Array | None = None,
                remat: bool = False) -> jax.Array:
    """Run S = ``num_steps`` DDIM steps from z_T (at timestep T-1) and return the clean latent.

    ``skip``: the LD3M latent z blended into every predicted x0 with weight k/K (see module doc).
    ``remat``: rematerialise each step in the backward pass (``jax.checkpoint``), so reverse-mode
    memory holds one latent per step instead of every activation of every step.
    """
    if skip is not None and num_steps < 2:
        raise ValueError(f"the LD3M skip needs at least 2 DDIM steps (weights k/K, K = S-1), got {num_steps}")
    schedule = prior.schedule
    ts = ddim_timesteps(schedule.num_timesteps, num_steps)
    ab_t = schedule.alpha_bar[ts]
    ab_prev = jnp.concatenate([schedule.alpha_bar[ts[1:]], jnp.ones((1,), jnp.float32)])
    ks = np.arange(num_steps - 1, -1, -1)  # k = S-1 .. 0 in sampling order
    masks = [jnp.asarray(h.mask(num_steps)) for h in hooks]

    def denoise_at(t, ab):
        def denoise(z):
            eps = guided_eps(prior, params, z, t, c, guidance_scale)
            return eps, predict_x0(z, eps, ab)
        return denoise

    def step(z, xs):
        i, t, ab, ab_p, k = xs
        denoise = denoise_at(t, ab)
        eps, x0 = denoise(z)
        for hook, mask in zip(hooks, masks):
            if hook.mode == "post":
                continue
            ctx = GuidanceContext(z, t, i, ab, eps, x0, c, denoise, lambda v: prior.decode(params, v))

            def apply(ops, hook=hook, ctx=ctx):
                z, eps = ops
                g = hook.fn(ctx._replace(z_t=z, eps=eps, x0_hat=predict_x0(z, eps, ab))).astype(z.dtype)
                if hook.mode == "eps":
                    return z, eps - jnp.sqrt(1.0 - ab) * g
                return z + g, denoise(z + g)[0]

            z, eps = jax.lax.cond(mask[i], apply, lambda ops: ops, (z, eps))
            x0 = predict_x0(z, eps, ab)
        ctx = GuidanceContext(z, t, i, ab, eps, x0, c, denoise, lambda v: prior.decode(params, v))
        if skip is not None:
            x0 = ld3m_blend(x0, skip, k, num_steps - 1)
        z_next = ddim_update(x0, eps, ab_p)
        for hook, mask in zip(hooks, masks):
            if hook.mode == "post":
                z_next = jax.lax.cond(mask[i], lambda zn, hook=hook: zn + hook.fn(ctx).astype(zn.dtype),
                                      lambda zn: zn, z_next)
        return z_next, None

    if remat:
        step = jax.checkpoint(step)
    xs = (jnp.arange(num_steps), jnp.asarray(ts), ab_t, ab_prev, jnp.asarray(ks))
    z0, _ = jax.lax.scan(step, z_T, xs)
    return z0


def ld3m_blend(x0_hat: jax.Array, z: jax.Array, k: Any, big_k: int) -> jax.Array:
    """LD3M's skip: ``(1 - k/K) x0_hat + (k/K) z`` (exactly ``z`` at k = K, ``x0_hat`` at k = 0)."""
    w = jnp.asarray(k, x0_hat.dtype) / big_k
    return (1.0 - w) * x0_hat + w * z


def noise_to_last_step(prior: DiffusionPrior, z: jax.Array, noise: jax.Array) -> jax.Array:
    """``z_T = sqrt(alpha_bar_{T-1}) z + sqrt(1 - alpha_bar_{T-1}) noise``: the DDIM start for latent z."""
    return q_sample(prior.schedule, z, prior.schedule.num_timesteps - 1, noise)
