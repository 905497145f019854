"""Memory planning of DC / DSA / DM (class batch, real chunk) and the chunked real-side losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.distill import RealData, build_method, losses
from jaxdd.distill import methods as M
from jaxdd.distill.base import MemoryPlanError, available_memory_bytes, choose_class_batch
from jaxdd.models import create_network


def fake_estimate(fixed, per_image):
    """Memory of k classes whose real batches go through the network r images at a time."""
    calls = []

    def estimate(k, r, batch=256):
        calls.append((k, r))
        return fixed + k * (r or batch) * per_image
    return estimate, calls


def test_choose_class_batch_prefers_all_classes_then_fewer_then_chunks():
    est, calls = fake_estimate(100, 10)
    assert choose_class_batch(est, 10, 256, 10**6) == (10, None, 100 + 10 * 2560)
    assert calls == [(10, None)]  # one compile when everything fits
    # 15,000 bytes: 10 classes need 25,700, one 2,660 -> 1 + (15000-2660)//2560 = 5 classes (12,900)
    est, calls = fake_estimate(100, 10)
    assert choose_class_batch(est, 10, 256, 15000) == (5, None, 12900)
    # 1,000 bytes: one class needs 2,660 -> real batch halved: 128 (1,380), 64 (740) fits
    est, calls = fake_estimate(100, 10)
    assert choose_class_batch(est, 10, 256, 1000) == (1, 64, 740)
    assert calls[-2:] == [(1, 128), (1, 64)]


def test_choose_class_batch_refuses_naming_the_flag():
    est, _ = fake_estimate(10**9, 10)
    with pytest.raises(MemoryPlanError, match="--class-batch") as e:
        choose_class_batch(est, 10, 256, 2**29)
    # one class at the smallest chunk (8): 1e9 + 8 * 10 bytes = 0.93 GiB, against 0.50 GiB
    assert isinstance(e.value, ValueError) and "0.93 GiB" in str(e.value) and "0.50 GiB" in str(e.value)


def test_available_memory_is_positive_on_this_machine():
    assert available_memory_bytes() > 0


@pytest.fixture(scope="module")
def setup(tiny_dataset):
    net = create_network("mlp-w16", num_classes=3, input_shape=tiny_dataset.image_shape)  # fast to compile
    return net, RealData.from_dataset(tiny_dataset)


def test_memory_plan_follows_the_available_memory(setup, monkeypatch, capsys):
    """With plenty of memory all classes at once; with a budget between the compiled estimates of
    one and of all classes, fewer classes per call; with almost none, a clear refusal."""
    net, real = setup
    monkeypatch.setattr(M, "PLAN_MIN_REAL_IMAGES", 0)
    monkeypatch.setattr(M, "CPU_CLASS_BATCH", None)  # CPU's preference: the next test
    m = build_method("dc", net, ipc=1, batch_real=8, outer_loop=1)
    n = real.batch_size(8)
    shape = tuple(real.image_shape)
    one, full = m._estimate_bytes(1, n, None, shape, False), m._estimate_bytes(3, n, None, shape, False)
    assert 0 < one < full  # XLA's estimate grows with the classes per call

    monkeypatch.setattr(M, "available_memory_bytes", lambda: 10 * full)
    M._memory_plan.cache_clear()
    assert m.memory_plan(real) == (3, None)
    assert "3 of 3 classes per call" in capsys.readouterr().out

    monkeypatch.setattr(M, "available_memory_bytes", lambda: int((one + 1) / M.MEMORY_FRACTION) + 1)
    M._memory_plan.cache_clear()
    k, chunk = m.memory_plan(real)
    assert k < 3
    st = m.init(jax.random.key(0), real)  # the planned update runs and equals the default one
    a, ma = jax.jit(m.update)(st, real)
    b, mb = jax.jit(build_method("dc", net, ipc=1, batch_real=8, outer_loop=1, class_batch=3).update)(st, real)
    np.testing.assert_allclose(np.asarray(a.images), np.asarray(b.images), rtol=1e-4, atol=1e-6)

    monkeypatch.setattr(M, "available_memory_bytes", lambda: 1000)
    M._memory_plan.cache_clear()
    with pytest.raises(MemoryPlanError, match="--class-batch"):
        m.memory_plan(real)
    # an explicit class batch skips the check
    assert build_method("dc", net, ipc=1, batch_real=8, class_batch=1).memory_plan(real) == (1, None)
    M._memory_plan.cache_clear()


def test_cpu_plan_matches_one_class_in_real_chunks_with_the_same_result(setup, monkeypatch, capsys):
    """On CPU the plan takes CPU_CLASS_BATCH classes per call and CPU_REAL_CHUNK real images per
    network call even with plenty of memory; the DC update equals the all-classes, unchunked one
    (only the float32 summation order differs: images of magnitude ~1, steps of lr_img 0.1)."""
    import dataclasses

    net, real = setup
    assert jax.default_backend() == "cpu"
    monkeypatch.setattr(M, "PLAN_MIN_REAL_IMAGES", 0)
    monkeypatch.setattr(M, "CPU_REAL_CHUNK", 3)
    monkeypatch.setattr(M, "available_memory_bytes", lambda: 2**40)
    M._memory_plan.cache_clear()
    m = build_method("dc", net, ipc=1, batch_real=8, outer_loop=2, inner_loop=1)
    assert m.memory_plan(real) == (1, 3)
    assert "1 of 3 classes per call, real images 3 at a time" in capsys.readouterr().out
    whole = dataclasses.replace(build_method("dc", net, ipc=1, batch_real=8, outer_loop=2, inner_loop=1,
                                             class_batch=3), real_chunk=10**9)
    assert whole.memory_plan(real) == (3, 10**9)
    st = m.init(jax.random.key(0), real)
    a, ma = jax.jit(m.update)(st, real)
    b, mb = jax.jit(whole.update)(st, real)
    assert not np.allclose(np.asarray(a.images), np.asarray(st.images))  # the update moved the images
    np.testing.assert_allclose(np.asarray(a.images), np.asarray(b.images), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(ma["loss"]), float(mb["loss"]), rtol=1e-4)
    M._memory_plan.cache_clear()


def test_chunked_real_gradient_equals_one_pass(setup):
    """Accumulated over chunks of 3 (the last shorter) vs one pass; weighted; float32 sums of a
    few terms agree to ~1e-6 relative, so rtol 1e-5."""
    net, real = setup
    variables = net.init(jax.random.key(0))
    x = real.images[:8]
    y = real.labels[:8]
    w = jnp.linspace(0.5, 2.0, 8)
    for weights in (None, w):
        ref = jax.grad(lambda p: losses.classifier_loss(net, p, variables, x, y, weights))(variables["params"])
        got = losses.real_gradient(net, variables, x, y, weights, chunk=3)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_chunked_dm_loss_equals_unchunked(tiny_dataset):
    """DM on a ConvNet (instance norm): real features embedded 5 at a time (the last chunk
    shorter) give the loss and image gradient of one call. Means of ~10 features of O(1): float32
    agreement ~1e-6 relative, so rtol 1e-5."""
    net = create_network("convnet-d1-w8", num_classes=3, input_shape=tiny_dataset.image_shape)
    variables = net.init(jax.random.key(1))
    rng = np.random.default_rng(0)
    x_real = jnp.asarray(rng.normal(size=(3, 4) + tiny_dataset.image_shape), jnp.float32)
    x_syn = jnp.asarray(rng.normal(size=(3, 2) + tiny_dataset.image_shape), jnp.float32)
    w = jnp.asarray(rng.uniform(0.5, 2, (3, 4)), jnp.float32)
    for weights in (None, w):
        def loss(xs, chunk):
            return losses.distribution_match_loss(net, variables, x_real, xs, weights, real_chunk=chunk)

        ref, g_ref = jax.value_and_grad(loss)(x_syn, None)
        got, g_got = jax.value_and_grad(loss)(x_syn, 5)
        # an independent reference: class means of per-image embeddings in a Python loop
        f = np.stack([np.asarray(net.embed(variables, x_real[c, i][None], train=True))[0]
                      for c in range(3) for i in range(4)]).reshape(3, 4, -1)
        ww = np.ones((3, 4)) if weights is None else np.asarray(weights)
        mu_r = (ww[..., None] * f).sum(1) / ww.sum(1)[:, None]
        mu_s = np.asarray(net.embed(variables, x_syn.reshape(6, *x_syn.shape[2:]), train=True)).reshape(3, 2, -1).mean(1)
        assert float(got) == pytest.approx(float(((mu_r - mu_s) ** 2).sum()), rel=1e-5)
        assert float(got) == pytest.approx(float(ref), rel=1e-5)
        np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_ref), rtol=1e-5, atol=1e-7)
