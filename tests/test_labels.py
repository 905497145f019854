"""jaxdd.utils.labels: the hard/soft label rule and the one cross-entropy, against numpy in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.utils.labels import cross_entropy, hard_labels, is_soft, label_rows


def _ce64(z, rows):
    z = np.asarray(z, np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    return -(np.asarray(rows, np.float64) * logp).sum(-1)


def test_cross_entropy_hard_soft_and_leading_axes():
    r = np.random.default_rng(0)
    z = r.normal(scale=3.0, size=(2, 7, 5)).astype(np.float32)  # (models, examples, classes)
    y = r.integers(0, 5, size=(2, 7))
    q = r.dirichlet(np.ones(5), size=(2, 7))
    # |ℓ| up to ~10 here; float32 log-sum-exp over 5 terms is good to a few ulp (~1e-6 relative)
    np.testing.assert_allclose(cross_entropy(z, y), _ce64(z, np.eye(5)[y]), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(cross_entropy(z, q.astype(np.float32)), _ce64(z, q), rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(cross_entropy(z[0], np.eye(5, dtype=np.float32)[y[0]]), cross_entropy(z[0], y[0]),
                               rtol=1e-6, atol=1e-6)
    assert cross_entropy(jnp.asarray(z, jnp.bfloat16), y).dtype == jnp.float32  # computed in float32
    with jax.enable_x64(True):  # float64 logits keep float64 (finite-difference checks need it)
        assert cross_entropy(jnp.asarray(z, jnp.float64), y).dtype == jnp.float64
    # the gradient w.r.t. the logits is softmax(z) - y
    g = jax.grad(lambda v: jnp.sum(cross_entropy(v, y[0])))(jnp.asarray(z[0]))
    p = np.exp(np.asarray(z[0], np.float64))
    np.testing.assert_allclose(g, p / p.sum(-1, keepdims=True) - np.eye(5)[y[0]], atol=1e-6)


def test_hard_and_soft_labels_rule():
    y = np.array([2, 0, 1])
    rows = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.0, 1.0, 0.0]], np.float32)
    assert not is_soft(y) and is_soft(rows) and is_soft(rows[None], example_ndim=2)
    np.testing.assert_array_equal(hard_labels(rows), y)
    assert hard_labels(y) is y  # hard labels come back unchanged
    assert isinstance(hard_labels(jnp.asarray(rows)), jax.Array)
    np.testing.assert_array_equal(hard_labels(rows[None], example_ndim=2), y[None])
    np.testing.assert_array_equal(label_rows(y, 3), np.eye(3)[y])
    np.testing.assert_array_equal(label_rows(rows, 3), rows)
    assert label_rows(y, 3, dtype=jnp.bfloat16).dtype == jnp.bfloat16


def test_label_errors_name_the_fix():
    with pytest.raises(ValueError, match="3 columns but there are 4 classes"):
        label_rows(np.ones((2, 3)) / 3, 4)
    with pytest.raises(ValueError, match="do not fit logits with 1 example axes"):
        label_rows(np.zeros((2, 3, 4)), 4)
    with pytest.raises(ValueError, match="do not fit logits"):
        cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 3, 1)))
