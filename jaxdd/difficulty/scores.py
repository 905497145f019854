"""Per-example difficulty scores from logits, and the forgetting-events tracker.

All scores follow "easy = low". Labels are integer class indices (B,) or soft-label rows (B, C)
(a one-hot row gives the same number as its class index).

* EL2N (Paul et al., 2021): ``||softmax(z) − y||₂``.
* Loss value (Prune First, Distill After; Moser et al., 2024): ``ℓ(z, y)`` (cross-entropy).
* Confidence difficulty (DGS; Li et al., arXiv 2601.10090): ``1 − Σ_c y_c softmax(z)_c`` (= ``1 − p(y|x)``).
* Misclassification (SDC's χ; Wang et al., 2024): ``1[argmax z ≠ argmax y]``; averaged over an
  ensemble it is the fraction of models that misclassify the example.
* Forgetting events (Toneva et al., 2019): the number of times an example goes from correctly to
  incorrectly classified during training; never-learned examples score ``+inf``. The tracker is
  a pure ``init``/``update`` pair; call ``update`` with the correctness of any subset of examples
  each time they are evaluated (per minibatch presentation, as Toneva et al., or per epoch on
  the whole set, as :mod:`jaxdd.difficulty.drivers` does).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdd.utils.labels import cross_entropy, hard_labels, label_rows


def _targets(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Label rows (B, C): one-hot for class indices, unchanged for soft labels."""
    return label_rows(y, logits.shape[-1], logits.ndim - 1, logits.dtype)


def el2n(logits: jax.Array, y: jax.Array) -> jax.Array:
    """EL2N score ``||softmax(z) − y||₂`` per example (Paul et al., 2021)."""
    return jnp.linalg.norm(jax.nn.softmax(logits, axis=-1) - _targets(logits, y), axis=-1)


def loss_value(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Cross-entropy ``ℓ(z, y)`` per example (the Prune-First-Distill-After score)."""
    return cross_entropy(logits, y)


def confidence_difficulty(logits: jax.Array, y: jax.Array) -> jax.Array:
    """``1 − p(y|x) = 1 − Σ_c y_c softmax(z)_c`` per example (DGS difficulty)."""
    return 1.0 - jnp.sum(jax.nn.softmax(logits, axis=-1) * _targets(logits, y), axis=-1)


def misclassified(logits: jax.Array, y: jax.Array) -> jax.Array:
    """``1.0`` where ``argmax z`` differs from the label (argmax of soft rows), else ``0.0``."""
    return (logits.argmax(-1) != hard_labels(y, logits.ndim - 1)).astype(jnp.float32)


def misclassification_probability(ensemble_logits: jax.Array, y: jax.Array) -> jax.Array:
    """SDC's χ: the fraction of the models in ``ensemble_logits`` (M, B, C) that misclassify."""
    if ensemble_logits.ndim != 3:
        raise ValueError(f"ensemble logits must be (models, batch, classes), got {ensemble_logits.shape}")
    return jax.vmap(misclassified, in_axes=(0, None))(ensemble_logits, y).mean(0)


# --------------------------------------------------------------------------- forgetting events

class ForgettingState(NamedTuple):
    """Per-example forgetting statistics (leading axis N; add a model axis with ``vmap``)."""

    correct: jax.Array    # (N,) bool: correct at the last evaluation
    learned: jax.Array    # (N,) bool: ever classified correctly
    forgotten: jax.Array  # (N,) int32: correct -> incorrect transitions so far
    seen: jax.Array       # (N,) int32: number of evaluations


def forgetting_init(num_examples: int) -> ForgettingState:
    """A tracker for ``num_examples`` examples (nothing seen, nothing learned)."""
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    n = int(num_examples)
    return ForgettingState(correct=jnp.zeros((n,), bool), learned=jnp.zeros((n,), bool),
                           forgotten=jnp.zeros((n,), jnp.int32), seen=jnp.zeros((n,), jnp.int32))


def forgetting_update(state: ForgettingState, correct: jax.Array, indices: jax.Array | None = None
                      ) -> ForgettingState:
    """Record that the examples ``indices`` (all when None) are now ``correct`` (bool array).

    A forgetting event is ``correct_before ∧ ¬correct_now`` (Toneva et al., 2019). Duplicate
    indices in one update are not allowed (their order would be undefined)."""
    correct = jnp.asarray(correct, bool)
    if indices is None:
        if correct.shape != state.correct.shape:
            raise ValueError(f"correct has shape {correct.shape} but the tracker holds {state.correct.shape[0]} "
                             "examples; pass indices= for a subset")
        prev = state.correct
        return ForgettingState(correct=correct, learned=state.learned | correct,
                               forgotten=state.forgotten + (prev & ~correct).astype(jnp.int32),
                               seen=state.seen + 1)
    indices = jnp.asarray(indices)
    if indices.shape != correct.shape:
        raise ValueError(f"indices {indices.shape} and correct {correct.shape} must have the same shape")
    prev = state.correct[indices]
    return ForgettingState(
        correct=state.correct.at[indices].set(correct),
        learned=state.learned.at[indices].set(state.learned[indices] | correct),
        forgotten=state.forgotten.at[indices].add((prev & ~correct).astype(jnp.int32)),
        seen=state.seen.at[indices].add(1))


def forgetting_scores(state: ForgettingState) -> jax.Array:
    """Forgetting-event counts as float; ``+inf`` for examples never classified correctly."""
    return jnp.where(state.learned, state.forgotten.astype(jnp.float32), jnp.inf)
