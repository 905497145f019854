"""Per-class losses of DM / DC split over devices by class (jaxdd.distill.sharding) against
per-class Python loops on one device, and a full update against the unsplit method."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.distill import RealData, build_method, losses, sharding
from jaxdd.models import create_network
from jaxdd.utils.mesh import data_mesh


@pytest.fixture(scope="module")
def setup(tiny_dataset):
    net = create_network("mlp-w16", num_classes=3, input_shape=tiny_dataset.image_shape)
    r = np.random.default_rng(1)
    x_real = jnp.asarray(r.standard_normal((3, 4, 16, 16, 3)), jnp.float32)
    x_syn = jnp.asarray(r.standard_normal((3, 2, 16, 16, 3)), jnp.float32)
    w = jnp.asarray(r.uniform(0.5, 2.0, (3, 4)), jnp.float32)
    return net, net.init(jax.random.key(0)), x_real, x_syn, w


def _dm_loop(net, variables, x_real, x_syn, w):
    """Σ_c ‖Σ_i w_ci φ(T_ci) / Σ_i w_ci − mean_j φ(S_cj)‖², one class at a time."""
    total = 0.0
    for c in range(x_real.shape[0]):
        fr = np.asarray(net.embed(variables, x_real[c], train=True), np.float64)
        fs = np.asarray(net.embed(variables, x_syn[c], train=True), np.float64)
        wc = np.asarray(w[c], np.float64)
        total += np.sum(((wc[:, None] * fr).sum(0) / wc.sum() - fs.mean(0)) ** 2)
    return total


@pytest.mark.parametrize("devices", [2, 8])  # 3 classes: padded to 4 (2 devices) and to 8 (8 devices)
def test_dm_and_dc_losses_split_by_class_match_per_class_loops(setup, devices):
    net, variables, x_real, x_syn, w = setup
    mesh = data_mesh(devices)
    got = jax.jit(lambda v, xr, xs, ww: sharding.distribution_match_loss(net, v, xr, xs, ww, mesh))(
        variables, x_real, x_syn, w)
    # float32 features (O(1)) summed in another order: ~1e-6 relative
    np.testing.assert_allclose(float(got), _dm_loop(net, variables, x_real, x_syn, w), rtol=1e-5)
    dc = jax.jit(lambda v, xr, xs: sharding.gradient_match_loss(net, v, xr, xs, "ours", None, mesh))(
        variables, x_real, x_syn)
    # the per-class loop and the gradients below jitted (one compile each, not one per primitive)
    one_class = jax.jit(lambda xr, xs, c: losses.class_gradient_match_loss(net, variables, xr, jnp.full((4,), c), xs,
                                                                           jnp.full((2,), c), "ours"))
    loop = sum(float(one_class(x_real[c], x_syn[c], c)) for c in range(3))
    np.testing.assert_allclose(float(dc), loop, rtol=1e-5)
    # the gradient w.r.t. the synthetic images: each class's block only from its own term
    g = jax.jit(jax.grad(lambda xs: sharding.distribution_match_loss(net, variables, x_real, xs, None, mesh)))(x_syn)
    g1 = jax.jit(jax.grad(lambda xs: losses.distribution_match_loss(net, variables, x_real[1:2], xs, None)))(
        x_syn[1:2])
    np.testing.assert_allclose(np.asarray(g[1]), np.asarray(g1[0]), rtol=1e-4, atol=1e-7)
    assert np.all(np.isfinite(np.asarray(g)))  # the masked padding classes add nothing, not NaN


def test_dm_update_with_class_split_matches_one_device(setup, tiny_dataset):
    net = setup[0]
    real = RealData.from_dataset(tiny_dataset)
    plain = build_method("dm", net, ipc=2, batch_real=4)
    split = dataclasses.replace(build_method("dm", net, mesh=data_mesh(2), ipc=2, batch_real=4), class_split=True)
    state = plain.init(jax.random.key(0), real)
    a, ma = jax.jit(plain.update)(state, real)
    b, mb = jax.jit(split.update)(state, real)
    # the same draws (real batch, DSA, network) and one SGD step of the images (O(1)): float32 sums
    np.testing.assert_allclose(float(ma["loss"]), float(mb["loss"]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(a.images), np.asarray(b.images), atol=1e-5)


def test_class_split_refuses_batchnorm_dm_and_a_missing_mesh(setup):
    net, variables, x_real, x_syn, _ = setup
    bn = create_network("convnet-bn", num_classes=3, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="BatchNorm statistics span all classes"):
        sharding.distribution_match_loss(bn, bn.init(jax.random.key(0)), x_real, x_syn, None, data_mesh(2))
    with pytest.raises(ValueError, match="class_split needs a device mesh"):
        sharding.gradient_match_loss(net, variables, x_real, x_syn, "ours", None, None)
