"""Sampling a fixed number of pool images by per-bin target counts (the DGS sampling step).

DGS (Li et al., arXiv 2601.10090): sample ``n_k`` images uniformly without replacement from pool bin ``k``; fill
any shortfall (bins holding fewer than ``n_k`` images) at random from what is left of the pool.

Implementation (jittable, one random permutation per call): every candidate gets a random rank
from ``jax.random.permutation``; within bin ``k`` the ``n_k`` lowest-ranked candidates are taken
(uniform without replacement); the shortfall is filled by the lowest-ranked candidates not yet
taken (uniform over the rest). With all counts zero this is plain random selection.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Selection(NamedTuple):
    indices: jax.Array  # (k,) int32 indices into the candidates, bin-matched ones first (by bin)
    filled: jax.Array  # (k,) bool, True where the image came from the shortfall fill


def rank_within_bins(ranks: jax.Array, bins: jax.Array) -> jax.Array:
    """Position of each candidate among the candidates of its bin, ordered by ``ranks``."""
    n = bins.shape[0]
    order = jnp.lexsort((ranks, bins))
    sorted_bins = bins[order]
    first = jnp.searchsorted(sorted_bins, sorted_bins, side="left")
    return jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32) - first.astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=("k",))
def sample_by_bins(key: jax.Array, bins: jax.Array, counts: jax.Array, k: int,
                   mask: jax.Array | None = None) -> Selection:
    """Choose ``k`` distinct candidates: ``counts[j]`` at random from bin ``j`` (all of the bin if it
    holds fewer), the shortfall at random from the remaining candidates.

    ``bins``: (n,) int bin of each candidate; ``counts``: (num_bins,) ints, normally summing to
    ``k``; ``mask``: (n,) bool, the eligible candidates (e.g. one class of a pool). ``k`` is static
    and must not exceed the number of eligible candidates (checked by the callers that know it).
    """
    bins = jnp.asarray(bins, jnp.int32)
    n = bins.shape[0]
    eligible = jnp.ones(n, bool) if mask is None else jnp.asarray(mask, bool)
    ranks = jnp.zeros(n, jnp.int32).at[jax.random.permutation(key, n)].set(jnp.arange(n, dtype=jnp.int32))
    safe_bins = jnp.where(eligible, bins, -1)  # ineligible candidates form their own bin
    counts = jnp.asarray(counts, jnp.int32)
    matched = eligible & (rank_within_bins(ranks, safe_bins) < counts[jnp.clip(bins, 0, counts.shape[0] - 1)])
    group = jnp.where(matched, 0, jnp.where(eligible, 1, 2))
    order = jnp.lexsort((ranks, jnp.where(matched, bins, 0), group))[:k]
    return Selection(indices=order.astype(jnp.int32), filled=group[order] == 1)


def random_selection(key: jax.Array, n: int, k: int, mask: jax.Array | None = None) -> Selection:
    """``k`` distinct candidates chosen uniformly at random (the baseline DGS is compared with)."""
    return sample_by_bins(key, jnp.zeros(n, jnp.int32), jnp.zeros(1, jnp.int32), k, mask)
