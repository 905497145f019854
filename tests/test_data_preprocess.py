"""Normalisation, resizing and ZCA whitening against hand-computed / independent results."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxdd.data import ZCA, channel_stats, fit_zca, from_arrays, normalize, resize_images
from jaxdd.data.preprocess import apply_in_batches, denormalize


def test_channel_stats_by_hand():
    x = np.zeros((2, 1, 2, 2), np.float32)
    x[..., 0] = [[[0.0, 1.0]], [[1.0, 0.0]]]  # mean 0.5, std 0.5
    x[..., 1] = 0.25  # constant channel: std 0 -> 1
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, [0.5, 0.25])
    np.testing.assert_allclose(std, [0.5, 1.0])
    np.testing.assert_allclose(denormalize(normalize(x, mean, std), mean, std), x)
    with pytest.raises(ValueError, match="NHWC"):
        channel_stats(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least one image"):
        channel_stats(np.zeros((0, 2, 2, 1)))


def test_from_arrays_normalises_with_train_stats():
    r = np.random.default_rng(0)
    raw = r.integers(0, 256, size=(60, 5, 5, 3), dtype=np.uint8)
    raw_test = r.integers(0, 256, size=(9, 5, 5, 3), dtype=np.uint8)
    ds = from_arrays("t", raw, np.arange(60) % 3, raw_test, np.arange(9) % 3)
    px = raw.reshape(-1, 3) / 255.0
    # train statistics, by hand (float32 sums over 1500 pixels: ~1e-7 apart; a wrong statistic >1e-3)
    np.testing.assert_allclose(ds.mean, px.mean(0), atol=1e-5)
    np.testing.assert_allclose(ds.std, px.std(0), atol=1e-5)
    np.testing.assert_allclose(ds.x_test, (raw_test / 255.0 - px.mean(0)) / px.std(0), atol=1e-5)
    np.testing.assert_allclose(ds.denormalize(ds.x_train), raw / 255.0, atol=1e-5)


def test_resize_images_matches_pil_and_keeps_layout():
    r = np.random.default_rng(1)
    grey = r.integers(0, 256, (3, 9, 7), dtype=np.uint8)
    out = resize_images(grey, 5)
    assert out.shape == (3, 5, 5)
    np.testing.assert_array_equal(out[1], np.asarray(Image.fromarray(grey[1]).resize((5, 5), Image.BILINEAR)))
    assert resize_images(grey[..., None], 4).shape == (3, 4, 4, 1)
    assert resize_images(r.integers(0, 256, (2, 6, 6, 3), dtype=np.uint8), 3, crop=True).shape == (2, 3, 3, 3)
    same = r.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    assert resize_images(same, 4) is same
    with pytest.raises(ValueError, match="uint8"):
        resize_images(grey.astype(np.float32), 4)
    with pytest.raises(ValueError, match="positive"):
        resize_images(grey, 0)


@pytest.fixture(scope="module")
def correlated():
    """Normalised-looking images with strongly correlated pixels (8 x 4x4x2 features = 32)."""
    r = np.random.default_rng(0)
    mix = r.normal(size=(32, 32)) * np.linspace(0.05, 2.0, 32)
    x = (r.normal(size=(400, 32)) @ mix.T + r.normal(size=32)).astype(np.float32)
    return x.reshape(400, 4, 4, 2)


def test_zca_inverse_of_apply(correlated):
    zca = fit_zca(correlated)
    assert zca.shape == (4, 4, 2) and zca.reg == 0.1
    z = zca.apply(correlated)
    assert z.shape == correlated.shape
    np.testing.assert_allclose(np.asarray(zca.inverse(z)), correlated, atol=2e-3)
    one = zca.apply(correlated[0])  # a single image works too
    np.testing.assert_allclose(np.asarray(one), np.asarray(z[0]), atol=1e-4)


def test_zca_whitened_covariance_matches_formula(correlated):
    """cov(zca(X)) = U diag(lam/(lam+0.1)) U^T, computed independently from the SVD of X."""
    zca = fit_zca(correlated, reg=0.1)
    flat = correlated.reshape(400, -1).astype(np.float64)
    centred = flat - flat.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    lam = s ** 2 / (len(flat) - 1)
    expected = (vt.T * (lam / (lam + 0.1))) @ vt
    z = np.asarray(zca.apply(correlated), np.float64).reshape(400, -1)
    np.testing.assert_allclose(np.cov(z, rowvar=False), expected, atol=2e-3)
    # and W itself: W = V diag(1/sqrt(lam+0.1)) V^T, symmetric
    w = (vt.T / np.sqrt(lam + 0.1)) @ vt
    np.testing.assert_allclose(np.asarray(zca.matrix), w, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.asarray(zca.matrix), np.asarray(zca.matrix).T, atol=1e-5)


def test_zca_is_a_pytree_usable_under_jit(correlated):
    zca = fit_zca(correlated)
    leaves = jax.tree.leaves(zca)
    assert len(leaves) == 3  # mean, matrix, inverse_matrix; shape and reg are static
    z = jax.jit(lambda t, x: t.apply(x))(zca, jnp.asarray(correlated[:5]))
    np.testing.assert_allclose(np.asarray(z), np.asarray(zca.apply(correlated[:5])), atol=1e-4)
    with pytest.raises(ValueError, match="fitted on images of shape"):
        zca.apply(np.zeros((2, 4, 4, 3)))
    with pytest.raises(Exception):
        zca.reg = 1.0  # frozen


def test_zca_denormalize_round_trip(correlated):
    r = np.random.default_rng(5)
    raw = r.integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
    ds = from_arrays("t", raw, np.arange(50) % 2, raw[:10], np.arange(10) % 2)
    from jaxdd.data import whiten

    wd = whiten(ds)
    assert isinstance(wd.zca, ZCA) and not np.allclose(wd.x_train, ds.x_train)
    np.testing.assert_allclose(wd.denormalize(wd.x_train), raw / 255.0, atol=2e-3)
    np.testing.assert_allclose(wd.x_test, np.asarray(wd.zca.apply(ds.x_test)), atol=1e-5)
    with pytest.raises(ValueError, match="already ZCA-whitened"):
        whiten(wd)


def test_zca_errors_and_batches(correlated):
    with pytest.raises(ValueError, match="at least 2 images"):
        fit_zca(correlated[:1])
    with pytest.raises(ValueError, match="regularisation must be > 0"):
        fit_zca(correlated, reg=0.0)
    with pytest.raises(ValueError, match="NHWC"):
        fit_zca(correlated.reshape(400, -1))
    zca = fit_zca(correlated)
    # float32 ZCA: each output sums many products of magnitude ~4; batches of 7 vs one batch block
    # the matmul differently (measured 4.5e-6 apart), so 1e-4
    np.testing.assert_allclose(apply_in_batches(zca.apply, correlated, batch_size=7),
                               np.asarray(zca.apply(correlated)), atol=1e-4)
