"""Own models where jaxdd initialises fresh networks: DC / DM distillation steps and ensemble
scores with a user-defined flax.linen model and a flax.nnx constructor (``jaxdd.models.adapters``:
``linen_model``, ``nnx_model``, ``as_network``), checked against independent computations written
here, and against the jaxdd Network path for jaxdd's own module run through the adapter."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxdd.difficulty import ensemble_scores
from jaxdd.distill import RealData, build_method
from jaxdd.models import create_network
from jaxdd.models.adapters import Model, ModelNetwork, as_network, linen_model, nnx_model

SHAPE = (8, 8, 2)


class OwnLinen(nn.Module):
    """A user's BatchNorm-free linen model; its features are the input of the last Dense."""

    def setup(self):
        self.conv = nn.Conv(4, (3, 3), strides=2)
        self.hidden = nn.Dense(6)
        self.head = nn.Dense(3)

    def features(self, x):
        x = nn.relu(self.conv(x))
        return nn.relu(self.hidden(x.reshape(x.shape[0], -1)))

    def __call__(self, x):
        return self.head(self.features(x))


class OwnNnx(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 4, (3, 3), strides=2, rngs=rngs)
        self.hidden = nnx.Linear(64, 6, rngs=rngs)
        self.head = nnx.Linear(6, 3, rngs=rngs)

    def features(self, x):
        x = nnx.relu(self.conv(x))
        return nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))

    def __call__(self, x):
        return self.head(self.features(x))


def _linen_ref():
    """(init(key), features(p, x), logits(p, x)) of OwnLinen written with flax directly."""
    m = OwnLinen()
    return (lambda k: m.init(k, jnp.zeros((1, *SHAPE)))["params"],
            lambda p, x: m.apply({"params": p}, x, method="features"),
            lambda p, x: m.apply({"params": p}, x))


def _nnx_ref():
    graphdef, _, rest = nnx.split(OwnNnx(nnx.Rngs(0)), nnx.Param, ...)
    return (lambda k: nnx.split(OwnNnx(nnx.Rngs(k)), nnx.Param, ...)[1],
            lambda p, x: nnx.merge(graphdef, p, rest).features(x),
            lambda p, x: nnx.merge(graphdef, p, rest)(x))


# the forms a user passes: the bare linen module (features: input of its last Dense) and the nnx
# constructor (nnx_model with the features method where DM needs it)
OWN = {"linen": (lambda: OwnLinen(), lambda: OwnLinen(), _linen_ref),
       "nnx": (lambda: (lambda rngs: OwnNnx(rngs)), lambda: nnx_model(lambda rngs: OwnNnx(rngs), embed="features"),
               _nnx_ref)}


@pytest.fixture(scope="module")
def real():
    rng = np.random.default_rng(0)
    return RealData.from_arrays(rng.normal(size=(15, *SHAPE)).astype(np.float32), np.arange(15) % 3, 3)


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


# float32 against the hand-written float32 computation: the same operations traced through
# different call paths (XLA may fuse and sum differently, ~1e-7 relative per operation over a few
# hundred terms), so 1e-5 relative / 1e-6 absolute sits well above the noise and far below any
# real difference (a wrong init key, feature or step changes the images by ~1e-2 or more).
def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_dm_step_with_an_own_model_equals_an_independent_dm_step(kind, real):
    _, dm_form, ref = OWN[kind]
    init, feats, _ = ref()
    method = build_method("dm", dm_form(), dataset=real, ipc=2, dsa=False, batch_real=4)
    assert isinstance(method.network, ModelNetwork) and method.network.num_classes == 3
    state = method.init(jax.random.key(1), real)
    new, metrics = jax.jit(method.update)(state, real)
    # DM by hand: the update's keys, a fresh network from its key, class means of the features,
    # one SGD step (lr 1, the momentum trace starts at the gradient)
    _, k_net, k_real, _ = jax.random.split(state.key, 4)
    params = init(k_net)
    x_real, _ = real.sample(k_real, 4)

    def loss(images):
        mu_s = feats(params, images).reshape(3, 2, -1).mean(1)
        mu_r = feats(params, x_real.reshape(12, *SHAPE)).reshape(3, 4, -1).mean(1)
        return jnp.sum((mu_r - mu_s) ** 2)

    g = jax.jit(jax.grad(loss))(state.images)
    assert float(jnp.abs(g).max()) > 1e-3  # a real step
    _close(new.images, state.images - 1.0 * g)
    _close(metrics["loss"], loss(state.images) / 3)


def _norm(a):
    """Row norms with a finite gradient at zero rows (dead ReLU units give all-zero rows)."""
    n2 = jnp.sum(a * a, 1)
    return jnp.where(n2 > 0, jnp.sqrt(jnp.where(n2 > 0, n2, 1.0)), 0.0)


