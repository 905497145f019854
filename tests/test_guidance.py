"""The one sampler (``jaxdd.generative.sampling``), guidance terms, DAG targets and ACS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.generative import LD3MGenerator, SmallPrior, ddim_sample, noise_to_last_step
from jaxdd.generative.acs import ACS, ACSConfig, run_acs
from jaxdd.generative.guidance import (Term, adversarial_term, cosine_to_memory, deviation_term, difficulty_term,
                                       latent_memory, normalised)
from jaxdd.generative.sampling import default_window, generate, window_steps
from test_generative import TINY, LinearPrior, numpy_eps, random_params

PIXEL = SmallPrior(num_classes=3, image_shape=(8, 8, 1), latent="none", **TINY)


@pytest.fixture(scope="module")
def pixel():
    return PIXEL, random_params(PIXEL)


# ------------------------------------------------------------------ the sampler keeps old outputs
def test_generate_is_bit_identical_to_the_previous_prior_sample_path(pixel):
    """``jaxdd prior sample`` used jit(sample_images) (rewritten below as it was) per batch of 4 with
    fold_in(key, j), the last batch zero-padded; the new generate must give the same bits."""
    prior, params = pixel
    labels, key = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2], np.int32), jax.random.key(3)

    def sample_images(prior, params, key, labels, *, num_steps, guidance_scale):
        z_T = jax.random.normal(key, (labels.shape[0], *prior.latent_shape), jnp.float32)
        c = prior.embedding_table(params)[labels]
        return prior.decode(params, ddim_sample(prior, params, z_T, c, num_steps=num_steps,
                                                guidance_scale=guidance_scale))

    old = jax.jit(sample_images, static_argnames=("prior", "num_steps", "guidance_scale"))
    expected = []
    for j, i in enumerate(range(0, 10, 4)):
        lb = np.concatenate([labels[i:i + 4], np.zeros(4 - len(labels[i:i + 4]), np.int32)])
        expected.append(np.asarray(old(prior, params, jax.random.fold_in(key, j), jnp.asarray(lb), num_steps=3,
                                       guidance_scale=2.0))[:len(labels[i:i + 4])])
    got = generate(prior, params, labels, key, steps=3, cfg_scale=2.0, batch_size=4)
    np.testing.assert_array_equal(got, np.concatenate(expected))


def test_pad_to_batch_gives_the_unpadded_samples(pixel):
    """pad_to_batch fills a short batch up to batch_size (one compilation for every N): with JAX's
    partitionable threefry the first rows of the larger noise draw are the smaller draw's, and every
    op is per sample, so the samples equal the unpadded ones up to float32 noise of another batch
    shape (values ~1: 1e-5)."""
    prior, params = pixel
    labels, key = np.array([0, 1, 2], np.int32), jax.random.key(5)
    if not jax.config.jax_threefry_partitionable:
        pytest.skip("the equality needs jax_threefry_partitionable (JAX's default since 0.5)")
    got = generate(prior, params, labels, key, steps=3, cfg_scale=2.0, batch_size=8, pad_to_batch=True)
    want = generate(prior, params, labels, key, steps=3, cfg_scale=2.0, batch_size=8)
    assert got.shape == want.shape == (3, *prior.image_shape)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_ld3m_generator_is_bit_identical_to_plain_ddim_with_skip(pixel):
    prior, params = pixel
    k1, k2 = jax.random.split(jax.random.key(1))
    z = jax.random.normal(k1, (3, *prior.latent_shape))
    noise = jax.random.normal(k2, z.shape)
    c = prior.embedding_table(params)[jnp.arange(3)]
    gen = LD3MGenerator(prior, num_steps=3, guidance_scale=1.5, remat=False)
    def before(params, z, c, noise):  # LD3MGenerator.__call__ before the change
        return prior.decode(params, ddim_sample(prior, params, noise_to_last_step(prior, z, noise), c, num_steps=3,
                                                guidance_scale=1.5, skip=z))

    np.testing.assert_array_equal(jax.jit(gen)(params, z, c, noise), jax.jit(before)(params, z, c, noise))


# ------------------------------------------------------------------ normalisation and window
def test_normalisation_hand_case():
    g = jnp.array([[3.0, 4.0], [0.0, 0.0]])  # RMS 3.5355, and a zero gradient
    eps = jnp.array([[1.0, 1.0], [2.0, 2.0]])
    out = np.asarray(normalised(g, eps, jnp.float32(0.75), 0.1))
    rho = 0.1 * 1.0 * np.sqrt(0.25) / np.sqrt(12.5)
    np.testing.assert_allclose(out[0], rho * np.array([3.0, 4.0]), rtol=1e-6)
    np.testing.assert_array_equal(out[1], [0.0, 0.0])


def test_window_counts_down_like_igd():
    assert default_window(50) == (30, 45)
    assert window_steps(50, None) == tuple(range(4, 20))  # S-1-i in [30, 45]
    assert window_steps(4, (0, 1)) == (2, 3)
    with pytest.raises(ValueError, match="window"):
        window_steps(10, (5, 10))


def _const_grad(inp):  # hashable module-level term: gradient = the labels broadcast
    return jnp.ones_like(inp.x_t) * (1.0 + inp.labels.astype(jnp.float32))[:, None, None, None]


def test_guided_sampler_matches_a_float64_reference_loop():
    """Inside the window, z_{t'} -= s RMS(eps)/RMS(g) sqrt(1 - ab_t) g after the DDIM update."""
    prior = LinearPrior()
    params = prior.init(jax.random.key(0))
    labels = np.array([0, 1, 2])
    z_T = jax.random.normal(jax.random.key(1), (3, 4, 4, 1))
    c = prior.embedding_table(params)[labels]
    from jaxdd.generative.sampling import sample_latents

    term = Term("const", _const_grad, 0.3)
    got = sample_latents(prior, params, z_T, c, steps=4, guidance=(term,), window=(1, 2), labels=jnp.asarray(labels),
                         key=jax.random.key(0))
    ab = np.asarray(prior.schedule.alpha_bar, np.float64)
    ts = [99, 74, 49, 24]
    z = np.asarray(z_T, np.float64)
    for i, t in enumerate(ts):
        eps = numpy_eps(prior, params, z, t, np.asarray(c, np.float64))
        x0 = (z - np.sqrt(1 - ab[t]) * eps) / np.sqrt(ab[t])
        ab_prev = ab[ts[i + 1]] if i < 3 else 1.0
        z_next = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * eps
        if 1 <= 3 - i <= 2:  # steps i = 1, 2
            g = np.ones_like(z) * (1.0 + labels)[:, None, None, None]
            rms = lambda a: np.sqrt(np.mean(a ** 2, axis=(1, 2, 3)))[:, None, None, None]  # noqa: E731
            z_next = z_next - 0.3 * rms(eps) / rms(g) * np.sqrt(1 - ab[t]) * g
        z = z_next
    np.testing.assert_allclose(got, z, rtol=1e-4, atol=1e-5)  # float32 vs float64 over 4 steps


# ------------------------------------------------------------------ DAG
def linear_classifier(w, images):
    return images.reshape(images.shape[0], -1) @ w


def difficulty(w, images, labels):
    p = jax.nn.softmax(linear_classifier(w, images), -1)
    return np.asarray(1.0 - p[jnp.arange(len(labels)), labels])


def test_zero_scale_is_bit_identical_to_unguided(pixel):
    prior, params = pixel
    w = jax.random.normal(jax.random.key(5), (64, 3))
    labels = np.arange(6) % 3
    plain = generate(prior, params, labels, jax.random.key(2), steps=6)
    zero = generate(prior, params, labels, jax.random.key(2), steps=6,
                    guidance=(difficulty_term(linear_classifier, 0.0),), aux={"difficulty": w},
                    sample_aux={"difficulty": np.zeros(6, np.float32)})
    np.testing.assert_array_equal(plain, zero)


def test_dag_moves_difficulty_toward_the_target_both_ways(pixel):
    prior, params = pixel
    w = 0.3 * jax.random.normal(jax.random.key(5), (64, 3))
    labels = np.arange(12) % 3
    key = jax.random.key(2)

    def run(target, scale=0.3):
        images = generate(prior, params, labels, key, steps=8, window=(2, 6),
                          guidance=(difficulty_term(linear_classifier, scale),), aux={"difficulty": w},
                          sample_aux={"difficulty": np.full(12, target, np.float32)})
        return difficulty(w, images, labels).mean()

    plain = run(0.0, scale=0.0)
    easy, hard = run(0.0), run(1.0)
    assert easy < plain - 0.02 and hard > plain + 0.02, (easy, plain, hard)


def test_difficulty_targets_follow_the_target_counts():
    from jaxdd.sample.guided import difficulty_targets
    from jaxdd.sample.targets import preset_weights, target_counts
    from jaxdd.sample.transform import bin_index, log_transform

    r = np.random.default_rng(0)
    real_labels = np.repeat(np.arange(2), 50)
    real_scores = np.clip(r.beta(0.5, 5, 100), 0, 1).astype(np.float32)
    labels = np.repeat(np.arange(2), 7)
    draw = difficulty_targets(jax.random.key(0), labels, 2, "hill", real_scores, real_labels)
    for c in range(2):
        got = np.bincount(np.asarray(bin_index(draw.transformed[labels == c])), minlength=10)
        np.testing.assert_array_equal(got, target_counts(preset_weights("hill"), 7))
    # the raw targets map back to the transformed ones through the class's transform
    back = np.asarray(log_transform(draw.raw, draw.lo[labels], draw.hi[labels]))
    np.testing.assert_allclose(back, np.maximum(draw.transformed, 1e-4), atol=1e-4)
    real = difficulty_targets(jax.random.key(0), labels, 2, "real", real_scores, real_labels)
    assert real.weights.shape == (2, 10) and np.allclose(real.weights.sum(-1), 1)


# ------------------------------------------------------------------ deviation
def test_deviation_pushes_away_from_the_nearest_memory_latent(pixel):
    prior, params = pixel
    labels = np.arange(6) % 3
    key = jax.random.key(4)
    _, first = generate(prior, params, labels, jax.random.key(9), steps=6, return_latents=True)
    mem = latent_memory(first, labels, 3, size=4)
    np.testing.assert_array_equal(mem["valid"].sum(1), [2, 2, 2])

    def nearest_cos(latents):
        return np.asarray(cosine_to_memory(jnp.asarray(latents), jnp.asarray(mem["memory"][labels]),
                                           jnp.asarray(mem["valid"][labels]))).max(1)

    _, plain = generate(prior, params, labels, key, steps=6, return_latents=True)
    _, pushed = generate(prior, params, labels, key, steps=6, guidance=(deviation_term(0.5),),
                         aux={"deviation": mem}, return_latents=True, window=(0, 4))
    assert np.mean(nearest_cos(pushed)) < np.mean(nearest_cos(plain)) - 0.01


# ------------------------------------------------------------------ ACS
ACS_TINY = dict(steps=6, window=(1, 4), discriminator="convnet-w8-d1", disc_epochs=10, disc_batch=8, batch_size=8,
                cfg_scale=1.0)


def test_acs_config_errors():
    with pytest.raises(ValueError, match="must divide IPC=5"):
        ACSConfig(ipc=5, curricula=2)
    with pytest.raises(ValueError, match="window"):
        ACSConfig(ipc=2, steps=10, window=(3, 12))


def test_acs_curricula_order_resume_and_discriminator(pixel, tmp_path):
    prior, params = pixel
    acs = ACS(prior, ACSConfig(ipc=4, curricula=2, **ACS_TINY))
    key = jax.random.key(7)
    full = run_acs(acs, params, key, tmp_path / "a", progress=False)
    images, labels, _ = acs.output(full)
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # curriculum 1 is plain CFG sampling with fold_in(key, 0): the first IPC/K of each class
    first = ACS(prior, ACSConfig(ipc=2, curricula=1, **ACS_TINY))
    np.testing.assert_array_equal(acs.output(first.update(first.init(key), key, params, progress=False)[0])[0],
                                  images.reshape(3, 4, *images.shape[1:])[:, :2].reshape(-1, *images.shape[1:]))
    # D's training loss decreased over its epochs
    loss = np.asarray(full.disc_loss)
    assert np.isnan(loss[0]).all() and loss[1, 1] < loss[1, 0]
    # killed after curriculum 1, resumed: the same bits
    part = run_acs(acs, params, key, tmp_path / "b", progress=False, stop_after=1)
    assert int(part.curriculum) == 1
    with pytest.raises(ValueError, match="--resume"):
        run_acs(acs, params, key, tmp_path / "b", progress=False)
    resumed = run_acs(acs, params, key, tmp_path / "b", progress=False, resume=True)
    np.testing.assert_array_equal(np.asarray(resumed.images), np.asarray(full.images))
    np.testing.assert_array_equal(np.asarray(resumed.disc_loss), loss)
    with pytest.raises(ValueError, match="other settings"):
        run_acs(ACS(prior, ACSConfig(ipc=4, curricula=2, scale=0.1, **ACS_TINY)), params, key, tmp_path / "b",
                progress=False, resume=True)


def test_adversarial_term_raises_the_discriminator_loss(pixel):
    """Same key, same D: curriculum 2 with the adversarial term vs without it."""
    prior, params = pixel
    key = jax.random.key(7)
    losses = {}
    for scale in (0.0, 0.5):
        acs = ACS(prior, ACSConfig(ipc=4, curricula=2, scale=scale, deviation=0.0, **ACS_TINY))
        state, _ = acs.update(acs.init(key), key, params, progress=False)
        state, info = acs.update(state, key, params, progress=False)
        losses[scale] = info["adv_loss"]
    assert losses[0.5] > losses[0.0] + 0.05, losses


def test_adversarial_term_is_the_cross_entropy_gradient():
    """E = -CE(D(x), y) on x = decode(x0_hat(x_t)): compare with central finite differences."""
    from jaxdd.generative.guidance import GuidanceInputs

    w = jax.random.normal(jax.random.key(1), (16, 3))
    x_t = jax.random.normal(jax.random.key(2), (2, 4, 4, 1))
    labels = jnp.array([0, 2])
    inp = GuidanceInputs(x_t, 0, 0, 0.5, x_t, x_t, labels, jax.random.key(0), {"adversarial": w}, {},
                         lambda z: 0.7 * z, lambda z: 2.0 * z)
    g = np.asarray(adversarial_term(linear_classifier, 1.0).grad(inp))

    def energy(z):
        logp = jax.nn.log_softmax(linear_classifier(w, 1.4 * z), -1)
        return float(jnp.sum(logp[jnp.arange(2), labels]))

    x = np.asarray(x_t, np.float64)
    for idx in [(0, 1, 2, 0), (1, 3, 0, 0)]:
        e = np.zeros_like(x)
        e[idx] = 1e-2
        fd = (energy(jnp.asarray(x + e, jnp.float32)) - energy(jnp.asarray(x - e, jnp.float32))) / 2e-2
        assert abs(fd - g[idx]) < 2e-3 * max(1.0, abs(fd)), (fd, g[idx])  # float32 energies ~1, step 1e-2
