"""jaxdd.augment (DSA): siamese draws, per-sample mode, each op against an independent reference,
gradients against finite differences, op coverage, jit and sharding."""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.augment import (DEFAULT_STRATEGY, DSA_OPS, NO_FLIP_STRATEGY, DSAParams, affine_grid_sample, choose_op,
                           default_strategy, dsa, parse_strategy)
from jaxdd.utils.mesh import data_mesh, shard_batch

dsa_mod = importlib.import_module("jaxdd.augment.dsa")  # the module (jaxdd.augment.dsa is the function)
N, H, W, C = 4, 8, 8, 3
KEYS = [jax.random.key(i) for i in range(40)]


@pytest.fixture(scope="module")
def x():
    return jnp.asarray(np.random.default_rng(0).normal(size=(N, H, W, C)), jnp.float32)


# -- strategy strings and parameters ----------------------------------------------------------

def test_strategies_and_params_validation(x):
    assert parse_strategy(DEFAULT_STRATEGY) == DSA_OPS
    assert parse_strategy("none") == ()
    assert default_strategy("CIFAR10") == default_strategy(3) == DEFAULT_STRATEGY
    for digits in ("mnist", "svhn"):  # the reference drops flip for digit datasets only
        assert default_strategy(digits) == NO_FLIP_STRATEGY == "color_crop_cutout_scale_rotate"
    assert default_strategy("Fashion-MNIST") == default_strategy(1) == DEFAULT_STRATEGY
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match="dataset name or a positive channel count"):
            default_strategy(bad)
    allowed = "color, crop, cutout, flip, scale, rotate"
    for bad in ("color_blur", "", "Color", "color__crop"):
        with pytest.raises(ValueError, match=allowed):
            parse_strategy(bad)
    with pytest.raises(ValueError, match=allowed):
        dsa(KEYS[0], x, "color_jitter")
    with pytest.raises(ValueError, match="twice"):
        parse_strategy("flip_flip")
    with pytest.raises(ValueError, match="float NHWC"):
        dsa(KEYS[0], x[0])
    with pytest.raises(ValueError, match="prob_flip"):
        DSAParams(prob_flip=1.5)
    with pytest.raises(ValueError, match="ratio_scale"):
        DSAParams(ratio_scale=0.8)
    with pytest.raises(ValueError, match="ratio_rotate"):
        DSAParams(ratio_rotate=-1.0)
    np.testing.assert_array_equal(dsa(KEYS[0], x, "none"), x)


# -- siamese / per-sample semantics -------------------------------------------------------------

def test_same_key_same_result_and_keys_differ(x):
    a, b = dsa(KEYS[1], x), dsa(KEYS[1], x)
    assert np.array_equal(a, b)
    outs = [np.asarray(dsa(k, x)) for k in KEYS[:6]]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_real_and_synthetic_batches_get_the_same_transform(x):
    """dsa(k, real) and dsa(k, syn) equal the corresponding parts of dsa(k, concat(real, syn))."""
    real, syn = x, x[:2][:, ::-1] * 0.5 + 0.1
    both = jnp.concatenate([real, syn])
    seen = set()
    for k in KEYS[:16]:
        seen.add(DSA_OPS[int(choose_op(k))])
        r, s, rs = dsa(k, real), dsa(k, syn), dsa(k, both)
        # float32 images of magnitude ~4 (one rounding ~5e-7; another batch shape may reduce the
        # per-image means in another order); a different draw would differ by O(1)
        np.testing.assert_allclose(r, rs[:N], rtol=0, atol=1e-5)
        np.testing.assert_allclose(s, rs[N:], rtol=0, atol=1e-5)
    assert seen == set(DSA_OPS)  # the 16 keys exercise every op


