"""Class labels, hard or soft, and the one cross-entropy.

Labels of N examples are **hard**, integer class indices of shape (N,), or **soft**, probability
rows of shape (N, C) (DATM's learned labels, one-hot rows). With leading axes (models, batches)
the rule is the same: soft labels have one axis more than the examples, so against logits
(..., N, C) labels (..., N, C) are soft and (..., N) are hard. Works on numpy and JAX arrays.

Cross-entropy of logits ``z`` against label rows ``y`` (one-hot rows for hard labels)::

    ℓ(z, y) = −Σ_c y_c log softmax(z)_c = logsumexp(z) − z_y   (hard label y)

per example, in float32 at least (float64 stays float64); callers take the mean or a weighted mean.
Hard labels take PyTorch's ``nn.CrossEntropyLoss`` form, the loss of the DC/DSA/DM/MTT reference code:
``log_softmax`` then the negative log-likelihood of the label (``−take(log_softmax(z), y)``); soft rows
take ``optax.softmax_cross_entropy``. The hard form is kept rather than optax's
``softmax_cross_entropy_with_integer_labels`` (``logsumexp(z) − z_y``, equal in exact arithmetic)
because the latter's gradient rounds differently in float32, which would change every trained
network and expert trajectory by rounding; a one-hot product in the soft form does too, once XLA
fuses it into the training step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def is_soft(labels: Any, example_ndim: int = 1) -> bool:
    """Whether ``labels`` are soft rows: one axis more than the ``example_ndim`` example axes."""
    return np.ndim(labels) == example_ndim + 1


def hard_labels(labels: Any, example_ndim: int = 1) -> Any:
    """Class indices: the argmax of soft rows, hard labels unchanged (same array type)."""
    return labels.argmax(-1) if is_soft(labels, example_ndim) else labels


def label_rows(labels: Any, num_classes: int, example_ndim: int = 1, dtype: Any = jnp.float32) -> jax.Array:
    """Label rows (..., C): one-hot rows of hard labels, soft rows unchanged (cast to ``dtype``)."""
    labels = jnp.asarray(labels)
    if is_soft(labels, example_ndim):
        if labels.shape[-1] != num_classes:
            raise ValueError(f"soft labels have {labels.shape[-1]} columns but there are {num_classes} classes; "
                             "pass one probability row per example over all classes")
        return labels.astype(dtype)
    if labels.ndim != example_ndim:
        raise ValueError(f"labels of shape {labels.shape} do not fit logits with {example_ndim} example axes: pass "
                         f"integer class indices ({example_ndim} axes) or soft-label rows ({example_ndim + 1} axes)")
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)


def cross_entropy(logits: jax.Array, labels: Any) -> jax.Array:
    """Per-example cross-entropy ``−Σ_c y_c log softmax(z)_c`` (..., N) of logits (..., N, C)
    against class indices (..., N) or soft-label rows (..., N, C) (module docstring)."""
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if labels.ndim not in (logits.ndim, logits.ndim - 1):
        raise ValueError(f"labels of shape {labels.shape} do not fit logits of shape {logits.shape}: pass "
                         "integer class indices (B,) or soft-label rows (B, num_classes)")
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # bf16/f16 -> f32; f64 stays
    if is_soft(labels, logits.ndim - 1):
        return optax.softmax_cross_entropy(logits, label_rows(labels, logits.shape[-1], logits.ndim - 1, logits.dtype))
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_p, labels.astype(jnp.int32)[..., None], axis=-1)[..., 0]