def _gm_distance(g_syn, g_real):
    """DC's per-output-channel distance, written out: Σ_layers Σ_o (1 - cos) over tensors with
    more than one axis (rows = the last, output, axis), eps 1e-6 in the denominator."""
    total = 0.0
    for a, b in zip(jax.tree.leaves(g_syn), jax.tree.leaves(g_real)):
        if a.ndim <= 1:
            continue
        a = jnp.moveaxis(a, -1, 0).reshape(a.shape[-1], -1)
        b = jnp.moveaxis(b, -1, 0).reshape(b.shape[-1], -1)
        cos = (a * b).sum(1) / (_norm(a) * _norm(b) + 1e-6)
        total = total + jnp.sum(1 - cos)
    return total


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_dc_step_with_an_own_model_equals_an_independent_dc_step(kind, real):
    form, _, ref = OWN[kind]
    init, _, logits = ref()
    method = build_method("dc", form(), dataset=real, ipc=1, batch_real=4)  # IPC 1: one outer loop
    state = method.init(jax.random.key(2), real)
    new, _ = jax.jit(method.update)(state, real)
    _, k_net, k_loop = jax.random.split(state.key, 3)
    k_real = jax.random.split(jax.random.split(k_loop, 1)[0], 3)[0]
    params = init(k_net)
    x_real, _ = real.sample(k_real, 4)

    def ce_grad(x, label):
        return jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
            logits(p, x), jnp.full((x.shape[0],), label)).mean())(params)

    def loss(images):
        return sum(_gm_distance(ce_grad(images[c:c + 1], c), jax.lax.stop_gradient(ce_grad(x_real[c], c)))
                   for c in range(3))

    g = jax.jit(jax.grad(loss))(state.images)
    assert float(jnp.abs(g).max()) > 1e-4
    _close(new.images, state.images - 0.1 * g)


def test_dc_with_inner_training_of_the_jaxdd_module_through_the_adapter_equals_the_network(real):
    """DC with inner training (IPC 2, 2 outer loops, 2 iterations; the independent tests above
    cover one outer loop): the convnet module as an own linen model and the jaxdd Network give
    the same images (no BatchNorm, so train mode and inference mode agree)."""
    net = create_network("convnet-d1", num_classes=3, input_shape=SHAPE)
    images = []
    for model in (net, linen_model(net.module, train=False)):
        method = build_method("dc", model, dataset=real, ipc=2, outer_loop=2, inner_loop=1, batch_real=4)
        state, step = method.init(jax.random.key(3), real), jax.jit(method.update)
        for _ in range(2):
            state, _ = step(state, real)
        images.append(state.images)
    assert float(jnp.abs(images[0] - method.init(jax.random.key(3), real).images).max()) > 1e-3
    _close(images[1], images[0])


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_ensemble_el2n_of_an_own_model_at_init_equals_hand_computation(kind, real):
    form, _, ref = OWN[kind]
    init, _, logits = ref()
    x, y = np.asarray(real.images), np.asarray(real.labels)
    key = jax.random.key(4)
    res = ensemble_scores(form(), x, y, key, score="el2n", num_models=2, epochs=0, progress=False)
    # EL2N = ‖softmax(f(x)) − onehot(y)‖₂ of model i = init(split(split(key)[0], 2)[i]), averaged
    keys = jax.random.split(jax.random.split(key)[0], 2)
    want = np.mean([np.linalg.norm(np.asarray(jax.nn.softmax(logits(init(k), x))) - np.eye(3)[y], axis=1)
                    for k in keys], axis=0)
    _close(res.scores, want)


def test_ensemble_scores_of_the_jaxdd_module_through_the_adapter_equal_the_network(real):
    net = create_network("convnet-d1", num_classes=3, input_shape=SHAPE)
    x, y = np.asarray(real.images), np.asarray(real.labels)
    kw = dict(score="grand", num_models=2, epochs=1, progress=False, batch_size=8)
    got = ensemble_scores(linen_model(net.module, train=False), x, y, jax.random.key(5), **kw)
    want = ensemble_scores(net, x, y, jax.random.key(5), **kw)
    _close(got.train_acc, want.train_acc)
    _close(got.scores, want.scores)


