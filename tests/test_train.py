"""The shared SGD trainer (jaxdd.train) against independent computations."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdd.models import create_network
from jaxdd.models.layers import Dense
from jaxdd.models.network import Network
from jaxdd.train import TrainConfig, Trainer, accuracy, epoch_batches, evaluate_accuracy, fit, predict_logits
from jaxdd.utils.labels import cross_entropy
from jaxdd.utils.mesh import data_mesh

tree_close = lambda a, b, **kw: jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **kw), a, b)  # noqa: E731


class _Linear(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        return Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


def linear_net(num_classes=3, shape=(2, 2, 1)):
    return Network(name="linear", module=_Linear(num_classes), input_shape=shape, num_classes=num_classes)


def toy_data(n=20, shape=(8, 8, 1), classes=2, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, *shape)).astype(np.float32)
    y = (np.arange(n) % classes).astype(np.int32)
    return x, y


# ------------------------------------------------------------------------------------ SGD update
def torch_sgd(params, grads, buf, lr, momentum, weight_decay):
    """torch.optim.SGD (dampening 0), written out: d = g + λθ; b = μb + d; θ = θ − ηb."""
    d = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
    buf = jax.tree.map(lambda b, di: momentum * b + di, buf, d)
    return jax.tree.map(lambda p, b: p - lr * b, params, buf), buf


def test_optimizer_is_torch_sgd():
    """TrainConfig.optimizer (optax) against torch SGD by hand in float64, and bit for bit against
    the same update written out in jnp (one jitted update each)."""
    r = np.random.default_rng(1)
    params = {"w": r.normal(size=(3, 2)).astype(np.float32), "b": r.normal(size=(2,)).astype(np.float32)}
    grads = [jax.tree.map(lambda p: r.normal(size=p.shape).astype(np.float32), params) for _ in range(3)]
    lr, mu, wd = 0.1, 0.9, 5e-3
    cfg = TrainConfig(lr=lr, momentum=mu, weight_decay=wd)
    step = jax.jit(lambda p, g, s: (lambda u_s: (optax.apply_updates(p, u_s[0]), u_s[1]))(
        cfg.optimizer(lr).update(g, s, p)))
    hand = jax.jit(lambda p, g, b: torch_sgd(p, g, b, lr, mu, wd))
    po, so = params, cfg.optimizer(lr).init(params)
    pj, bj = params, jax.tree.map(np.zeros_like, params)
    hand_p = {k: v.astype(np.float64) for k, v in params.items()}
    hand_b = {k: np.zeros(v.shape) for k, v in params.items()}
    for g in grads:
        po, so = step(po, g, so)
        pj, bj = hand(pj, g, bj)
        for k in hand_p:  # PyTorch SGD in float64
            hand_b[k] = mu * hand_b[k] + g[k] + wd * hand_p[k]
            hand_p[k] = hand_p[k] - lr * hand_b[k]
    jax.tree.map(np.testing.assert_array_equal, po, pj)
    tree_close(po, hand_p, rtol=1e-5, atol=1e-6)  # float32 vs float64 over 3 steps of values ~1


class _WrittenOutTrainer(Trainer):
    """The trainer with its former hand-written step: the same loss and gradient, then torch SGD
    written out (:func:`torch_sgd`) on the momentum buffer instead of the optax chain."""

    def model_step(self, variables, opt_state, xb, yb, key, lr):
        grads, new_vars, metrics = self.model_grads(variables, xb, yb, key)
        trace = opt_state[1][0]
        params, buf = torch_sgd(variables["params"], grads, trace.trace, lr, self.config.momentum,
                                self.config.weight_decay)
        return {**new_vars, "params": params}, (opt_state[0], (trace._replace(trace=buf), opt_state[1][1])), metrics


@pytest.mark.parametrize("loop", ["models", "steps", "scan"])
def test_optax_sgd_and_schedule_bit_identical_to_written_out_sgd(loop):
    """A few epochs of the reference schedule (lr x0.1 and a zeroed momentum at epoch 3, short last
    batch, BatchNorm, weight decay, per-model lr) give the same bits as torch SGD written out."""
    net = create_network("convnet-d1-w8-bn", num_classes=3, input_shape=(8, 8, 1))
    x, y = toy_data(n=11, classes=3)
    cfg = TrainConfig(lr=0.05, batch_size=4, epochs=3)  # 4 epochs: 3 steps each (4 + 4 + 3)
    assert cfg.total_epochs == 4 and cfg.decay_epoch == 3
    keys = jax.random.split(jax.random.key(21), 2)
    lr = jnp.array([0.05, 0.02])
    runs = []
    for cls in (Trainer, _WrittenOutTrainer):
        tr = cls(net, cfg, loop=loop)
        runs.append(fit(tr, tr.init(keys), x, y, keys, lr=lr, progress=False))
    (new, hist_new), (old, hist_old) = runs
    jax.tree.map(np.testing.assert_array_equal, new, old)
    np.testing.assert_array_equal(np.stack([h["loss"] for h in hist_new]), np.stack([h["loss"] for h in hist_old]))
    assert int(new.step[0]) == 12 and np.all(np.asarray(new.opt_state[1][0].trace["classifier"]["kernel"]) != 0)


def test_train_step_equals_hand_written_linear_update():
    """Two steps of softmax regression: gradient X^T (softmax - onehot) / B by hand, PyTorch SGD."""
    net = linear_net()
    r = np.random.default_rng(2)
    xb = r.normal(size=(2, 5, 2, 2, 1)).astype(np.float32)  # 2 steps x batch 5
    yb = r.integers(0, 3, size=(2, 5)).astype(np.int32)
    cfg = TrainConfig(lr=0.3, momentum=0.9, weight_decay=0.01, epochs=10)
    tr = Trainer(net, cfg)
    state = tr.init(jax.random.key(0), 1)
    w = np.asarray(state.variables["params"]["Dense_0"]["kernel"][0], np.float64)
    b = np.asarray(state.variables["params"]["Dense_0"]["bias"][0], np.float64)
    bw, bb = np.zeros_like(w), np.zeros_like(b)
    for s in range(2):
        state, metrics = tr.train_step(state, xb[s][None], yb[s][None], jax.random.key(s))
        xs = xb[s].reshape(5, -1).astype(np.float64)
        z = xs @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = -np.mean(np.log(p[np.arange(5), yb[s]]))
        np.testing.assert_allclose(metrics["loss"][0], loss, rtol=1e-5)
        delta = (p - np.eye(3)[yb[s]]) / 5
        gw, gb = xs.T @ delta + cfg.weight_decay * w, delta.sum(0) + cfg.weight_decay * b
        bw, bb = cfg.momentum * bw + gw, cfg.momentum * bb + gb
        w, b = w - cfg.lr * bw, b - cfg.lr * bb
    np.testing.assert_allclose(state.variables["params"]["Dense_0"]["kernel"][0], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.variables["params"]["Dense_0"]["bias"][0], b, rtol=1e-5, atol=1e-6)
    assert int(state.step[0]) == 2 and int(state.epoch[0]) == 0


# ------------------------------------------------------------------------------------ schedule
def test_lr_decay_at_half():
    cfg = TrainConfig(lr=0.5, epochs=6, schedule="half")
    np.testing.assert_allclose(cfg.lr_at(0.5, jnp.arange(6)), [0.5, 0.5, 0.5, 0.05, 0.05, 0.05], rtol=1e-6)
    np.testing.assert_allclose(TrainConfig(epochs=6, schedule="constant").lr_at(0.5, jnp.arange(6)), [0.5] * 6)
    np.testing.assert_allclose(TrainConfig(epochs=1, schedule="half").lr_at(0.5, jnp.arange(1)), [0.5])  # no decay
    # per-model learning rates broadcast against per-model epochs
    np.testing.assert_allclose(cfg.lr_at(jnp.array([1.0, 2.0]), jnp.array([0, 3])), [1.0, 0.2], rtol=1e-6)


def test_lr_schedule_is_the_step_function_bitwise():
    """The optax schedule gives exactly ``where(e >= decay_epoch, 0.1, 1) * lr`` (the former formula),
    jitted or not, for scalar and per-model lr."""
    e = jnp.arange(12)
    for cfg in (TrainConfig(epochs=9), TrainConfig(epochs=9, schedule="half"),
                TrainConfig(epochs=9, schedule="constant")):
        d = cfg.decay_epoch if cfg.decay_epoch is not None else 10 ** 9
        for lr in (0.05, jnp.array([[0.013], [0.7]])):
            want = jnp.where(e >= d, 0.1, 1.0) * jnp.asarray(lr, jnp.float32)
            np.testing.assert_array_equal(cfg.lr_at(lr, e), want)
            np.testing.assert_array_equal(jax.jit(cfg.lr_at)(lr, e), want)


def test_decay_applied_in_training():
    """Full-batch gradient descent (no momentum/wd): epoch e moves the weights by lr_e * grad."""
    net = linear_net()
    x, y = toy_data(n=6, shape=(2, 2, 1), classes=3)
    cfg = TrainConfig(lr=0.2, momentum=0.0, weight_decay=0.0, batch_size=6, epochs=4, schedule="half")
    tr = Trainer(net, cfg)
    state = tr.init(jax.random.key(0), 1)
    grad_fn = jax.grad(lambda p: jnp.mean(cross_entropy(net.logits({"params": p}, jnp.asarray(x)), jnp.asarray(y))))
    for e, lr in enumerate([0.2, 0.2, 0.02, 0.02]):
        before = state.model_variables(0)["params"]
        g = grad_fn(before)
        state, _ = tr.train_epoch(state, x, y, jax.random.key(e))
        tree_close(state.model_variables(0)["params"], jax.tree.map(lambda p, gi: p - lr * gi, before, g),
                   rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------ batches
def test_epoch_batches_wrap_and_drop():
    key = jax.random.key(3)
    wrap = np.asarray(epoch_batches(key, 10, 4, "wrap"))
    assert wrap.shape == (3, 4)
    perm = np.asarray(jax.random.permutation(key, 10))
    np.testing.assert_array_equal(wrap.ravel(), np.concatenate([perm, perm[:2]]))
    drop = np.asarray(epoch_batches(key, 10, 4, "drop"))
    np.testing.assert_array_equal(drop.ravel(), perm[:8])
    small = np.asarray(epoch_batches(key, 3, 256))  # distilled sets smaller than a batch
    assert small.shape == (1, 3) and sorted(small[0]) == [0, 1, 2]
    assert Trainer(linear_net(), TrainConfig(batch_size=256)).batch_layout(10) == (10, 1)
    assert Trainer(linear_net(), TrainConfig(batch_size=4, last_batch="drop")).batch_layout(10) == (4, 2)


# ------------------------------------------------------------------------------------ losses
def test_soft_cross_entropy_equals_hard_for_one_hot():
    r = np.random.default_rng(4)
    logits = jnp.asarray(r.normal(size=(7, 5)).astype(np.float32))
    y = jnp.asarray(r.integers(0, 5, size=7))
    hard = jnp.mean(cross_entropy(logits, y))
    soft = jnp.mean(cross_entropy(logits, jax.nn.one_hot(y, 5)))
    z = np.asarray(logits, np.float64)
    ref = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(7), np.asarray(y)])
    np.testing.assert_allclose(hard, ref, rtol=1e-5)
    np.testing.assert_allclose(soft, ref, rtol=1e-5)
    q = r.dirichlet(np.ones(5), size=7)  # genuinely soft rows
    ref_soft = np.mean(-(q * (z - np.log(np.exp(z).sum(1, keepdims=True)))).sum(1))
    np.testing.assert_allclose(jnp.mean(cross_entropy(logits, jnp.asarray(q, jnp.float32))), ref_soft, rtol=1e-5)
    # a fraction k/7 in float32 is only within 6e-8 relative (numpy's default rtol 1e-7 is too tight)
    np.testing.assert_allclose(accuracy(logits, jnp.asarray(q)), np.mean(z.argmax(1) == q.argmax(1)), rtol=1e-6)


def test_soft_label_training_on_one_hot_equals_hard_training():
    net = linear_net(2, (8, 8, 1))
    x, y = toy_data(n=12)
    key = jax.random.key(5)
    runs = []
    for soft, labels in ((False, y), (True, y), (True, np.eye(2, dtype=np.float32)[y])):
        tr = Trainer(net, TrainConfig(batch_size=5, epochs=2, soft_labels=soft))
        st, _ = fit(tr, tr.init(key, 2), x, labels, key, progress=False)
        runs.append(st.variables)
    tree_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)
    tree_close(runs[0], runs[2], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ vmap == loop
BN_CFG = TrainConfig(lr=0.05, batch_size=8, epochs=4, schedule="half", last_batch="wrap")  # 20 examples: 3 steps, wrapped


@pytest.fixture(scope="module")
def bn_run():
    """Three BatchNorm ConvNets trained together (shared by the tests below: one compilation)."""
    net = create_network("convnet-d1-w8-bn", num_classes=2, input_shape=(8, 8, 1))
    x, y = toy_data(n=20)
    keys = jax.random.split(jax.random.key(6), 3)
    tr = Trainer(net, BN_CFG, loop="steps")  # all models vmapped in every step
    init = tr.init(keys)
    state, hist = fit(tr, init, x, y, keys, progress=False)
    return dict(net=net, x=x, y=y, keys=keys, init=init, state=state, hist=hist)


def _loss(net, params, variables, xb, yb):
    logits, new_v = net.apply({**variables, "params": params}, xb, train=True)
    return jnp.mean(cross_entropy(logits, yb)), new_v


def test_vmapped_models_equal_python_loop(bn_run):
    """M models trained together equal each model trained alone by a plain loop with the same keys
    (init, data order, lr decay at half, momentum, weight decay, partial-batch wrap, BatchNorm)."""
    net, x, y, keys, state, cfg = bn_run["net"], bn_run["x"], bn_run["y"], bn_run["keys"], bn_run["state"], BN_CFG
    grad_fn = jax.jit(jax.value_and_grad(functools.partial(_loss, net), has_aux=True))
    for i in range(3):
        v = net.init(keys[i])
        buf = jax.tree.map(jnp.zeros_like, v["params"])
        for e in range(cfg.epochs):
            lr = cfg.lr * (0.1 if e >= cfg.epochs // 2 else 1.0)
            k_perm, _ = jax.random.split(jax.random.fold_in(keys[i], e))
            perm = np.asarray(jax.random.permutation(k_perm, 20))
            for idx in np.concatenate([perm, perm[:4]]).reshape(3, 8):  # wrap: 20 -> 24
                (_, new_v), g = grad_fn(v["params"], v, x[idx], y[idx])
                buf = jax.tree.map(lambda b, gi, p: cfg.momentum * b + gi + cfg.weight_decay * p, buf, g, v["params"])
                v = {**new_v, "params": jax.tree.map(lambda p, b: p - lr * b, v["params"], buf)}
        tree_close(state.model_variables(i), v, rtol=1e-4, atol=2e-5)
    assert len(bn_run["hist"]) == 4 and bn_run["hist"][-1]["loss"].shape == (3,)
    assert not np.allclose(state.variables["params"]["classifier"]["kernel"][0],
                           state.variables["params"]["classifier"]["kernel"][1])  # independent seeds


def test_epoch_loops_agree(bn_run):
    """The lax.scan epoch (GPU/TPU default) and the per-model epoch (CPU default) equal the vmapped
    per-step epoch of the fixture."""
    net, x, y, keys = bn_run["net"], bn_run["x"], bn_run["y"], bn_run["keys"]
    ref, _ = fit(Trainer(net, BN_CFG, loop="steps"), bn_run["init"], x, y, keys, epochs=2, progress=False)
    for loop in ("scan", "models"):
        tr = Trainer(net, BN_CFG, loop=loop)
        assert tr.epoch_loop == loop
        state, _ = fit(tr, tr.init(keys), x, y, keys, epochs=2, progress=False)
        tree_close(state, ref, rtol=1e-5, atol=1e-6)
    assert Trainer(net).epoch_loop == ("models" if jax.default_backend() == "cpu" else "scan")
    with pytest.raises(ValueError, match="loop must be one of"):
        Trainer(net, loop="while")


def test_batchnorm_stats_update_and_eval_uses_running_stats(bn_run):
    net, x, state = bn_run["net"], bn_run["x"], bn_run["state"]
    mean0 = bn_run["init"].variables["batch_stats"]["norms_0"]["norm"]["mean"]
    mean1 = state.variables["batch_stats"]["norms_0"]["norm"]["mean"]
    assert not np.allclose(mean0, mean1)  # train=True updated the running statistics
    v = state.model_variables(0)
    eval_logits = net.logits(v, jnp.asarray(x))
    train_logits, _ = net.apply(v, jnp.asarray(x), train=True)
    np.testing.assert_allclose(predict_logits(net, state.variables, x, batch_size=8)[0], eval_logits,
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(eval_logits, train_logits, atol=1e-4)  # eval uses running, not batch, stats


def test_sharded_training_equals_single_device(bn_run, sharding_spy):
    """The same run with every minibatch split over 8 fake devices (BatchNorm included)."""
    net, x, y, keys = bn_run["net"], bn_run["x"], bn_run["y"], bn_run["keys"]
    mesh = data_mesh(8)
    tr = Trainer(net, BN_CFG, mesh=mesh)
    sharded, hist = fit(tr, tr.init(keys), x, y, keys, progress=False)
    tree_close(sharded.variables, bn_run["state"].variables, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hist[-1]["loss"], bn_run["hist"][-1]["loss"], rtol=1e-5)
    # placement: the minibatches (M models, B images) were split over the 8 devices on the image axis
    splits = sharding_spy.splits(8)
    assert splits and all(spec == (None, "data") for _, spec in splits), splits
    assert all(len(leaf.sharding.device_set) == 8 for leaf in jax.tree.leaves(sharded.variables))
    out1 = predict_logits(net, sharded.variables, x, batch_size=8)
    n_split = len(sharding_spy.splits(8))
    out8 = predict_logits(net, sharded.variables, x, batch_size=6, mesh=mesh)  # rounded up to 8
    np.testing.assert_allclose(out8, out1, rtol=1e-5, atol=1e-5)
    assert any(shape[0] == 8 and spec == ("data",) for shape, spec in sharding_spy.splits(8)[n_split:])
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        Trainer(net, TrainConfig(batch_size=12), mesh=mesh).train_epoch(sharded, x, y, keys)


# ------------------------------------------------------------------------------------ learning
def test_learns_a_separable_problem():
    """Three classes of 8x8 images that differ in which third of the image is bright, plus noise:
    a real learning test on held-out examples."""
    r = np.random.default_rng(9)

    def make(n):
        y = np.arange(n) % 3
        x = r.normal(scale=0.5, size=(n, 8, 8, 1)).astype(np.float32)
        for i, c in enumerate(y):
            x[i, :, 3 * c: 3 * c + 2] += 1.5
        return x, y.astype(np.int32)

    x, y = make(60)
    xt, yt = make(60)
    net = create_network("convnet-d1-w8", num_classes=3, input_shape=(8, 8, 1))
    tr = Trainer(net, TrainConfig(lr=0.05, batch_size=16, epochs=15))
    before = evaluate_accuracy(net, tr.init(jax.random.key(10), 2).variables, xt, yt)
    state, hist = fit(tr, tr.init(jax.random.key(10), 2), x, y, jax.random.key(11), progress=False)
    acc = evaluate_accuracy(net, state.variables, xt, yt)
    assert acc.shape == (2,) and np.all(acc >= 0.95), (before, acc)
    assert hist[-1]["loss"].mean() < hist[0]["loss"].mean()


# ------------------------------------------------------------------------------------ fit details
def test_fit_resume_and_callback():
    net = linear_net(2, (8, 8, 1))
    x, y = toy_data(n=12)
    tr = Trainer(net, TrainConfig(batch_size=5, epochs=4))
    key = jax.random.key(12)
    seen = []
    full, _ = fit(tr, tr.init(key, 2), x, y, key, progress=False,
                  on_epoch=lambda e, st, m: seen.append((e, int(st.epoch[0]), m["acc"].shape)))
    assert seen == [(1, 1, (2,)), (2, 2, (2,)), (3, 3, (2,)), (4, 4, (2,)), (5, 5, (2,))]  # reference: epochs + 1
    half, _ = fit(tr, tr.init(key, 2), x, y, key, epochs=2, progress=False)
    resumed, hist = fit(tr, half, x, y, key, progress=False)
    assert [h["epoch"] for h in hist] == [3, 4, 5]
    tree_close(resumed, full, rtol=1e-6, atol=1e-7)


def test_per_model_learning_rates():
    """lr with one value per model equals training each model with its own scalar lr (and the
    same model trained alone in a 1-model trainer with keys[i:i+1])."""
    net = linear_net(2, (8, 8, 1))
    x, y = toy_data(n=8)
    tr = Trainer(net, TrainConfig(batch_size=4, epochs=2))
    keys = jax.random.split(jax.random.key(13), 2)
    both, _ = fit(tr, tr.init(keys), x, y, keys, lr=jnp.array([0.01, 0.1]), progress=False)
    for i, lr in enumerate([0.01, 0.1]):
        alone, _ = fit(tr, tr.init(keys[i:i + 1]), x, y, keys[i:i + 1], lr=lr, progress=False)
        tree_close(alone.model_variables(0), both.model_variables(i), rtol=1e-5, atol=1e-6)


def test_predict_logits_matches_per_model_logits():
    net = linear_net(3, (8, 8, 1))
    tr = Trainer(net)
    state = tr.init(jax.random.key(14), 2)
    x, _ = toy_data(n=11)
    out = predict_logits(net, state.variables, x, batch_size=4)  # 11 = 4 + 4 + 3 (padded)
    assert out.shape == (2, 11, 3)
    # atol: float32 dot products over 64 inputs for logits ~2 (1 ulp 2.4e-7); other loop forms and
    # batch shapes may block the sums differently
    np.testing.assert_allclose(predict_logits(net, state.variables, x, batch_size=4, loop="vmap"), out,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predict_logits(net, state.variables, x, batch_size=4, loop="models"), out,
                               rtol=1e-5, atol=1e-5)
    for i in range(2):
        np.testing.assert_allclose(out[i], net.logits(state.model_variables(i), jnp.asarray(x)), rtol=1e-5, atol=1e-5)


def test_predict_logits_default_batch_is_small_on_cpu_and_exact():
    """With no batch_size, predict_logits batches by ``default_inference_batch`` (16 on CPU, where
    small batches are faster) and gives the logits of one full-size call."""
    from jaxdd.train import default_inference_batch

    assert jax.default_backend() == "cpu" and default_inference_batch() == 16
    net = linear_net(3, (8, 8, 1))
    state = Trainer(net).init(jax.random.key(15), 2)
    x, _ = toy_data(n=37)  # 16 + 16 + 5 (padded)
    np.testing.assert_allclose(predict_logits(net, state.variables, x),  # atol: see the test above
                               predict_logits(net, state.variables, x, batch_size=37), rtol=1e-5, atol=1e-5)


def test_dsa_augmentation_follows_the_key_contract():
    """With DSA, model i's step s augments its batch with dsa(split(k_aug, steps)[s], siamese=False),
    where (k_perm, k_aug) = split(fold_in(keys[i], epoch)): a hand loop reproduces the trainer."""
    from jaxdd.augment import dsa

    net = linear_net(2, (8, 8, 1))
    x, y = toy_data(n=8)
    strategy = "color_crop_cutout_scale_rotate"
    cfg = TrainConfig(lr=0.1, batch_size=4, epochs=2, augment=strategy, schedule="half")
    keys = jax.random.split(jax.random.key(16), 2)
    tr = Trainer(net, cfg)
    state, _ = fit(tr, tr.init(keys), x, y, keys, progress=False)
    plain, _ = fit(Trainer(net, TrainConfig(lr=0.1, batch_size=4, epochs=2, schedule="half")), tr.init(keys), x, y, keys,
                   progress=False)
    kernel = lambda st: st.variables["params"]["Dense_0"]["kernel"]  # noqa: E731
    assert not np.allclose(kernel(state), kernel(plain))  # augmentation changed the training
    grad_fn = jax.jit(jax.grad(lambda p, xb, yb: jnp.mean(cross_entropy(net.logits({"params": p}, xb), yb))))
    for i in (1,):  # the second model: its keys are keys[1]
        params = net.init(keys[i])["params"]
        buf = jax.tree.map(jnp.zeros_like, params)
        for e in range(2):
            k_perm, k_aug = jax.random.split(jax.random.fold_in(keys[i], e))
            order = np.asarray(epoch_batches(k_perm, 8, 4))
            for s, idx in enumerate(order):
                xb = dsa(jax.random.split(k_aug, len(order))[s], jnp.asarray(x[idx]), strategy, siamese=False)
                params, buf = torch_sgd(params, grad_fn(params, xb, jnp.asarray(y[idx])), buf,
                                        cfg.lr_at(cfg.lr, e), cfg.momentum, cfg.weight_decay)
        tree_close(state.model_variables(i)["params"], params, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ errors
def test_bad_input_raises_value_error():
    net = linear_net(2, (8, 8, 1))
    tr = Trainer(net)
    state = tr.init(jax.random.key(0), 2)
    x, y = toy_data(n=6)
    with pytest.raises(ValueError, match="soft_labels"):
        tr.train_epoch(state, x, np.eye(2, dtype=np.float32)[y], jax.random.key(0))
    with pytest.raises(ValueError, match="shape"):
        tr.train_epoch(state, x[..., :1, :], y, jax.random.key(0))
    with pytest.raises(ValueError, match="one label per image"):
        tr.train_epoch(state, x, y[:3], jax.random.key(0))
    with pytest.raises(ValueError, match="2 keys"):
        tr.train_epoch(state, x, y, jax.random.split(jax.random.key(0), 3))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        tr.train_epoch(state, x, y + 1, jax.random.key(0))
    with pytest.raises(ValueError, match="one batch per model"):
        tr.train_step(state, x[None], y[None], jax.random.key(0))
    with pytest.raises(ValueError, match="empty"):
        tr.train_epoch(state, x[:0], y[:0], jax.random.key(0))
    with pytest.raises(ValueError, match="last_batch"):
        TrainConfig(last_batch="pad")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
