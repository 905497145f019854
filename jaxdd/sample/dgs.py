"""Difficulty-guided sampling (DGS): choose IPC images per class from a pool so that their
difficulty distribution follows a target (Li et al., arXiv 2601.10090; SumomoTaku/DiffGuideSamp).

Per class ``c`` (all classes at once, ``vmap``-ed over class masks):

1. ``(b, t)`` = :func:`~jaxdd.sample.transform.search_clip_counts` of the class's pool scores;
   ``T`` = the log transform with the resulting ``(lo, hi)``.
2. Target counts: ``real`` = the 10-bin histogram of ``T(real scores of class c)`` (the real
   scores go through the *pool's* transform of that class, so both live on the same axis), or a
   preset / user distribution; scaled to IPC by largest-remainder rounding.
3. :func:`~jaxdd.sample.select.sample_by_bins` on the bins of ``T(pool scores)``.

Difficulty scores are confidence difficulties ``d = 1 - p(y|x)`` in [0, 1] (see
:mod:`jaxdd.difficulty.classifier`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.sample.select import Selection, random_selection, sample_by_bins
from jaxdd.sample.targets import load_target, preset_weights, target_counts
from jaxdd.sample.transform import (KL_EPS, NUM_BINS, bin_index, default_grid_size, histogram,
                                    log_transform, search_clip_counts)


class DGSResult(NamedTuple):
    indices: np.ndarray  # (C, ipc) indices into the pool, per class
    filled: np.ndarray  # (C, ipc) True where the image filled a bin shortfall
    b: np.ndarray  # (C,) lower clip counts
    t: np.ndarray  # (C,) upper clip counts
    lo: np.ndarray  # (C,) transform bounds
    hi: np.ndarray
    objective: np.ndarray  # (C,) clip-search objective at (b, t)
    target_counts: np.ndarray  # (C, bins) images wanted per bin
    chosen_counts: np.ndarray  # (C, bins) images chosen per bin
    pool_counts: np.ndarray  # (C, bins) pool images per bin
    pool_transformed: np.ndarray  # (N,) T of every pool score (its class's transform)
    real_transformed: np.ndarray | None  # (M,) T of every real score, when real scores were given

    @property
    def flat_indices(self) -> np.ndarray:
        """All chosen pool indices, class by class."""
        return self.indices.reshape(-1)


def check_pool_classes(pool_labels: np.ndarray, num_classes: int, ipc: int,
                       class_names: Sequence[str] | None = None) -> np.ndarray:
    """Per-class pool sizes; ``ValueError`` naming the class if one is missing or has < ``ipc``."""
    labels = np.asarray(pool_labels)
    if labels.ndim != 1 or (len(labels) and (labels.min() < 0 or labels.max() >= num_classes)):
        raise ValueError(f"pool labels must be 1-D class indices in [0, {num_classes})")
    if ipc < 1:
        raise ValueError(f"ipc must be >= 1, got {ipc}")
    sizes = np.bincount(labels, minlength=num_classes)
    name = (lambda c: f"class {c} ({class_names[c]})") if class_names else (lambda c: f"class {c}")
    missing = [name(c) for c in range(num_classes) if sizes[c] == 0]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing from the pool: add images of every class "
                         "(e.g. build the pool with `jaxdd pool` for the same dataset)")
    short = [f"{name(c)} ({sizes[c]} images)" for c in range(num_classes) if sizes[c] < ipc]
    if short:
        raise ValueError(f"the pool holds fewer images than IPC={ipc} for {'; '.join(short)}: use a larger "
                         "pool (more --runs or a larger --size) or a smaller --ipc")
    return sizes


def _check_scores(scores: np.ndarray, labels: np.ndarray, what: str) -> np.ndarray:
    scores = np.asarray(scores, np.float32)
    if scores.shape != np.asarray(labels).shape:
        raise ValueError(f"{what}: need one score per image, got {scores.shape} scores for "
                         f"{np.asarray(labels).shape} labels")
    if not np.all(np.isfinite(scores)) or np.any(scores < 0) or np.any(scores > 1):
        raise ValueError(f"{what}: difficulty scores must be finite and in [0, 1] (confidence "
                         "difficulty 1 - p(y|x)); rescale other scores to [0, 1] first")
    return scores


@functools.partial(jax.jit, static_argnames=("num_classes", "grid_size", "num_bins", "eps"))
def _search(scores, labels, num_classes: int, grid_size: int, num_bins: int, eps: float):
    masks = labels[None, :] == jnp.arange(num_classes)[:, None]
    return jax.vmap(lambda m: search_clip_counts(scores, grid_size, m, num_bins, eps))(masks)


@functools.partial(jax.jit, static_argnames=("num_classes", "num_bins"))
def _class_histograms(transformed, labels, num_classes: int, num_bins: int):
    masks = labels[None, :] == jnp.arange(num_classes)[:, None]
    return jax.vmap(lambda m: histogram(transformed, num_bins, m))(masks)


@functools.partial(jax.jit, static_argnames=("k",))
def _sample(key, bins, counts, labels, k: int) -> Selection:
    classes = jnp.arange(counts.shape[0])
    keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(classes)
    return jax.vmap(lambda kc, cnt, c: sample_by_bins(kc, bins, cnt, k, labels == c))(keys, counts, classes)


class Transforms(NamedTuple):
    """The per-class DGS transforms (from the pool) and the transformed scores."""

    search: Any  # ClipSearch with a leading class axis: b, t, lo, hi, objective, grid
    pool_transformed: np.ndarray  # (N,) T of every pool score (its class's transform)
    real_transformed: np.ndarray | None  # (M,) T of every real score, when given
    real_labels: np.ndarray | None


def fit_transforms(pool_scores: np.ndarray, pool_labels: np.ndarray, ipc: int, *,
                   real_scores: np.ndarray | None = None, real_labels: np.ndarray | None = None,
                   num_classes: int | None = None, grid_size: int | None = None, num_bins: int = NUM_BINS,
                   eps: float = KL_EPS, class_names: Sequence[str] | None = None) -> Transforms:
    """Steps 1 (and the real half of 2) of DGS: validate, search ``(b, t)`` per class on the pool
    scores, transform the pool and (if given) the real scores with their class's transform."""
    pool_labels = np.asarray(pool_labels, np.int32)
    num_classes = int(num_classes or (pool_labels.max() + 1))
    check_pool_classes(pool_labels, num_classes, ipc, class_names)
    pool_scores = _check_scores(pool_scores, pool_labels, "pool")
    grid = default_grid_size(ipc) if grid_size is None else int(grid_size)
    search = jax.device_get(_search(pool_scores, pool_labels, num_classes, grid, num_bins, float(eps)))
    lo, hi = np.asarray(search.lo), np.asarray(search.hi)
    pool_t = np.asarray(log_transform(pool_scores, lo[pool_labels], hi[pool_labels]))
    real_t = None
    if real_scores is not None:
        if real_labels is None:
            raise ValueError("real_scores need real_labels (one class index per real image)")
        real_labels = np.asarray(real_labels, np.int32)
        if len(real_labels) and (real_labels.min() < 0 or real_labels.max() >= num_classes):
            raise ValueError(f"real labels must lie in [0, {num_classes})")
        real_scores = _check_scores(real_scores, real_labels, "real")
        real_t = np.asarray(log_transform(real_scores, lo[real_labels], hi[real_labels]))
    return Transforms(search=search, pool_transformed=pool_t, real_transformed=real_t, real_labels=real_labels)


