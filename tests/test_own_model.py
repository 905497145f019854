"""Your own model in jaxdd: plain apply_fn / embed_fn, the linen / nnx adapters, the fast per-example
gradient norms on standard flax layers (and their warned fallback), the score registry, and the
README's "Use jaxdd in your own JAX code" code run exactly as written."""

import re
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxdd import difficulty as D
from jaxdd.difficulty import FallbackWarning, fallback_layers, grad_norms, register_score, sdc_penalty
from jaxdd.distill import losses as L
from jaxdd.distill.trajectory import trajectory_loss
from jaxdd.models import create_network
from jaxdd.models.adapters import Model, from_linen, from_network, from_nnx


def slow_norms(apply_fn, params, x, y):
    """Per-example ‖∇θ ℓ‖ by materialising each example's gradient (vmap(grad)), written here
    independently of jaxdd (``apply_fn`` or a ``Model``)."""
    apply_fn = apply_fn.apply if isinstance(apply_fn, Model) else apply_fn

    def loss(p, xi, yi):
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, xi[None]), yi[None])[0]

    @jax.jit  # one compiled program (op by op, every primitive would compile on its own)
    def norms(params, x, y):
        g = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, x, y)
        return jnp.sqrt(sum(jnp.sum(jnp.square(a.reshape(a.shape[0], -1)), 1) for a in jax.tree.leaves(g)))

    return norms(params, x, y)


class LinenNet(nn.Module):
    """Standard linen layers in the variants the fast path supports."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), strides=2, padding="SAME")(x))
        x = nn.Conv(5, (2, 3), padding=((1, 0), (2, 1)))(x)
        x = nn.GroupNorm(num_groups=5)(nn.relu(x))
        x = nn.Conv(3, (3, 3), padding="VALID", use_bias=False)(x)
        x = nn.LayerNorm()(x.reshape(x.shape[0], -1))
        x = nn.relu(nn.Dense(6)(x))
        return nn.Dense(3)(x)


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 4, (3, 3), strides=2, rngs=rngs)
        self.conv2 = nnx.Conv(4, 3, (3, 3), padding="VALID", rngs=rngs)
        self.hidden = nnx.Linear(12, 6, rngs=rngs)
        self.out = nnx.Linear(6, 3, use_bias=False, rngs=rngs)

    def features(self, x):
        x = self.conv2(nnx.relu(self.conv(x)))
        return nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))

    def __call__(self, x):
        return self.out(self.features(x))


def _batch(shape, n=5, seed=1):
    return jax.random.normal(jax.random.key(seed), (n, *shape)), jnp.arange(n) % 3


def _f64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64), tree)


def _assert_fast_equals_slow(apply_fn, params, x, y):
    """Fast path only (no fallback layer, no warning) and equal to vmap(grad), in float64 so the
    tolerance is far above rounding noise (float64 eps ~1e-16; the two computations differ only in
    summation order)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        assert fallback_layers(apply_fn, params, x) == ()
        fast = jax.jit(lambda p, x, y: grad_norms(apply_fn, p, x, y))(params, x, y)
    np.testing.assert_allclose(fast, slow_norms(apply_fn, params, x, y), rtol=1e-10)


@pytest.mark.parametrize("method", ["auto", "ghost"])
def test_linen_model_takes_the_fast_path_and_equals_vmap_grad(method):
    net = LinenNet()
    x, y = _batch((9, 9, 2))
    with jax.enable_x64(True):
        params = _f64(net.init(jax.random.key(0), x)["params"])
        x = x.astype(jnp.float64)
        apply_fn = lambda p, x: net.apply({"params": p}, x)  # noqa: E731
        _assert_fast_equals_slow(apply_fn, params, x, y)
        fast = jax.jit(lambda p, x, y: grad_norms(apply_fn, p, x, y, method=method, chunk_size=2))(params, x, y)
        np.testing.assert_allclose(fast, slow_norms(apply_fn, params, x, y), rtol=1e-10)
        # the adapter's Model, and the whole variables as params (a parameter path one level deeper)
        model, p = from_linen(net, {"params": params})
        _assert_fast_equals_slow(model, p, x, y)
        _assert_fast_equals_slow(lambda v, x: net.apply(v, x), {"params": params}, x, y)


def test_nnx_model_takes_the_fast_path_and_equals_vmap_grad():
    x, y = _batch((8, 8, 2))
    model, params = from_nnx(NnxNet(nnx.Rngs(0)), embed="features")
    assert model.embed(params, x).shape == (5, 6)
    with jax.enable_x64(True):
        _assert_fast_equals_slow(model, _f64(params), x.astype(jnp.float64), y)
    # the wrapped nnx classes are restored after tracing
    assert "jaxdd" not in getattr(nnx.Linear.__call__, "__module__", "")


class Dilated(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), kernel_dilation=2, name="dilated_conv")(x))
        shift = self.param("shift", nn.initializers.normal(), (4,))
        x = (x + shift).reshape(x.shape[0], -1)
        return nn.Dense(3, name="head")(x)