@pytest.mark.parametrize("op", DSA_OPS)
def test_per_sample_mode_varies_across_the_batch(op):
    same = jnp.broadcast_to(jnp.asarray(np.random.default_rng(1).normal(size=(1, H, W, C)), jnp.float32),
                            (N, H, W, C))
    sia = np.asarray(dsa(KEYS[2], same, op))
    assert all(np.array_equal(sia[0], s) for s in sia[1:])  # one draw for the batch
    outs = [np.asarray(dsa(k, same, op, siamese=False)) for k in KEYS[:4]]
    distinct = {o[i].tobytes() for o in outs for i in range(N)}
    assert len(distinct) >= {"flip": 2, "crop": 5}.get(op, 10)  # 8x8 crops shift by at most 1: 9 outcomes


# -- each op against an independent reference ---------------------------------------------------

def test_flip_is_exact(x):
    kinds = set()
    for k in KEYS[:12]:
        out = np.asarray(dsa(k, x, "flip"))
        flipped = np.array_equal(out, np.asarray(x)[:, :, ::-1])
        assert flipped or np.array_equal(out, x)
        kinds.add(flipped)
        per = np.asarray(dsa(k, x, "flip", siamese=False))
        for i in range(N):
            assert np.array_equal(per[i], np.asarray(x)[i, :, ::-1]) or np.array_equal(per[i], x[i])
    assert kinds == {True, False}


def _shift_zero_fill(img, dy, dx):
    out = np.zeros_like(img)
    for i in range(img.shape[0]):
        for j in range(img.shape[1]):
            if 0 <= i + dy < img.shape[0] and 0 <= j + dx < img.shape[1]:
                out[i, j] = img[i + dy, j + dx]
    return out


def test_crop_is_a_zero_filled_integer_shift_within_the_bound(x):
    params = DSAParams(ratio_crop_pad=0.25)
    bound = int(H * 0.25 + 0.5)
    shifts = set()
    xn = np.asarray(x)
    for k in KEYS[:12]:
        out = np.asarray(dsa(k, x, "crop", params, siamese=False))
        for i in range(N):
            found = [(dy, dx) for dy in range(-bound, bound + 1) for dx in range(-bound, bound + 1)
                     if np.array_equal(out[i], _shift_zero_fill(xn[i], dy, dx))]
            assert found, "crop output is not a zero-filled shift within the bound"
            shifts.add(found[0])
    assert max(max(abs(a), abs(b)) for a, b in shifts) == bound
    assert len(shifts) > 10


def test_cutout_zeroes_one_clipped_square(x):
    size = int(H * 0.5 + 0.5)
    ones = jnp.ones((N, H, W, C)) + jnp.abs(x)  # strictly positive: zeros mark the hole
    full_squares = 0
    for k in KEYS[:12]:
        out = np.asarray(dsa(k, ones, "cutout", siamese=False))
        for i in range(N):
            hole = out[i, :, :, 0] == 0
            assert np.array_equal(out[i] == 0, np.repeat(hole[..., None], C, -1))
            rows, cols = np.nonzero(hole.any(1))[0], np.nonzero(hole.any(0))[0]
            assert hole.sum() == len(rows) * len(cols) > 0  # a rectangle
            assert np.array_equal(rows, np.arange(rows[0], rows[-1] + 1))
            assert len(rows) <= size and len(cols) <= size
            if 0 < rows[0] and rows[-1] < H - 1:
                assert len(rows) == size
            if 0 < cols[0] and cols[-1] < W - 1:
                assert len(cols) == size
            full_squares += len(rows) == len(cols) == size
            np.testing.assert_array_equal(out[i][~hole], np.asarray(ones)[i][~hole])
    assert full_squares > 0


