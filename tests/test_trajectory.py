"""The trajectory-matching loss: plan, scan vs a manual SGD loop, the three memory modes, a hand-made case."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.augment import dsa
from jaxdd.distill.trajectory import (normalized_param_loss, param_sq_distance, resolve_checkpoint_every,
                                      student_plan, trajectory_loss)
from jaxdd.models import Network, create_network
from jaxdd.utils.labels import cross_entropy
from jaxdd.utils.mesh import data_mesh

SHAPE = (6, 6, 1)
STRATEGY = "color_crop"


@pytest.fixture(scope="module")
def setup():
    net = create_network("mlp-w16", num_classes=3, input_shape=SHAPE)
    v0, v1 = net.init(jax.random.key(1)), net.init(jax.random.key(2))
    start = v0["params"]
    target = jax.tree.map(lambda a, b: 0.8 * a + 0.2 * b, v0["params"], v1["params"])
    x = jax.random.normal(jax.random.key(3), (6,) + SHAPE)
    y = jnp.array([0, 0, 1, 1, 2, 2], jnp.int32)
    soft = jax.nn.softmax(jax.random.normal(jax.random.key(4), (6, 3)) * 2, -1)
    return net, start, target, x, y, soft


def test_student_plan_covers_every_image_each_epoch():
    plan = student_plan(jax.random.key(0), num_images=10, syn_steps=7, batch_syn=4)
    assert plan.batches.shape == (7, 4) and plan.aug_keys.shape == (7,)
    rows = np.asarray(plan.batches)
    # 3 batches per epoch (the last completed with the epoch's first images): epochs = rows 0-2, 3-5
    for e in range(2):
        assert set(rows[3 * e:3 * e + 3].ravel()) == set(range(10))
    whole = student_plan(jax.random.key(0), num_images=5, syn_steps=3)
    assert whole.batches.shape == (3, 5) and all(sorted(r) == list(range(5)) for r in np.asarray(whole.batches))
    with pytest.raises(ValueError, match="syn_steps"):
        student_plan(jax.random.key(0), 4, 0)


def manual_trajectory(net, x, labels, lr, start, plan, strategy):
    """An independent plain-Python SGD loop (no scan, no custom VJP)."""
    theta = start
    for i in range(plan.batches.shape[0]):
        idx = plan.batches[i]
        xb = x[idx]
        if strategy:
            xb = dsa(plan.aug_keys[i], xb, strategy, siamese=False)

        def loss(p):
            return jnp.mean(cross_entropy(net.apply({"params": p}, xb, train=True)[0], labels[idx]))

        g = jax.grad(loss)(theta)
        theta = jax.tree.map(lambda p, gi: p - lr * gi, theta, g)
    return theta


def test_scan_equals_manual_sgd_loop(setup):
    net, start, target, x, y, _ = setup
    key = jax.random.key(7)
    lr = jnp.float32(0.3)

    def manual_loss(xx, lr):
        plan = student_plan(key, 6, 5, 4)
        theta = manual_trajectory(net, xx, y, lr, start, plan, STRATEGY)
        return param_sq_distance(theta, target) / param_sq_distance(start, target)

    def scan_loss(xx, lr):
        return trajectory_loss(net, xx, y, lr, start, target, key, syn_steps=5, batch_syn=4, dsa_strategy=STRATEGY,
                               memory="unroll")[0]

    lm, gm = jax.value_and_grad(manual_loss, argnums=(0, 1))(x, lr)
    ls, gs = jax.jit(jax.value_and_grad(scan_loss, argnums=(0, 1)))(x, lr)
    np.testing.assert_allclose(ls, lm, rtol=1e-5)
    np.testing.assert_allclose(gs[0], gm[0], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gs[1], gm[1], rtol=1e-4)


@pytest.mark.parametrize("soft,sdc", [(False, 0.0), (True, 0.5)])
def test_memory_modes_give_the_same_gradient(setup, soft, sdc):
    net, start, target, x, y, soft_y = setup
    key = jax.random.key(11)

    def grads(memory, every):
        def f(xx, lab, lr):
            lab = lab if soft else y
            return trajectory_loss(net, xx, lab, lr, start, target, key, syn_steps=5, batch_syn=4,
                                   dsa_strategy=STRATEGY, memory=memory, checkpoint_every=every, sdc=sdc)[0]

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(x, soft_y, jnp.float32(0.2))

    ref_l, ref_g = grads("unroll", None)
    assert float(jnp.abs(ref_g[0]).max()) > 0 and float(jnp.abs(ref_g[2])) > 0
    assert (float(jnp.abs(ref_g[1]).max()) > 0) == soft
    for memory, every in (("remat", None), ("tesla", None), ("tesla", 2), ("tesla", "sqrt")):
        l, g = grads(memory, every)
        # the modes fuse the same float32 sums differently: a few ulp of a loss ~1.3 (rtol 1e-5 ~ 80 ulp)
        np.testing.assert_allclose(l, ref_l, rtol=1e-5, err_msg=f"{memory} {every}")
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(jnp.abs(b).max()) + 1e-9,
                                       err_msg=f"{memory} {every}")


def test_modes_agree_on_a_convnet_and_with_finite_differences():
    net = create_network("convnet-w4-d1", num_classes=2, input_shape=(4, 4, 1))
    start = net.init(jax.random.key(0))["params"]
    target = jax.tree.map(lambda p: p * 0.9, net.init(jax.random.key(1))["params"])
    x = jax.random.normal(jax.random.key(2), (4, 4, 4, 1))
    y = jnp.array([0, 0, 1, 1])
    key = jax.random.key(3)

    def f(memory):
        return jax.jit(lambda lr: trajectory_loss(net, x, y, lr, start, target, key, syn_steps=3, batch_syn=2,
                                                  memory=memory, checkpoint_every=2)[0])

    g = {m: jax.grad(f(m))(jnp.float32(0.5)) for m in ("unroll", "remat", "tesla")}
    np.testing.assert_allclose(g["remat"], g["unroll"], rtol=1e-5)
    np.testing.assert_allclose(g["tesla"], g["unroll"], rtol=1e-5)
    h = 1e-2  # the loss is smooth in lr: central differences in float32
    fd = (f("unroll")(jnp.float32(0.5 + h)) - f("unroll")(jnp.float32(0.5 - h))) / (2 * h)
    np.testing.assert_allclose(g["tesla"], fd, rtol=2e-2)


class Linear(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes, use_bias=False)(x.reshape((x.shape[0], -1)))


def test_normalised_loss_on_a_hand_made_case():
    """W0 = 0, one image x = (1, 2) of class 0, 3 classes: g = x (softmax(0) - e_0)^T, θ1 = -α g,
    L = ‖θ1 - T‖² / ‖T‖² = 17/12 for α = 0.5 and T = [[1, 0, 0], [0, 1, 0]]; dL/dα = α‖g‖² = 5/3."""
    net = Network("linear", Linear(3), (1, 1, 2), 3)
    start = {"Dense_0": {"kernel": jnp.zeros((2, 3))}}
    target = {"Dense_0": {"kernel": jnp.array([[1.0, 0, 0], [0, 1.0, 0]])}}
    x = jnp.array([[[[1.0, 2.0]]]])
    y = jnp.array([0])

    def f(lr):
        return trajectory_loss(net, x, y, lr, start, target, jax.random.key(0), syn_steps=1, memory="tesla")[0]

    loss, dlr = jax.value_and_grad(f)(jnp.float32(0.5))
    np.testing.assert_allclose(loss, 17 / 12, rtol=1e-6)
    np.testing.assert_allclose(dlr, 5 / 3, rtol=1e-5)
    np.testing.assert_allclose(normalized_param_loss(target, start, target), 0.0)
    np.testing.assert_allclose(normalized_param_loss(start, start, target), 1.0)


def test_eight_devices_equal_one(setup, sharding_spy):
    net, start, target, x, y, _ = setup
    x8 = jnp.concatenate([x, x[:2] * 0.5])
    y8 = jnp.concatenate([y, y[:2]])
    mesh = data_mesh(8)

    def f(mesh_):
        return jax.jit(jax.value_and_grad(lambda xx: trajectory_loss(
            net, xx, y8, 0.2, start, target, jax.random.key(5), syn_steps=3, batch_syn=8, dsa_strategy=STRATEGY,
            memory="tesla", mesh=mesh_)[0]))(x8)

    l1, g1 = f(None)
    assert sharding_spy.splits(8) == [] and len(g1.sharding.device_set) == 1
    l8, g8 = f(mesh)
    np.testing.assert_allclose(l8, l1, rtol=1e-5)
    np.testing.assert_allclose(g8, g1, rtol=1e-4, atol=1e-7)
    # placement: every student batch of 8 images was split over the 8 devices
    assert sharding_spy.splits(8) and all(shape[0] == 8 and spec[0] == "data" for shape, spec in sharding_spy.splits(8))
    assert len(g8.sharding.device_set) == 8
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        trajectory_loss(net, x, y, 0.2, start, target, jax.random.key(5), syn_steps=2, batch_syn=6, mesh=mesh)


def test_bad_inputs_raise(setup):
    net, start, target, x, y, _ = setup
    common = dict(syn_steps=2)
    with pytest.raises(ValueError, match="memory mode"):
        trajectory_loss(net, x, y, 0.1, start, target, jax.random.key(0), memory="fast", **common)
    with pytest.raises(ValueError, match="checkpoint_every"):
        resolve_checkpoint_every(0, 10)
    assert resolve_checkpoint_every("sqrt", 80) == 9 and resolve_checkpoint_every(None, 80) == 1
    with pytest.raises(ValueError, match="synthetic images"):
        trajectory_loss(net, x[..., :0], y, 0.1, start, target, jax.random.key(0), **common)
    with pytest.raises(ValueError, match="one int label"):
        trajectory_loss(net, x, y[:3], 0.1, start, target, jax.random.key(0), **common)
    other = create_network("mlp-w8", num_classes=3, input_shape=SHAPE).init(jax.random.key(0))["params"]
    with pytest.raises(ValueError, match="does not belong to this network"):
        normalized_param_loss(start, other, other)
