"""Matching losses and the SDC penalty against hand-computed cases, slow loops and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.difficulty import grad_norms, sdc
from jaxdd.difficulty.weights import difficulty_weights
from jaxdd.distill import losses as L
from jaxdd.models import create_network


@pytest.fixture(scope="module")
def tiny_net():
    net = create_network("convnet-d1-w4", num_classes=3, input_shape=(8, 8, 1))
    return net, net.init(jax.random.key(0))


def test_layer_distance_hand_computed():
    # a Dense kernel (in=2, out=2): rows per output channel are the columns
    g_syn = jnp.array([[1.0, 0.0], [0.0, 1.0]])    # out 0: (1, 0), out 1: (0, 1)
    g_real = jnp.array([[1.0, 1.0], [0.0, 1.0]])   # out 0: (1, 0), out 1: (1, 1)
    # out 0: cos = 1 -> 0; out 1: cos = 1/sqrt(2) -> 1 - 0.70711
    expected = 1.0 - 1.0 / np.sqrt(2.0)
    assert float(L.layer_distance(g_syn, g_real)) == pytest.approx(expected, abs=1e-5)
    # 1-D tensors (biases, norm scales) are skipped
    assert float(L.layer_distance(jnp.array([1.0, 2.0]), jnp.array([-1.0, 0.0]))) == 0.0


def test_conv_kernel_rows_are_output_channels():
    r = np.random.default_rng(0)
    gs, gr = r.normal(size=(3, 3, 2, 4)), r.normal(size=(3, 3, 2, 4))  # HWIO
    slow = 0.0
    for o in range(4):
        a, b = gs[..., o].ravel(), gr[..., o].ravel()
        slow += 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-6)
    assert float(L.layer_distance(jnp.asarray(gs), jnp.asarray(gr))) == pytest.approx(slow, rel=1e-5)


def test_gradient_distance_metrics_hand_computed():
    gs = {"b": jnp.array([1.0, 0.0]), "k": jnp.array([[2.0, 0.0]])}
    gr = {"b": jnp.array([0.0, 1.0]), "k": jnp.array([[2.0, 2.0]])}
    # ours: bias skipped; kernel (1, 2): out 0 rows (2) vs (2): cos 1; out 1 rows (0) vs (2): cos 0
    assert float(L.gradient_distance(gs, gr, "ours")) == pytest.approx(1.0, abs=1e-5)
    # mse over vec = (1, 0, 2, 0) vs (0, 1, 2, 2): 1 + 1 + 0 + 4
    assert float(L.gradient_distance(gs, gr, "mse")) == pytest.approx(6.0)
    # cos: dot 4, norms sqrt(5), sqrt(9)
    assert float(L.gradient_distance(gs, gr, "cos")) == pytest.approx(1 - 4 / (np.sqrt(5) * 3), abs=1e-5)
    with pytest.raises(ValueError, match="metric"):
        L.gradient_distance(gs, gr, "l1")


def test_zero_gradient_rows_have_finite_gradient():
    f = lambda a: L.layer_distance(a, jnp.ones((3, 2)))  # noqa: E731
    g = jax.grad(f)(jnp.zeros((3, 2)))
    assert np.all(np.isfinite(np.asarray(g)))


def _linear(w):
    """A model whose embedding is a fixed linear map, for closed-form DM losses."""
    from jaxdd.models.adapters import Model

    return Model(apply=lambda p, x: x.reshape(x.shape[0], -1) @ w, embed=lambda p, x: x.reshape(x.shape[0], -1) @ w)


def test_dm_loss_on_known_embeddings():
    w = jnp.eye(2)
    net = _linear(w)
    x_real = jnp.array([[[1.0, 0.0], [3.0, 0.0]], [[0.0, 2.0], [0.0, 4.0]]]).reshape(2, 2, 2, 1, 1)  # (C, n, ...)
    x_syn = jnp.array([[[0.0, 0.0]], [[0.0, 1.0]]]).reshape(2, 1, 2, 1, 1)
    # class means: (2, 0) and (0, 3); synthetic: (0, 0), (0, 1) -> 4 + 4
    assert float(L.distribution_match_loss(net, {}, x_real, x_syn)) == pytest.approx(8.0)
    # weights (3, 1) on class 0 -> mean (1.5, 0); class 1 weights (1, 1): 2.25 + 4
    wts = jnp.array([[3.0, 1.0], [1.0, 1.0]])
    assert float(L.distribution_match_loss(net, {}, x_real, x_syn, real_weights=wts)) == pytest.approx(6.25)
    with pytest.raises(ValueError, match="real_weights"):
        L.distribution_match_loss(net, {}, x_real, x_syn, real_weights=jnp.ones((2, 3)))


def test_batched_gradient_match_equals_class_loop(tiny_net):
    net, v = tiny_net
    r = np.random.default_rng(1)
    xr = jnp.asarray(r.normal(size=(3, 5, 8, 8, 1)), jnp.float32)
    xs = jnp.asarray(r.normal(size=(3, 2, 8, 8, 1)), jnp.float32)
    w = jnp.asarray(r.uniform(0.5, 2, size=(3, 5)), jnp.float32)

    @jax.jit
    def both(xr, xs, w):
        slow = [sum(L.class_gradient_match_loss(net, v, xr[c], jnp.full(5, c), xs[c], jnp.full(2, c), metric, w[c])
                    for c in range(3)) for metric in L.METRICS]
        fast = [L.gradient_match_loss(net, v, xr, xs, metric, real_weights=w) for metric in L.METRICS]
        return jnp.stack(slow), jnp.stack(fast)

    slow, fast = both(xr, xs, w)
    np.testing.assert_allclose(fast, slow, rtol=1e-4)


def test_per_example_norms_equal_single_example_loop(tiny_net):
    net, v = tiny_net
    r = np.random.default_rng(2)
    x = jnp.asarray(r.normal(size=(4, 8, 8, 1)), jnp.float32)
    y = jnp.array([0, 1, 2, 1])
    fast = np.asarray(jax.jit(sdc.per_example_grad_norms, static_argnums=0)(net, v, x, y))
    one = jax.jit(lambda xi, yi: jax.grad(L.classifier_loss, argnums=1)(net, v["params"], v, xi, yi))
    for i in range(4):
        g = one(x[i:i + 1], y[i:i + 1])
        slow = np.sqrt(sum(float(jnp.sum(t ** 2)) for t in jax.tree.leaves(g)))
        assert fast[i] == pytest.approx(slow, rel=1e-5)


def test_sdc_penalty_modes(tiny_net):
    net, v = tiny_net
    r = np.random.default_rng(3)
    x = jnp.asarray(r.normal(size=(4, 8, 8, 1)), jnp.float32)
    y = jnp.array([0, 1, 2, 0])
    norms = np.asarray(grad_norms(net, v, x, y))  # the difficulty module's fast exact norms
    assert float(sdc.sdc_penalty(net, v, x, y, "mean")) == pytest.approx(norms.mean(), rel=1e-5)
    assert float(sdc.sdc_penalty(net, v, x, y, "mean", squared=True)) == pytest.approx((norms ** 2).mean(), rel=1e-5)
    g = jax.grad(L.classifier_loss, argnums=1)(net, v["params"], v, x, y)
    batch = np.sqrt(sum(float(jnp.sum(t ** 2)) for t in jax.tree.leaves(g)))
    assert float(sdc.sdc_penalty(net, v, x, y, "batch")) == pytest.approx(batch, rel=1e-5)
    assert batch < norms.mean()  # triangle inequality
    with pytest.raises(ValueError, match="SDC mode"):
        sdc.sdc_penalty(net, v, x, y, "max")


def _directional_fd_check(f, x, seed):
    """<∇f(x), d> against a central difference in float64 (h small enough not to cross ReLU kinks)."""
    d = np.random.default_rng(seed).normal(size=x.shape)
    d /= np.linalg.norm(d)
    g = np.asarray(jax.jit(jax.grad(f))(x))
    h = 1e-4
    f = jax.jit(f)
    fd = (float(f(x + h * d)) - float(f(x - h * d))) / (2 * h)
    assert float(np.sum(g * d)) == pytest.approx(fd, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("method", ["gm", "dm"])
def test_total_loss_gradient_matches_finite_differences(method):
    """d/dx̃ [matching loss + λ·SDC] (second order for gradient matching) vs central differences."""
    with jax.enable_x64(True):
        net = create_network("convnet-d1-w4", num_classes=3, input_shape=(8, 8, 1))
        v = jax.tree.map(lambda a: a.astype(jnp.float64), net.init(jax.random.key(0)))
        r = np.random.default_rng(4)
        xr = jnp.asarray(r.normal(size=(3, 4, 8, 8, 1)))
        xs = jnp.asarray(r.normal(size=(3, 2, 8, 8, 1)))
        ys = jnp.repeat(jnp.arange(3), 2)
        match = ((lambda s: L.gradient_match_loss(net, v, xr, s, "ours")) if method == "gm" else
                 (lambda s: L.distribution_match_loss(net, v, xr, s)))
        _directional_fd_check(lambda s: match(s) + 0.1 * sdc.sdc_penalty(net, v, s.reshape(6, 8, 8, 1), ys),
                              xs, seed=5)


def test_difficulty_weights():
    scores = jnp.array([0.0, 1.0, 2.0, 5.0, 5.0])
    labels = jnp.array([0, 0, 0, 1, 1])
    w = np.asarray(difficulty_weights(scores, labels, 2, temperature=1.0))
    assert w[:3].mean() == pytest.approx(1.0) and w[3:].mean() == pytest.approx(1.0)
    assert w[0] > w[1] > w[2]                      # easy (low score) weighted up
    np.testing.assert_allclose(w[3:], 1.0)        # constant scores: uniform
    z = (np.array([0.0, 1.0, 2.0]) - 1.0) / np.std([0.0, 1.0, 2.0])
    e = np.exp(-z)
    np.testing.assert_allclose(w[:3], e / e.mean(), rtol=1e-5)
    hard = np.asarray(difficulty_weights(scores, labels, 2, temperature=-1.0))
    assert hard[2] > hard[0]
    with pytest.raises(ValueError, match="NaN or inf"):
        difficulty_weights(jnp.array([0.0, jnp.inf]), jnp.array([0, 0]), 1)
    with pytest.raises(ValueError, match="non-zero"):
        difficulty_weights(scores, labels, 2, temperature=0.0)