def test_color_functions_match_hand_formulas(x):
    xn = np.asarray(x, np.float64)
    b, s, c = np.array([0.1, -0.3, 0.2, 0.0]), np.array([0.5, 1.5, 0.0, 2.0]), np.array([0.7, 1.2, 0.5, 1.5])
    got = dsa_mod.contrast(dsa_mod.saturation(dsa_mod.brightness(x, b), s), c)
    want = xn + b[:, None, None, None]
    pix = want.mean(-1, keepdims=True)
    want = (want - pix) * s[:, None, None, None] + pix
    img = want.mean((1, 2, 3), keepdims=True)
    want = (want - img) * c[:, None, None, None] + img
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_color_on_grey_images_draws_brightness_and_contrast_in_range():
    """On one channel saturation is the identity, so out = c (x - mean x) + mean x + b."""
    g = jnp.asarray(np.random.default_rng(2).normal(size=(N, H, W, 1)), jnp.float32)
    bs, cs = [], []
    for k in KEYS[:10]:
        out = np.asarray(dsa(k, g, "color", siamese=False), np.float64)
        gn = np.asarray(g, np.float64)
        dev = gn - gn.mean((1, 2, 3), keepdims=True)
        c = (out - out.mean((1, 2, 3), keepdims=True)).std((1, 2, 3)) / dev.std((1, 2, 3))
        b = out.mean((1, 2, 3)) - gn.mean((1, 2, 3))
        np.testing.assert_allclose(out, c[:, None, None, None] * dev + gn.mean((1, 2, 3), keepdims=True)
                                   + b[:, None, None, None], atol=1e-5)
        bs += list(b)
        cs += list(c)
    assert -0.5 <= min(bs) < -0.3 and 0.3 < max(bs) <= 0.5
    assert 0.5 <= min(cs) < 0.7 and 1.3 < max(cs) <= 1.5


def _grid_sample_reference(img, theta, align_corners):
    """Slow loop: PyTorch affine_grid + bilinear grid_sample with zero padding, one image (HWC)."""
    h, w, c = img.shape
    out = np.zeros_like(img, dtype=np.float64)

    def norm(i, size):
        if align_corners:
            return -1.0 + 2.0 * i / (size - 1)
        return (2.0 * i + 1.0) / size - 1.0

    def unnorm(g, size):
        return (g + 1) / 2 * (size - 1) if align_corners else ((g + 1) * size - 1) / 2

    for i in range(h):
        for j in range(w):
            u, v = norm(j, w), norm(i, h)
            gx = theta[0, 0] * u + theta[0, 1] * v + theta[0, 2]
            gy = theta[1, 0] * u + theta[1, 1] * v + theta[1, 2]
            px, py = unnorm(gx, w), unnorm(gy, h)
            x0, y0 = math.floor(px), math.floor(py)
            for yy in (y0, y0 + 1):
                for xx in (x0, x0 + 1):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[i, j] += (1 - abs(px - xx)) * (1 - abs(py - yy)) * img[yy, xx]
    return out


@pytest.mark.parametrize("align_corners", [True, False])
def test_affine_grid_sample_matches_slow_reference(align_corners):
    r = np.random.default_rng(3)
    img = r.normal(size=(3, 5, 6, 2)).astype(np.float32)
    a = 0.4
    thetas = np.stack([
        [[math.cos(a), -math.sin(a), 0.1], [math.sin(a), math.cos(a), -0.2]],  # rotate + shift
        [[1.3, 0.0, 0.0], [0.0, 0.8, 0.0]],  # anisotropic scale, partly outside
        r.normal(size=(2, 3)),  # generic, mostly outside
    ]).astype(np.float32)
    got = np.asarray(affine_grid_sample(jnp.asarray(img), jnp.asarray(thetas), align_corners=align_corners))
    for n in range(3):
        np.testing.assert_allclose(got[n], _grid_sample_reference(img[n], thetas[n], align_corners), atol=2e-5)