def test_own_model_errors_name_the_fix(real):
    class WithBN(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.BatchNorm(use_running_average=True)(x.reshape(x.shape[0], -1)))

    apply_fn = lambda p, x: x.reshape(x.shape[0], -1) @ p  # noqa: E731
    with pytest.raises(ValueError, match="has no init function"):
        build_method("dm", Model(apply_fn), dataset=real)
    with pytest.raises(ValueError, match="a plain apply_fn has no init"):
        ensemble_scores(apply_fn, np.asarray(real.images), np.asarray(real.labels), jax.random.key(0))
    with pytest.raises(ValueError, match="batch_stats.*BatchNorm-free"):
        build_method("dm", WithBN(), dataset=real)
    with pytest.raises(ValueError, match="holds BatchNorm statistics"):
        build_method("dm", lambda rngs: nnx.Sequential(nnx.BatchNorm(2, rngs=rngs), nnx.Linear(2, 3, rngs=rngs)),
                     dataset=real)
    with pytest.raises(ValueError, match="built nnx module"):
        as_network(OwnNnx(nnx.Rngs(0)), SHAPE)
    with pytest.raises(ValueError, match="needs the image shape"):
        build_method("dc", OwnLinen())
    with pytest.raises(ValueError, match="gives 3 logits per input, the data has 10"):
        as_network(OwnLinen(), SHAPE, 10)
    with pytest.raises(ValueError, match="has no embed function"):
        net = as_network(Model(lambda p, x: OwnLinen().apply({"params": p}, x),
                               init=lambda k, x: OwnLinen().init(k, x)["params"]), SHAPE)
        net.embed(net.init(jax.random.key(0)), jnp.zeros((1, *SHAPE)))
    # a Network passes through when its shapes fit
    net = create_network("convnet-d1", num_classes=3, input_shape=SHAPE)
    assert as_network(net, SHAPE, 3) is net
    with pytest.raises(ValueError, match="create it for this data"):
        as_network(net, (4, 4, 2))


def test_mtt_experts_and_update_of_the_jaxdd_module_through_the_adapter_equal_the_network(tiny_npz, tmp_path):
    """MTT end to end with an own model: experts trained on it (train_experts) and one MTT update
    from its buffer equal the same module as a jaxdd Network (mlp: no BatchNorm)."""
    from jaxdd.data import load_dataset
    from jaxdd.experts import ExpertConfig, train_experts

    ds = load_dataset(tiny_npz)
    real = RealData.from_dataset(ds)
    net = create_network("mlp-w16", num_classes=3, input_shape=(8, 8, 1))
    own = linen_model(net.module, train=False)
    settings = dict(ipc=2, syn_steps=3, expert_epochs=1, max_start_epoch=2, lr_img=1.0, iterations=2)
    out = []
    for i, model in enumerate((net, own)):
        buf = train_experts(ds, model, tmp_path / str(i), 1, ExpertConfig(epochs=3, batch_size=8), progress=False)
        method = build_method("mtt", model, dataset=ds, buffer=str(buf.path), **settings)
        state = method.init(jax.random.key(6), real)
        new, _ = jax.jit(method.update)(state, real)
        out.append((buf.flat(0, 3), new.images, state.images))
    assert buf.index["network"]["name"] == "MLP"
    _close(out[1][0], out[0][0])  # the expert's last epoch
    assert float(jnp.abs(out[0][1] - out[0][2]).max()) > 1e-4
    _close(out[1][1], out[0][1])


def test_difficulty_classifier_trained_on_an_own_model_equals_the_network(tiny_npz, tmp_path):
    from jaxdd.data import load_dataset
    from jaxdd.difficulty.classifier import train_classifier
    from jaxdd.train import TrainConfig

    ds = load_dataset(tiny_npz)
    net = create_network("mlp-w16", num_classes=3, input_shape=(8, 8, 1))
    cfg = TrainConfig(epochs=2, batch_size=8)
    mine = train_classifier(jax.random.key(7), ds, linen_model(net.module, train=False), cfg, progress=False)
    ref = train_classifier(jax.random.key(7), ds, "mlp-w16", cfg, progress=False)
    assert mine.meta["model"] == "MLP"
    _close(mine.scores(ds.x_test, ds.y_test), ref.scores(ds.x_test, ds.y_test))
    with pytest.raises(ValueError, match="only a classifier built on a jaxdd network"):
        mine.save(tmp_path / "clf")


def test_distill_driver_runs_and_evaluates_an_own_model(tiny_npz):
    """The driver's GraNd tracking, quick and final evaluations train fresh networks of the
    method's own model (not a network looked up by name)."""
    from jaxdd.data import load_dataset
    from jaxdd.distill import distill

    ds = load_dataset(tiny_npz)
    real = RealData.from_dataset(ds)
    method = build_method("dm", OwnLinen(), dataset=ds, ipc=1, batch_real=4)
    res = distill(method, real, ds, iterations=2, eval_every=2, eval_epochs=1, eval_final_epochs=1,
                  eval_final_models=1, track_models=1, progress=False)
    [final] = res.evaluation["results"]
    assert final["arch"] == "OwnLinen" and 0 <= final["mean"] <= 100
    assert any("eval_acc" in h for h in res.history) and all(np.isfinite(h["grand"]) for h in res.history
                                                              if "grand" in h)
