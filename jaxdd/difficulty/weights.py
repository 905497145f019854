"""Difficulty weights for the real examples of a matching loss: ``w_i ∝ exp(-z_i / τ)`` on
per-class standardised difficulty scores (a difficulty-weighted loss in the spirit of SDC,
Wang et al., 2024)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def difficulty_weights(scores: jax.Array, labels: jax.Array, num_classes: int,
                       temperature: float = 1.0) -> jax.Array:
    """Per-example weights ``w_i ∝ exp(-d_i / τ)`` normalised to mean 1 within each class.

    ``d`` is a difficulty score (easy = low, e.g. loss or GraNd); ``τ > 0`` favours easy examples,
    ``τ < 0`` hard ones, ``|τ| → ∞`` gives uniform weights. Scores are standardised per class
    first (``(d - mean_c) / std_c``), so ``τ`` is in units of the class's score spread.
    """
    if temperature == 0:
        raise ValueError("difficulty-weight temperature must be non-zero (use a large value for uniform weights)")
    scores = jnp.asarray(scores, jnp.float32)
    labels = jnp.asarray(labels, jnp.int32)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"need one score per training example: scores {scores.shape}, labels {labels.shape}")
    if not bool(jnp.all(jnp.isfinite(scores))):
        raise ValueError("difficulty scores contain NaN or inf (e.g. forgetting's never-learned +inf); "
                         "clip or rank-transform them before weighting")
    count = jnp.maximum(jax.ops.segment_sum(jnp.ones_like(scores), labels, num_classes), 1.0)
    mean = jax.ops.segment_sum(scores, labels, num_classes) / count
    var = jax.ops.segment_sum(jnp.square(scores - mean[labels]), labels, num_classes) / count
    z = (scores - mean[labels]) / jnp.sqrt(jnp.maximum(var[labels], 1e-12))
    logw = -z / temperature
    logw = logw - jax.ops.segment_max(logw, labels, num_classes)[labels]
    w = jnp.exp(logw)
    return w / (jax.ops.segment_sum(w, labels, num_classes) / count)[labels]
