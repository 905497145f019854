"""The DGS log transform of difficulty scores and the per-class search of its clip counts.

Difficulty-guided sampling (DGS, Li et al., arXiv 2601.10090) compares difficulty distributions on a
10-bin histogram of [0, 1]. Confidence difficulties ``d = 1 - p(y|x)`` pile up near 0, so they
are spread out first by a clipped log transform ``T_{b,t}``:

* sort the class's pool scores; ``lo`` = the (b+1)-th smallest (``1e-4`` if it is 0),
  ``hi`` = the (t+1)-th largest;
* clip to ``[lo, hi]`` and map ``d~ = log(d / lo) / log(hi / lo)``; floor at ``1e-4``.

``(b, t)`` is chosen per class by grid search over ``{0 .. G-1}^2`` (``G = max(1, IPC // 2)``)
minimising ``1/2 KL(H(pool) || H(T(pool))) + 1/2 KL(U || H(T(pool)))``: stay close to the raw
shape while spreading the scores towards uniform. ``H`` is the normalised 10-bin histogram on
[0, 1] (bin ``k`` holds ``k/10 <= x < (k+1)/10``; 1.0 falls in the last bin). Choices the paper
leaves open, documented here: empty bins are smoothed by adding ``eps`` (default 1e-6) to both
histograms before normalising; a degenerate range (``hi <= lo``, e.g. ties) maps every score to
the floor; grid ties are broken towards the smallest ``b`` then the smallest ``t``.

Every function takes an optional boolean ``mask`` selecting the scores of one class out of a
larger array, so the whole per-class computation jits once and ``vmap``s over classes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

NUM_BINS = 10
FLOOR = 1e-4
KL_EPS = 1e-6


def bin_index(x: jax.Array, num_bins: int = NUM_BINS) -> jax.Array:
    """Histogram bin of each value of ``x`` on [0, 1]: ``clip(floor(num_bins * x), 0, num_bins - 1)``."""
    return jnp.clip(jnp.floor(jnp.asarray(x) * num_bins).astype(jnp.int32), 0, num_bins - 1)


def histogram(x: jax.Array, num_bins: int = NUM_BINS, mask: jax.Array | None = None) -> jax.Array:
    """Counts (float32) of the (masked) values of ``x`` in ``num_bins`` equal bins of [0, 1]."""
    x = jnp.asarray(x)
    weights = jnp.ones(x.shape, jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    return jnp.zeros(num_bins, jnp.float32).at[bin_index(x, num_bins)].add(weights)


def kl_divergence(p: jax.Array, q: jax.Array, eps: float = KL_EPS) -> jax.Array:
    """``KL(p || q) = sum_k p_k log(p_k / q_k)`` of two histograms, each smoothed by ``+eps``
    and normalised (so empty bins give a large but finite value)."""
    p = jnp.asarray(p, jnp.float32) + eps
    q = jnp.asarray(q, jnp.float32) + eps
    p, q = p / p.sum(), q / q.sum()
    return jnp.sum(p * (jnp.log(p) - jnp.log(q)))


def _sorted_valid(scores: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Scores sorted ascending with masked-out entries moved to the end, and the valid count."""
    scores = jnp.asarray(scores, jnp.float32)
    if mask is None:
        return jnp.sort(scores), jnp.asarray(scores.shape[0], jnp.int32)
    mask = jnp.asarray(mask, bool)
    return jnp.sort(jnp.where(mask, scores, jnp.inf)), mask.sum().astype(jnp.int32)


def _bounds(ordered: jax.Array, n: jax.Array, b, t, floor: float) -> tuple[jax.Array, jax.Array]:
    lo = ordered[jnp.clip(b, 0, ordered.shape[0] - 1)]
    hi = ordered[jnp.clip(n - 1 - t, 0, ordered.shape[0] - 1)]
    return jnp.where(lo > 0, lo, floor), hi


def clip_bounds(scores: jax.Array, b: jax.Array | int, t: jax.Array | int,
                mask: jax.Array | None = None, floor: float = FLOOR) -> tuple[jax.Array, jax.Array]:
    """``(lo, hi)``: the (b+1)-th smallest and the (t+1)-th largest of the (masked) scores;
    ``lo = floor`` where that score is 0 (DGS, Li et al., arXiv 2601.10090)."""
    ordered, n = _sorted_valid(scores, mask)
    return _bounds(ordered, n, b, t, floor)