def dgs_select(key: jax.Array, pool_scores: np.ndarray, pool_labels: np.ndarray, ipc: int,
               target="real", *, real_scores: np.ndarray | None = None,
               real_labels: np.ndarray | None = None, num_classes: int | None = None,
               grid_size: int | None = None, num_bins: int = NUM_BINS, eps: float = KL_EPS,
               class_names: Sequence[str] | None = None) -> DGSResult:
    """Choose ``ipc`` pool images per class by DGS (module docstring).

    ``target``: ``"real"`` (needs ``real_scores``/``real_labels``), a preset name (``uniform``,
    ``hill``, ``slope``, ``cliff``), a file of bin weights, or weights of shape ``(bins,)`` or
    ``(C, bins)``. ``grid_size`` defaults to ``max(1, ipc // 2)``. Same ``key``, same choice.
    """
    pool_labels = np.asarray(pool_labels, np.int32)
    num_classes = int(num_classes or (pool_labels.max() + 1))
    target = load_target(target, num_bins, num_classes)
    tf = fit_transforms(pool_scores, pool_labels, ipc, real_scores=real_scores, real_labels=real_labels,
                        num_classes=num_classes, grid_size=grid_size, num_bins=num_bins, eps=eps,
                        class_names=class_names)
    if isinstance(target, str) and target == "real":
        if tf.real_transformed is None:
            raise ValueError("target 'real' needs the real images' difficulty scores (real_scores, "
                             "real_labels); or choose a preset target")
        real_hist = np.asarray(_class_histograms(tf.real_transformed, tf.real_labels, num_classes, num_bins))
        empty = [c for c in range(num_classes) if real_hist[c].sum() == 0]
        if empty:
            raise ValueError(f"target 'real': no real images of class(es) {empty}; choose a preset target")
        counts = target_counts(real_hist.round().astype(np.int64), ipc)
    else:
        weights = preset_weights(target, num_bins) if isinstance(target, str) else target
        counts = target_counts(np.broadcast_to(weights, (num_classes, num_bins)), ipc)

    pool_t = tf.pool_transformed
    bins = np.asarray(bin_index(pool_t, num_bins))
    sel = jax.device_get(_sample(key, bins, counts.astype(np.int32), pool_labels, int(ipc)))
    indices = np.asarray(sel.indices)
    pool_counts = np.stack([np.bincount(bins[pool_labels == c], minlength=num_bins) for c in range(num_classes)])
    chosen_counts = np.stack([np.bincount(bins[i], minlength=num_bins) for i in indices])
    s = tf.search
    return DGSResult(indices=indices, filled=np.asarray(sel.filled), b=np.asarray(s.b), t=np.asarray(s.t),
                     lo=np.asarray(s.lo), hi=np.asarray(s.hi), objective=np.asarray(s.objective),
                     target_counts=counts, chosen_counts=chosen_counts, pool_counts=pool_counts,
                     pool_transformed=pool_t, real_transformed=tf.real_transformed)


def random_select(key: jax.Array, pool_labels: np.ndarray, ipc: int, num_classes: int | None = None,
                  class_names: Sequence[str] | None = None) -> np.ndarray:
    """``(C, ipc)`` pool indices chosen uniformly at random per class (the DGS baseline)."""
    pool_labels = np.asarray(pool_labels, np.int32)
    num_classes = int(num_classes or (pool_labels.max() + 1))
    check_pool_classes(pool_labels, num_classes, ipc, class_names)
    n = len(pool_labels)
    pick = jax.jit(jax.vmap(lambda kc, c: random_selection(kc, n, ipc, pool_labels == c).indices))
    classes = jnp.arange(num_classes)
    return np.asarray(pick(jax.vmap(lambda c: jax.random.fold_in(key, c))(classes), classes))
