"""Diffusion prior building blocks: schedule, DDIM, guidance, the prior interface and its files."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.generative import (DiffusionPrior, Guidance, SmallPrior, check_compatible, ddim_sample, ddim_step,
                              ddim_timesteps, guided_eps, load_prior, make_schedule, q_sample, save_prior,
                              to_dataset_space)
from jaxdd.generative.ddim import ld3m_blend
from jaxdd.generative.prior import from_dataset_space, null_embedding

TINY = dict(embedding_dim=4, unet_width=8, unet_mults=(1,), unet_depth=1, attention=False, num_timesteps=20)


def random_params(prior, seed=0, scale=0.3):
    """Random weights of ``prior``'s shapes drawn on the host (compiling Flax's init of a UNet takes
    longer than the tests that only need *some* weights)."""
    r = np.random.default_rng(seed)
    shapes = jax.eval_shape(prior._init, jax.random.key(0))
    return jax.tree.map(lambda s: jnp.asarray(scale * r.standard_normal(s.shape), s.dtype), shapes)


@dataclasses.dataclass(frozen=True)
class LinearPrior:
    """A non-UNet DiffusionPrior with a closed-form denoiser, eps = a * z_t + (c @ W) + b * t / T,
    and a linear "autoencoder" (z = 2 x, x = z / 2). Shows that any model with the interface plugs in."""

    a: float = 0.3
    b: float = 0.1
    num_classes: int = 3
    image_shape: tuple = (4, 4, 1)
    latent_shape: tuple = (4, 4, 1)
    embedding_dim: int = 2
    pixel_mean: tuple = (0.0,)
    pixel_std: tuple = (1.0,)

    @property
    def schedule(self):
        return make_schedule("linear", 100)

    def init(self, key):
        k1, k2 = jax.random.split(key)
        return {"table": jax.random.normal(k1, (self.num_classes + 1, self.embedding_dim)),
                "w": jax.random.normal(k2, (self.embedding_dim, 16))}

    def eps(self, params, z_t, t, c):
        bias = (c @ params["w"]).reshape(z_t.shape)
        return self.a * z_t + bias + self.b * (t / 100.0)[:, None, None, None]

    def encode(self, params, x):
        return 2.0 * x

    def decode(self, params, z):
        return 0.5 * z

    def embedding_table(self, params):
        return params["table"]


def numpy_eps(prior, params, z, t, c):
    w = np.asarray(params["w"], np.float64)
    return prior.a * z + (c @ w).reshape(z.shape) + prior.b * t / 100.0


# ------------------------------------------------------------------------------------ schedule
def test_linear_schedule_hand_values():
    ab = np.asarray(make_schedule("linear", 1000).alpha_bar, np.float64)
    assert ab.shape == (1000,)
    assert ab[0] == pytest.approx(1 - 1e-4, rel=1e-7)
    beta1 = 1e-4 + (0.02 - 1e-4) / 999
    assert ab[1] == pytest.approx((1 - 1e-4) * (1 - beta1), rel=1e-6)
    prod = 1.0
    for t in range(1000):  # slow product, independent of the vectorised code
        prod *= 1.0 - (1e-4 + (0.02 - 1e-4) * t / 999)
    assert ab[-1] == pytest.approx(prod, rel=1e-4)
    assert ab[-1] == pytest.approx(4.0358e-5, rel=1e-3)  # the familiar DDPM value of alpha_bar_T
    assert np.all(np.diff(ab) < 0)


def test_cosine_schedule_hand_values():
    ab = np.asarray(make_schedule("cosine", 1000).alpha_bar, np.float64)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 10, 499, 900):
        assert ab[t] == pytest.approx(f(t + 1) / f(0), rel=1e-5)


def test_schedule_errors():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        make_schedule("quadratic")
    with pytest.raises(ValueError, match="num_timesteps"):
        make_schedule("linear", 0)


def test_ddim_timesteps():
    np.testing.assert_array_equal(ddim_timesteps(1000, 10), [999, 899, 799, 699, 599, 499, 399, 299, 199, 99])
    np.testing.assert_array_equal(ddim_timesteps(1000, 1), [999])
    np.testing.assert_array_equal(ddim_timesteps(20, 4), [19, 14, 9, 4])
    np.testing.assert_array_equal(ddim_timesteps(7, 7), np.arange(6, -1, -1))
    with pytest.raises(ValueError, match="DDIM steps"):
        ddim_timesteps(20, 21)


def test_ddim_step_and_q_sample_hand_values():
    # x_t = 1, eps = 0.5, alpha_bar_t = 0.25, alpha_bar_prev = 0.64:
    # x0 = (1 - sqrt(0.75) * 0.5) / 0.5 = 2 - sqrt(0.75); x_prev = 0.8 x0 + 0.6 * 0.5
    x_prev, x0 = ddim_step(jnp.ones((1, 1)), jnp.full((1, 1), 0.5), jnp.float32(0.25), jnp.float32(0.64))
    # float32, a handful of roundings at magnitude ~1.1 (1 ulp = 1.2e-7): 4e-6 leaves room for ~30
    assert float(x0[0, 0]) == pytest.approx(2 - math.sqrt(0.75), abs=4e-6)
    assert float(x_prev[0, 0]) == pytest.approx(0.8 * (2 - math.sqrt(0.75)) + 0.3, abs=4e-6)
    sched = make_schedule("linear", 1000)
    xt = q_sample(sched, jnp.full((2, 3), 2.0), jnp.array([0, 999]), jnp.ones((2, 3)))
    ab = np.asarray(sched.alpha_bar)[[0, 999]]
    np.testing.assert_allclose(np.asarray(xt)[:, 0], 2 * np.sqrt(ab) + np.sqrt(1 - ab), rtol=1e-6)


# ----------------------------------------------------------------------------------------- DDIM
def reference_ddim(prior, params, z_T, c, num_steps, w=1.0, skip=None, shift=None):
    """Slow float64 DDIM loop written from the formulas; ``shift[i]`` is added to z_t at step i."""
    ab_all = np.asarray(prior.schedule.alpha_bar, np.float64)
    T = len(ab_all)
    ts = [int(round(i * T / num_steps)) - 1 for i in range(num_steps, 0, -1)]
    z = np.asarray(z_T, np.float64)
    c = np.asarray(c, np.float64)
    null = np.broadcast_to(np.asarray(prior.embedding_table(params), np.float64)[-1], c.shape)
    for i, t in enumerate(ts):
        if shift is not None and shift[i] is not None:
            z = z + shift[i]
        eps_c = numpy_eps(prior, params, z, t, c)
        eps = eps_c if w == 1.0 else numpy_eps(prior, params, z, t, null) + w * (
            eps_c - numpy_eps(prior, params, z, t, null))
        ab = ab_all[t]
        ab_prev = ab_all[ts[i + 1]] if i + 1 < num_steps else 1.0
        x0 = (z - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
        if skip is not None:
            k = num_steps - 1 - i
            x0 = (1 - k / (num_steps - 1)) * x0 + k / (num_steps - 1) * np.asarray(skip, np.float64)
        z = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * eps
    return z


@pytest.fixture(scope="module")
def linear():
    prior = LinearPrior()
    params = prior.init(jax.random.key(0))
    z_T = jax.random.normal(jax.random.key(1), (3, 4, 4, 1))
    c = prior.embedding_table(params)[jnp.array([0, 1, 2])]
    return prior, params, z_T, c


def test_linear_prior_implements_the_protocol(linear):
    assert isinstance(linear[0], DiffusionPrior)
    assert isinstance(SmallPrior(num_classes=3, image_shape=(8, 8, 1), **TINY), DiffusionPrior)


def test_one_ddim_step_equals_closed_form(linear):
    prior, params, z_T, c = linear
    out = ddim_sample(prior, params, z_T, c, num_steps=1)
    ab = float(prior.schedule.alpha_bar[99])
    eps = numpy_eps(prior, params, np.asarray(z_T, np.float64), 99, np.asarray(c, np.float64))
    np.testing.assert_allclose(out, (np.asarray(z_T) - math.sqrt(1 - ab) * eps) / math.sqrt(ab), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("num_steps, w", [(4, 1.0), (5, 2.5)])
def test_ddim_sample_matches_reference_loop(linear, num_steps, w):
    prior, params, z_T, c = linear
    out = jax.jit(lambda p, z, c: ddim_sample(prior, p, z, c, num_steps=num_steps, guidance_scale=w))(params, z_T, c)
    np.testing.assert_allclose(out, reference_ddim(prior, params, z_T, c, num_steps, w), rtol=1e-4, atol=1e-4)


def test_classifier_free_guidance(linear):
    prior, params, z_T, c = linear
    t = jnp.int32(50)
    e_c = prior.eps(params, z_T, jnp.full((3,), 50), c)
    e_u = prior.eps(params, z_T, jnp.full((3,), 50), null_embedding(prior, params, 3))
    np.testing.assert_allclose(guided_eps(prior, params, z_T, t, c, 3.0), e_u + 3.0 * (e_c - e_u), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(guided_eps(prior, params, z_T, t, c, 1.0), e_c, rtol=1e-6)


def test_ld3m_blend_is_exactly_z_at_k_equal_K():
    x0, z = jax.random.normal(jax.random.key(0), (2, 3, 5, 5, 2))
    np.testing.assert_array_equal(ld3m_blend(x0, z, 4, 4), z)
    np.testing.assert_array_equal(ld3m_blend(x0, z, 0, 4), x0)
    # atol: the sum of two float32 terms may cancel to ~0, where rtol alone would ask for exactness
    np.testing.assert_allclose(ld3m_blend(x0, z, 1, 4), 0.75 * x0 + 0.25 * z, rtol=1e-6, atol=1e-6)


def test_ddim_with_skip_matches_reference_and_starts_from_z(linear):
    prior, params, z_T, c = linear
    z = jax.random.normal(jax.random.key(5), z_T.shape)
    out = ddim_sample(prior, params, z_T, c, num_steps=4, skip=z)
    np.testing.assert_allclose(out, reference_ddim(prior, params, z_T, c, 4, skip=z), rtol=1e-4, atol=1e-4)
    # two steps: the first predicted x0 is z itself, so the intermediate latent is
    # sqrt(ab_49) z + sqrt(1 - ab_49) eps(z_T, 99, c); the second step is plain DDIM from it
    ab = np.asarray(prior.schedule.alpha_bar, np.float64)
    eps0 = numpy_eps(prior, params, np.asarray(z_T, np.float64), 99, np.asarray(c, np.float64))
    z1 = np.sqrt(ab[49]) * np.asarray(z, np.float64) + np.sqrt(1 - ab[49]) * eps0
    eps1 = numpy_eps(prior, params, z1, 49, np.asarray(c, np.float64))
    expected = (z1 - np.sqrt(1 - ab[49]) * eps1) / np.sqrt(ab[49])
    np.testing.assert_allclose(ddim_sample(prior, params, z_T, c, num_steps=2, skip=z), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        ddim_sample(prior, params, z_T, c, num_steps=1, skip=z)


@pytest.mark.parametrize("mode", ["x", "eps"])
def test_guidance_hook_at_chosen_steps(linear, mode):
    prior, params, z_T, c = linear
    g = 0.1 * jnp.arange(48.0).reshape(z_T.shape) / 48.0
    seen = []

    def fn(ctx):
        seen.append(ctx.z_t.shape)
        return g

    out = ddim_sample(prior, params, z_T, c, num_steps=4, hooks=[Guidance(fn, steps=(1, 2), mode=mode)])
    assert seen  # traced
    ab = np.asarray(prior.schedule.alpha_bar, np.float64)
    if mode == "x":
        shift = [None, np.asarray(g), np.asarray(g), None]
        expected = reference_ddim(prior, params, z_T, c, 4, shift=shift)
    else:  # eps <- eps - sqrt(1 - ab_t) g at steps 1 and 2 (timesteps 74 and 49): reference by hand
        ts = [99, 74, 49, 24]
        z = np.asarray(z_T, np.float64)
        for i, t in enumerate(ts):
            eps = numpy_eps(prior, params, z, t, np.asarray(c, np.float64))
            if i in (1, 2):
                eps = eps - np.sqrt(1 - ab[t]) * np.asarray(g)
            x0 = (z - np.sqrt(1 - ab[t]) * eps) / np.sqrt(ab[t])
            ab_prev = ab[ts[i + 1]] if i < 3 else 1.0
            z = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * eps
        expected = z
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_guidance_errors(linear):
    prior, params, z_T, c = linear
    with pytest.raises(ValueError, match="outside"):
        ddim_sample(prior, params, z_T, c, num_steps=3, hooks=[Guidance(lambda ctx: ctx.z_t, steps=(3,))])
    with pytest.raises(ValueError, match="guidance mode"):
        Guidance(lambda ctx: ctx.z_t, mode="score")


def test_guidance_hook_can_differentiate_through_the_model(linear):
    prior, params, z_T, c = linear
    target = jnp.ones_like(z_T)

    def pull_to_target(ctx):  # classifier-guidance-style gradient of -||decode(x0_hat(z_t)) - target||^2
        return -jax.grad(lambda z: jnp.sum((ctx.decode(ctx.denoise(z)[1]) - target) ** 2))(ctx.z_t)

    plain = ddim_sample(prior, params, z_T, c, num_steps=5)
    guided = ddim_sample(prior, params, z_T, c, num_steps=5, hooks=[Guidance(pull_to_target, steps=(2, 3, 4))])
    dist = lambda z: float(jnp.sum((prior.decode(params, z) - target) ** 2))  # noqa: E731
    assert dist(guided) < dist(plain)


# ------------------------------------------------------------------------------------ the prior
@pytest.mark.parametrize("latent, image_shape, latent_shape", [
    ("none", (8, 8, 1), (8, 8, 1)), ("vae", (10, 10, 3), (3, 3, 2))])
def test_small_prior_shapes(latent, image_shape, latent_shape):
    prior = SmallPrior(num_classes=3, image_shape=image_shape, pixel_mean=(0.5,) * image_shape[2],
                       pixel_std=(0.25,) * image_shape[2], latent=latent, latent_channels=2, ae_width=4,
                       ae_downsamples=2, **TINY)
    params = random_params(prior)  # (SmallPrior.init itself runs in the training tests)
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(prior.init, jax.random.key(0)))
    assert prior.latent_shape == latent_shape
    x = jax.random.normal(jax.random.key(1), (2, *image_shape))

    @jax.jit
    def run(params, x):
        z = prior.encode(params, x)
        c = prior.embedding_table(params)[jnp.array([0, 2])]
        return z, prior.decode(params, z), prior.eps(params, z, jnp.array([0, 19]), c)

    z, x_rec, eps = run(params, x)
    assert z.shape == eps.shape == (2, *latent_shape)
    assert x_rec.shape == (2, *image_shape)
    assert prior.embedding_table(params).shape == (4, 4)
    assert hash(prior) == hash(dataclasses.replace(prior))


def test_small_prior_config_errors():
    with pytest.raises(ValueError, match="latent space"):
        SmallPrior(num_classes=3, image_shape=(8, 8, 1), latent="vq")
    with pytest.raises(ValueError, match="one value per channel"):
        SmallPrior(num_classes=3, image_shape=(8, 8, 3), pixel_mean=(0.5,), pixel_std=(0.2,))


def test_check_compatible(tiny_dataset):
    ok = SmallPrior(num_classes=3, image_shape=(16, 16, 3), pixel_mean=(0.5,) * 3, pixel_std=(0.3,) * 3)
    check_compatible(ok, tiny_dataset)
    with pytest.raises(ValueError, match=r"10 classes vs 3.*jaxdd prior train --dataset tiny"):
        check_compatible(dataclasses.replace(ok, num_classes=10), tiny_dataset)
    with pytest.raises(ValueError, match=r"images \(28, 28, 1\) vs \(16, 16, 3\)"):
        check_compatible(SmallPrior(num_classes=3, image_shape=(28, 28, 1)), tiny_dataset)


def test_dataset_space_round_trip():
    prior = SmallPrior(num_classes=3, image_shape=(4, 4, 2), pixel_mean=(0.5, 0.4), pixel_std=(0.5, 0.2))
    x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
    mean, std = np.array([0.3, 0.1]), np.array([0.2, 0.3])
    y = to_dataset_space(prior, x, mean, std)
    # same pixels: x * pixel_std + pixel_mean == y * std + mean
    np.testing.assert_allclose(y * std + mean, x * np.array([0.5, 0.2]) + np.array([0.5, 0.4]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_dataset_space(prior, y, mean, std), x, rtol=1e-5, atol=1e-5)
    assert to_dataset_space(prior, x, prior.pixel_mean, prior.pixel_std) is x


def test_save_load_prior(tmp_path):
    prior = SmallPrior(num_classes=3, image_shape=(8, 8, 1), latent="vae", latent_channels=2, ae_width=4, **TINY)
    prior = dataclasses.replace(prior, latent_scale=0.7)
    params = random_params(prior)
    save_prior(tmp_path / "p", prior, params, {"note": "x"})
    loaded, lparams, meta = load_prior(tmp_path / "p")
    assert loaded == prior and meta == {"note": "x"}
    jax.tree.map(np.testing.assert_array_equal, lparams, params)
    with pytest.raises(FileNotFoundError, match="jaxdd prior train"):
        load_prior(tmp_path / "nothing")
    import json

    cfg = json.loads((tmp_path / "p" / "prior.json").read_text())
    cfg["config"]["unet_width"] = 16  # weights of another configuration
    (tmp_path / "p" / "prior.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="has shape"):
        load_prior(tmp_path / "p")