def test_unsupported_layer_warns_once_naming_it_and_stays_exact():
    net = Dilated()
    x, y = _batch((6, 6, 1))
    params = net.init(jax.random.key(0), x)["params"]
    apply_fn = lambda p, x: net.apply({"params": p}, x)  # noqa: E731
    assert fallback_layers(apply_fn, params, x) == ("dilated_conv", "shift")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        first = grad_norms(apply_fn, params, x, y)
        again = jax.jit(lambda p, x, y: grad_norms(apply_fn, p, x, y))(params, x, y)
    ours = [w for w in seen if issubclass(w.category, FallbackWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert "dilated_conv, shift" in str(ours[0].message) and "vmap(grad)" in str(ours[0].message)
    # exact: float32 against the independent vmap(grad); both sum the same ~100 float32 products
    # per entry, so 1e-5 relative sits well above float32 noise (~1e-7 per operation)
    ref = slow_norms(apply_fn, params, x, y)
    np.testing.assert_allclose(first, ref, rtol=1e-5)
    np.testing.assert_allclose(again, ref, rtol=1e-5)
    by_param = D.grad_sq_norms_by_param(apply_fn, params, x, y)
    assert set(by_param) == {"head/bias", "head/kernel", "<other>"}


@pytest.fixture(scope="module")
def jaxdd_net():
    net = create_network("convnet-d1", num_classes=3, input_shape=(8, 8, 1))
    return net, net.init(jax.random.key(0))


def test_losses_and_scores_with_plain_functions_equal_the_network(jaxdd_net):
    """The same parameters through a user-written apply_fn / embed_fn (not jaxdd's adapter) and
    through the Network give the same numbers. Tolerance 1e-5 relative: identical float32
    computations traced from two call paths; XLA may fuse them differently (float32 noise ~1e-7)."""
    net, variables = jaxdd_net
    params = variables["params"]
    apply_fn = lambda p, x: net.module.apply({"params": p}, x, train=False)  # noqa: E731
    embed_fn = lambda p, x: net.module.apply({"params": p}, x, train=False, method="embed")  # noqa: E731
    x, y = _batch((8, 8, 1), n=6)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # noqa: E731

    # every computation jitted, both sides alike: op by op, each primitive of these first- and
    # second-order programs compiles on its own (the same float32 operations either way)
    jit = lambda f, *args: jax.jit(f)(*args)  # noqa: E731

    close(jit(lambda x, y: grad_norms(apply_fn, params, x, y), x, y),
          jit(lambda x, y: grad_norms(net, variables, x, y), x, y))
    for mode in ("mean", "batch"):
        close(jit(lambda x, y: sdc_penalty(apply_fn, params, x, y, mode), x, y),
              jit(lambda x, y: sdc_penalty(net, variables, x, y, mode), x, y))
    xr, xs = x.reshape(3, 2, 8, 8, 1), x[:3].reshape(3, 1, 8, 8, 1) * 0.5
    w = jnp.array([[1.0, 2.0], [0.5, 1.0], [1.0, 1.0]])
    close(jit(lambda xr, xs: L.distribution_match_loss(apply_fn, params, xr, xs, w, embed_fn=embed_fn, real_chunk=2),
              xr, xs),
          jit(lambda xr, xs: L.distribution_match_loss(net, variables, xr, xs, w), xr, xs))
    dm_grad = jit(jax.grad(lambda s: L.distribution_match_loss(Model(apply_fn, embed_fn), params, xr, s)), xs)
    close(dm_grad, jit(jax.grad(lambda s: L.distribution_match_loss(net, variables, xr, s)), xs))
    dc = lambda m, v: jit(jax.grad(lambda s: L.gradient_match_loss(m, v, xr, s, real_weights=w)), xs)  # noqa: E731
    close(dc(apply_fn, params), dc(net, variables))
    for score in ("grand", "grand-last", "el2n", "loss", "confidence", "misclass"):
        close(D.score_models(apply_fn, params, np.asarray(x), np.asarray(y), score, progress=False),
              D.score_models(net, variables, np.asarray(x), np.asarray(y), score, progress=False))
    # MTT's loss: a plain function is used as given (here inference mode = the network's train
    # mode, as convnet-d1 has no BatchNorm)
    target = jax.tree.map(lambda a: a * 0.9, params)
    kw = dict(syn_steps=3, batch_syn=3, sdc=0.1)
    got = jit(lambda x, y: trajectory_loss(apply_fn, x, y, 0.01, params, target, jax.random.key(2), **kw)[0], x, y)
    want = jit(lambda x, y: trajectory_loss(net, x, y, 0.01, params, target, jax.random.key(2), **kw)[0], x, y)
    close(got, want)
    # the adapters give the same functions
    m, p = from_network(net, variables)
    close(jit(lambda x: m.embed(p, x), x), jit(lambda x: net.embed(variables, x), x))
    m, p = from_linen(net.module, variables, embed="embed", train=False)
    close(jit(lambda x: m.apply(p, x), x), jit(lambda x: net.logits(variables, x), x))
    with pytest.raises(ValueError, match="needs features: pass embed_fn"):
        L.distribution_match_loss(apply_fn, params, xr, xs)


def test_penultimate_features_of_a_linen_model():
    net = LinenNet()
    x, _ = _batch((9, 9, 2))
    variables = net.init(jax.random.key(0), x)
    model, params = from_linen(net, variables)
    feats = model.embed(params, x)
    head = variables["params"]["Dense_1"]
    # the last Dense maps the features to the logits
    np.testing.assert_allclose(feats @ head["kernel"] + head["bias"], model.apply(params, x), rtol=1e-5, atol=1e-6)


def test_difficulty_classifier_with_own_model(jaxdd_net):
    from jaxdd.difficulty.classifier import DifficultyClassifier

    net, variables = jaxdd_net
    stacked = jax.tree.map(lambda a: jnp.stack([a, a * 0.5]), variables["params"])
    apply_fn = lambda p, x: net.module.apply({"params": p}, x, train=False)  # noqa: E731
    x, y = _batch((8, 8, 1), n=6)
    clf = DifficultyClassifier(Model(apply_fn), stacked, meta={})
    probs = jax.vmap(lambda p: jax.nn.softmax(apply_fn(p, x)))(stacked)  # (M, N, C)
    want = 1.0 - np.asarray(probs[:, np.arange(6), y]).mean(0)
    np.testing.assert_allclose(clf.scores(np.asarray(x), np.asarray(y)), want, rtol=1e-5, atol=1e-6)
    acc = (np.asarray(probs).argmax(-1) == np.asarray(y)[None]).mean(1)
    np.testing.assert_allclose(clf.accuracy(np.asarray(x), np.asarray(y)), acc, rtol=1e-6)  # float32 mean
    with pytest.raises(ValueError, match="only a classifier built on a jaxdd network"):
        clf.save("unused")


# ------------------------------------------------------------------------------------- registry

def _margin(logits, y):
    """Top-2 margin of the label's logit (a made-up score for the registry tests)."""
    other = jnp.max(jnp.where(jax.nn.one_hot(y, logits.shape[-1]) > 0, -jnp.inf, logits), -1)
    return other - jnp.take_along_axis(logits, y[:, None], 1)[:, 0]


@pytest.fixture
def margin_score():
    register_score("test-margin", _margin, description="margin")
    yield "test-margin"
    D.SCORES.pop("test-margin")


def test_registered_score_is_reachable_from_driver_and_cli(margin_score, jaxdd_net, tiny_npz, tmp_path):
    from jaxdd.cli import main

    net, variables = jaxdd_net
    x, y = _batch((8, 8, 1), n=6)
    got = D.score_models(net, variables, np.asarray(x), np.asarray(y), margin_score, progress=False)[0]
    np.testing.assert_allclose(got, _margin(net.logits(variables, x), y), rtol=1e-6)
    out = tmp_path / "s.npz"
    assert main(["score", "--dataset", tiny_npz, "--score", margin_score, "--models", "1", "--epochs", "1",
                 "--out", str(out)]) == 0
    saved = np.load(out)
    assert saved["scores"].shape == (24,) and np.all(np.isfinite(saved["scores"]))


def test_unknown_score_lists_the_registered_ones(margin_score, jaxdd_net):
    net, variables = jaxdd_net
    x, y = _batch((8, 8, 1), n=2)
    with pytest.raises(ValueError, match=r"unknown score 'nope'; choose one of grand, .*forgetting, test-margin"):
        D.batch_scores(net, variables, x, y, "nope")
    with pytest.raises(ValueError, match="already registered"):
        register_score(margin_score, _margin)
    with pytest.raises(ValueError, match="inputs must be one of"):
        register_score("other", _margin, inputs="pixels")


# -------------------------------------------------------------------------------------- README

def test_readme_own_model_section_runs_as_written():
    """The code blocks of README.md's "Use jaxdd in your own JAX code", executed exactly."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Use jaxdd in your own JAX code", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # the README promises the fast path
        for block in blocks:
            exec(compile(block, "README.md", "exec"), ns)
    np.testing.assert_allclose(ns["norms"], slow_norms(ns["apply_fn"], ns["params"], ns["x"], ns["y"]), rtol=1e-5)
    np.testing.assert_allclose(ns["nnx_norms"], slow_norms(ns["model"].apply, ns["nnx_params"],
                                                           ns["x"].reshape(20, -1), ns["y"]), rtol=1e-5)
    assert ns["g"].shape == (2, 1, 28, 28, 1) and np.all(np.isfinite(ns["g"]))
    # fresh networks of the user's module: 3 DM steps moved the images, the scores are EL2N values
    assert int(ns["state"].step) == 3 and ns["state"].images.shape == (10, 28, 28, 1)
    assert float(jnp.abs(ns["state"].images - ns["dm"].init(jax.random.key(2), ns["real"]).images).max()) > 1e-3
    el2n = np.asarray(ns["el2n"])
    assert el2n.shape == (20,) and np.all((el2n >= 0) & (el2n <= np.sqrt(2)))