def test_affine_identity_and_quarter_turn_are_exact(x):
    # In float64: the normalised coordinates round-trip to pixel positions only up to a few ulp of
    # the image size, which in float32 mixes in a neighbour with weight ~1e-6 (errors up to ~1e-5
    # at pixel values ~4, measured 2.7e-6); in float64 that is ~1e-14.
    with jax.enable_x64(True):
        x64 = jnp.asarray(np.asarray(x), jnp.float64)
        ident = jnp.array([[1.0, 0, 0], [0, 1.0, 0]], jnp.float64)
        assert affine_grid_sample(x64, ident).dtype == jnp.float64
        np.testing.assert_allclose(affine_grid_sample(x64, ident), x64, atol=1e-12)
        np.testing.assert_allclose(affine_grid_sample(x64, ident, align_corners=False), x64, atol=1e-12)
        quarter = jnp.array([[0.0, -1.0, 0], [1.0, 0.0, 0]], jnp.float64)  # input (u, v) = (-v_out, u_out)
        np.testing.assert_allclose(affine_grid_sample(x64, quarter), np.rot90(np.asarray(x64), k=1, axes=(1, 2)),
                                   atol=1e-12)
    ident = jnp.array([[1.0, 0, 0], [0, 1.0, 0]])
    half = x.astype(jnp.bfloat16)  # coordinates stay float32: the identity is exact in bfloat16 too
    out = affine_grid_sample(half, ident)
    assert out.dtype == jnp.bfloat16 and np.array_equal(np.asarray(out, np.float32), np.asarray(half, np.float32))


def test_scale_and_rotate_with_identity_parameters_reproduce_the_input(x):
    with jax.enable_x64(True):  # float64: see test_affine_identity_and_quarter_turn_are_exact
        x64 = jnp.asarray(np.asarray(x), jnp.float64)
        for k in KEYS[:3]:
            np.testing.assert_allclose(dsa(k, x64, "scale", DSAParams(ratio_scale=1.0)), x64, atol=1e-12)
            np.testing.assert_allclose(dsa(k, x64, "rotate", DSAParams(ratio_rotate=0.0)), x64, atol=1e-12)


def test_every_op_occurs_and_matches_its_single_op_strategy(x):
    """dsa(k, x) under the full strategy equals dsa(k, x, op) for the op it picked, and only that op
    (identity-like draws of flip/crop aside); over 40 keys every op is picked."""
    singles = {op: [np.asarray(dsa(k, x, op)) for k in KEYS] for op in DSA_OPS}
    counts = dict.fromkeys(DSA_OPS, 0)
    for i, k in enumerate(KEYS):
        out = np.asarray(dsa(k, x))
        matches = [op for op in DSA_OPS if np.allclose(out, singles[op][i], rtol=0, atol=1e-6)]
        assert DSA_OPS[int(choose_op(k))] in matches
        if len(matches) == 1:
            counts[matches[0]] += 1
    assert all(c >= 2 for c in counts.values()), counts
    picks = np.bincount([int(choose_op(jax.random.key(i))) for i in range(600)], minlength=6)
    assert picks.min() > 70 and picks.max() < 130, picks  # uniform: 100 expected each


# -- differentiability, jit, sharding -----------------------------------------------------------

@pytest.mark.parametrize("op", ["scale", "rotate", "color", "crop", "cutout"])
def test_gradients_match_finite_differences(op):
    with jax.enable_x64(True):
        r = np.random.default_rng(4)
        img = jnp.asarray(r.normal(size=(2, 4, 4, 3)), jnp.float64)
        wts = jnp.asarray(r.normal(size=img.shape), jnp.float64)
        key = KEYS[5]

        @jax.jit
        def loss(z):
            return jnp.sum(jnp.tanh(dsa(key, z, op, siamese=False)) * wts)

        grad = np.asarray(jax.grad(loss)(img)).ravel()
        eps, flat = 1e-6, np.asarray(img).ravel()
        fd = np.empty_like(flat)
        for i in range(flat.size):
            e = np.zeros_like(flat)
            e[i] = eps
            fd[i] = (loss((flat + e).reshape(img.shape)) - loss((flat - e).reshape(img.shape))) / (2 * eps)
        assert grad.dtype == np.float64 and np.abs(grad).max() > 1e-3
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_works_inside_jit_and_vmap(x):
    @jax.jit
    def two_views(k, a, b):
        return dsa(k, a), dsa(k, b)

    for k in KEYS[:2]:
        ra, rb = two_views(k, x, x)
        np.testing.assert_allclose(ra, dsa(k, x), atol=1e-5)  # float32 noise at magnitude ~4 is ~5e-7
        np.testing.assert_array_equal(ra, rb)
    batched = jax.vmap(lambda k: dsa(k, x))(jnp.stack(KEYS[:3]))  # e.g. one key per vmapped model
    for i in range(3):
        np.testing.assert_allclose(batched[i], dsa(KEYS[i], x), atol=1e-5)