def log_transform(scores: jax.Array, lo: jax.Array | float, hi: jax.Array | float,
                  floor: float = FLOOR) -> jax.Array:
    """``T(d) = max(log(clip(d, lo, hi) / lo) / log(hi / lo), floor)``; all ``floor`` if ``hi <= lo``."""
    scores = jnp.asarray(scores, jnp.float32)
    lo, hi = jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)
    span = jnp.log(hi / lo)
    ok = span > 0
    out = jnp.log(jnp.clip(scores, lo, jnp.maximum(hi, lo)) / lo) / jnp.where(ok, span, 1.0)
    return jnp.maximum(jnp.where(ok, out, 0.0), floor)


def inverse_log_transform(transformed: jax.Array, lo: jax.Array | float, hi: jax.Array | float) -> jax.Array:
    """``d = lo (hi / lo)^d~``: the difficulty whose :func:`log_transform` is ``d~`` (for d~ above the floor)."""
    lo, hi = jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)
    return lo * jnp.power(jnp.maximum(hi, lo) / lo, jnp.asarray(transformed, jnp.float32))


def transform_scores(scores: jax.Array, b: jax.Array | int, t: jax.Array | int,
                     mask: jax.Array | None = None, floor: float = FLOOR) -> jax.Array:
    """``T_{b,t}`` of ``scores`` with the bounds taken from the (masked) scores themselves."""
    lo, hi = clip_bounds(scores, b, t, mask, floor)
    return log_transform(scores, lo, hi, floor)


def _objective(scores, ordered, n, raw, b, t, mask, num_bins: int, eps: float) -> jax.Array:
    lo, hi = _bounds(ordered, n, b, t, FLOOR)
    moved = histogram(log_transform(scores, lo, hi), num_bins, mask)
    uniform = jnp.ones(num_bins, jnp.float32)
    value = 0.5 * kl_divergence(raw, moved, eps) + 0.5 * kl_divergence(uniform, moved, eps)
    return jnp.where(b + t < n - 1, value, jnp.inf)


def clip_objective(scores: jax.Array, b: jax.Array | int, t: jax.Array | int,
                   mask: jax.Array | None = None, num_bins: int = NUM_BINS,
                   eps: float = KL_EPS) -> jax.Array:
    """``1/2 KL(H(d) || H(T_{b,t}(d))) + 1/2 KL(U || H(T_{b,t}(d)))`` over the (masked) scores;
    ``+inf`` where ``(b, t)`` leaves no range (``b + t >= n - 1``)."""
    ordered, n = _sorted_valid(scores, mask)
    return _objective(scores, ordered, n, histogram(scores, num_bins, mask), b, t, mask, num_bins, eps)


class ClipSearch(NamedTuple):
    b: jax.Array  # () int32, chosen lower clip count
    t: jax.Array  # () int32, chosen upper clip count
    lo: jax.Array  # () float32, lower bound of the chosen transform
    hi: jax.Array  # () float32, upper bound
    objective: jax.Array  # () float32, objective at (b, t)
    grid: jax.Array  # (G, G) objective for every (b, t) (row b, column t)


@functools.partial(jax.jit, static_argnames=("grid_size", "num_bins", "eps"))
def search_clip_counts(scores: jax.Array, grid_size: int, mask: jax.Array | None = None,
                       num_bins: int = NUM_BINS, eps: float = KL_EPS) -> ClipSearch:
    """Grid search of ``(b, t)`` in ``{0 .. grid_size-1}^2`` minimising :func:`clip_objective`
    (first minimum in row-major order). ``grid_size`` is static; DGS uses ``max(1, IPC // 2)``."""
    if grid_size < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size}")
    scores = jnp.asarray(scores, jnp.float32)
    ordered, n = _sorted_valid(scores, mask)  # sorted once; every (b, t) reads its bounds from it
    raw = histogram(scores, num_bins, mask)
    steps = jnp.arange(grid_size, dtype=jnp.int32)
    per_t = jax.vmap(lambda b, t: _objective(scores, ordered, n, raw, b, t, mask, num_bins, eps), in_axes=(None, 0))
    grid = jax.vmap(per_t, in_axes=(0, None))(steps, steps)
    best = jnp.argmin(grid.ravel())
    b, t = (best // grid_size).astype(jnp.int32), (best % grid_size).astype(jnp.int32)
    lo, hi = _bounds(ordered, n, b, t, FLOOR)
    return ClipSearch(b=b, t=t, lo=lo, hi=hi, objective=grid.ravel()[best], grid=grid)


def default_grid_size(ipc: int) -> int:
    """``max(1, IPC // 2)``: the (b, t) grid ``{0 .. IPC/2 - 1}`` of DGS, at least ``{0}``."""
    return max(1, int(ipc) // 2)