def test_sharded_batch_matches_single_device(x):
    sharded = shard_batch(x, data_mesh(N))
    for siamese in (True, False):
        for k in KEYS[:4]:
            out = dsa(k, sharded, siamese=siamese)
            np.testing.assert_allclose(out, dsa(k, x, siamese=siamese), atol=1e-5)  # float32 noise ~5e-7
            assert len(out.sharding.device_set) == N  # computed where the batch lives, not gathered to one


# -- scale and rotate: sampled ranges and hand-computed warps ----------------------------------

def _ramps(n, size=9):
    """n copies of a (size, size, 2) image whose channels are the normalised coordinates u (along
    the width) and v (along the height) of each pixel (align_corners: -1 .. 1 over pixel centres)."""
    g = np.linspace(-1.0, 1.0, size)
    img = np.stack([np.broadcast_to(g[None, :], (size, size)), np.broadcast_to(g[:, None], (size, size))], -1)
    return jnp.asarray(np.broadcast_to(img, (n, size, size, 2)), jnp.float32)


def _read_affine(out):
    """(a, b, c, d) of the linear map the warp applied, read off two pixels near the centre of warped
    ramps: bilinear sampling reproduces a linear image exactly, so the pixel at (u, v) = (0.5, 0)
    holds 0.5 (a, c) and the one at (0, 0.5) holds 0.5 (b, d) for the map (u, v) -> (a u + b v, c u + d v)."""
    out = np.asarray(out, np.float64)
    a, c = 2 * out[:, 4, 6, 0], 2 * out[:, 4, 6, 1]
    b, d = 2 * out[:, 6, 4, 0], 2 * out[:, 6, 4, 1]
    return a, b, c, d


@pytest.mark.parametrize("siamese", [False, True])
def test_scale_and_rotate_parameters_span_the_reference_ranges(siamese):
    """Reference ParamDiffAug: scale factors sx, sy ~ U(1/1.2, 1.2) (independent), rotation angle
    ~ U(-15°, 15°). The parameters are read back from warped coordinate ramps."""
    if siamese:  # one draw per key for the whole batch: 300 keys, 2 images each
        ramps = _ramps(2)
        outs = {op: np.concatenate([np.asarray(dsa(jax.random.key(i), ramps, op, siamese=True)) for i in range(300)])
                for op in ("scale", "rotate")}
    else:  # per-image parameters: one call on 600 images
        ramps = _ramps(600)
        outs = {op: np.asarray(dsa(KEYS[7], ramps, op, siamese=False)) for op in ("scale", "rotate")}
    a, b, c, d = _read_affine(outs["scale"])
    np.testing.assert_allclose(np.stack([b, c]), 0.0, atol=1e-5)  # a pure scaling
    for s in (a, d):
        assert np.all((s >= 1 / 1.2 - 1e-5) & (s <= 1.2 + 1e-5))
        assert s.min() < 1 / 1.2 + 0.02 and s.max() > 1.2 - 0.02  # the whole range is reached
        assert abs(np.mean(s) - (1.2 + 1 / 1.2) / 2) < 0.03  # uniform
    assert np.mean(np.abs(a - d) > 1e-3) > 0.9  # sx and sy are drawn independently
    if siamese:
        np.testing.assert_allclose(a[0::2], a[1::2], atol=1e-6)  # the same draw for both images of a call
    a, b, c, d = _read_affine(outs["rotate"])
    np.testing.assert_allclose(a, d, atol=1e-5)
    np.testing.assert_allclose(b, -c, atol=1e-5)
    np.testing.assert_allclose(a ** 2 + c ** 2, 1.0, atol=1e-4)  # a rotation
    deg = np.degrees(np.arctan2(c, a))
    assert np.all(np.abs(deg) <= 15 + 1e-3)
    assert deg.min() < -14 and deg.max() > 14
    assert abs(np.mean(deg)) < 1.5 and abs(np.std(deg) - 30 / np.sqrt(12)) < 1.0  # U(-15, 15): std 8.66


def test_scale_and_rotate_ops_with_known_parameters_match_hand_computed_warps():
    """The ops at the ends of their ranges (uniform u = 1 or 0), with magnitudes chosen so the
    warp lands on whole or half pixels: scale x2 and x1/2, rotations by +-90° and +-15°. In float64
    (see test_affine_identity_and_quarter_turn_are_exact for the float32 coordinate rounding)."""
    r = np.random.default_rng(8)
    img = r.normal(size=(1, 9, 9, 2))
    pixel = np.pad(img[0], ((0, 1), (0, 1), (0, 0)))  # zero beyond the last row / column
    # scale 2 (u = 1, ratio 2): output pixel i reads input pixel 2i - 4 (align_corners, 9 pixels)
    up = np.zeros_like(img[0])
    for i in range(9):
        for j in range(9):
            if 0 <= 2 * i - 4 <= 8 and 0 <= 2 * j - 4 <= 8:
                up[i, j] = img[0, 2 * i - 4, 2 * j - 4]
    # scale 1/2 (u = 0, ratio 2): output pixel i reads input i / 2 + 2, the mean of two pixels for odd i
    down = np.zeros_like(img[0])
    for i in range(9):
        for j in range(9):
            ys, xs = [(i // 2 + 2,), (i // 2 + 2, i // 2 + 3)][i % 2], [(j // 2 + 2,), (j // 2 + 2, j // 2 + 3)][j % 2]
            down[i, j] = np.mean([pixel[yy, xx] for yy in ys for xx in xs], axis=0)
    # rotate +90° (u = 1, ratio 90): input (u, v) = (-v_out, u_out), i.e. out[i, j] = x[j, 8 - i]
    plus = np.stack([[img[0, j, 8 - i] for j in range(9)] for i in range(9)])
    minus = np.stack([[img[0, 8 - j, i] for j in range(9)] for i in range(9)])
    a = math.radians(15.0)
    theta = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    with jax.enable_x64(True):
        x = jnp.asarray(img, jnp.float64)
        hi, lo = jnp.ones(3, jnp.float64), jnp.zeros(3, jnp.float64)
        np.testing.assert_allclose(dsa_mod._op_scale(hi, x, DSAParams(ratio_scale=2.0))[0], up, atol=1e-12)
        np.testing.assert_allclose(dsa_mod._op_scale(lo, x, DSAParams(ratio_scale=2.0))[0], down, atol=1e-12)
        np.testing.assert_allclose(dsa_mod._op_rotate(hi, x, DSAParams(ratio_rotate=90.0))[0], plus, atol=1e-12)
        np.testing.assert_allclose(dsa_mod._op_rotate(lo, x, DSAParams(ratio_rotate=90.0))[0], minus, atol=1e-12)
        # the default 15° at u = 1 against the slow bilinear loop with the matrix written out
        np.testing.assert_allclose(dsa_mod._op_rotate(hi, x, DSAParams())[0],
                                   _grid_sample_reference(img[0], theta, True), atol=1e-12)
