"""LD3M: the generator, its memory-bounded gradient, and LD3M as a distillation method."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.generative import LD3MGenerator, SmallPrior, ddim_sample, noise_to_last_step, save_prior
from test_generative import TINY, LinearPrior, random_params

PIXEL = SmallPrior(num_classes=3, image_shape=(8, 8, 1), latent="none", **TINY)


@pytest.fixture(scope="module")
def pixel_prior():
    return PIXEL, random_params(PIXEL)


def latents(prior, params, n=5, seed=1):
    k1, k2 = jax.random.split(jax.random.key(seed))
    z = jax.random.normal(k1, (n, *prior.latent_shape))
    c = prior.embedding_table(params)[jnp.arange(n) % prior.num_classes]
    return z, c, jax.random.normal(k2, z.shape)


def test_generator_is_ddim_from_noised_z_with_skip_then_decode():
    prior = LinearPrior()
    params = prior.init(jax.random.key(0))
    z, c, noise = latents(prior, params)
    gen = LD3MGenerator(prior, num_steps=4)
    z_T = jnp.sqrt(prior.schedule.alpha_bar[-1]) * z + jnp.sqrt(1 - prior.schedule.alpha_bar[-1]) * noise
    # float32 sums of terms ~2 may cancel to ~0 (rtol alone would ask for exactness there)
    np.testing.assert_allclose(noise_to_last_step(prior, z, noise), z_T, rtol=1e-6, atol=1e-6)
    expected = 0.5 * ddim_sample(prior, params, z_T, c, num_steps=4, skip=z)  # LinearPrior decodes z / 2
    # atol: 4 DDIM steps of float32 arithmetic at magnitude ~2 (1 ulp 2.4e-7), another batch size
    # in the chunked run may vectorise the sums differently
    np.testing.assert_allclose(gen(params, z, c, noise), expected, rtol=1e-5, atol=1e-5)
    # generation in chunks (with padding: 5 images, chunks of 2) gives the same images
    np.testing.assert_allclose(dataclasses.replace(gen, chunk_size=2).generate(params, z, c, noise), expected,
                               rtol=1e-5, atol=1e-5)


def test_generator_renormalises_to_the_dataset():
    prior = dataclasses.replace(LinearPrior(), pixel_mean=(0.5,), pixel_std=(0.5,))
    params = prior.init(jax.random.key(0))
    z, c, noise = latents(prior, params)
    raw = LD3MGenerator(prior, num_steps=3)(params, z, c, noise)
    ds = LD3MGenerator(prior, num_steps=3, mean=(0.25,), std=(0.2,))
    out = ds(params, z, c, noise)
    np.testing.assert_allclose(out * 0.2 + 0.25, raw * 0.5 + 0.5, rtol=1e-5, atol=1e-6)  # same pixels
    np.testing.assert_allclose(ds.encode(params, out), 2 * raw, rtol=1e-5, atol=1e-5)


def test_gradient_wrt_z_matches_finite_differences(pixel_prior):
    prior, params = pixel_prior
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        z, c, noise = (jnp.asarray(a, jnp.float64) for a in latents(prior, params, n=2))
        w = jax.random.normal(jax.random.key(7), (2, *prior.image_shape), jnp.float64)
        gen = LD3MGenerator(prior, num_steps=3)
        loss = jax.jit(lambda z: jnp.sum(w * gen(p64, z, c, noise)) + 0.1 * jnp.sum(gen(p64, z, c, noise) ** 2))
        g = jax.jit(jax.grad(loss))(z)
        assert g.dtype == jnp.float64
        for seed in range(3):
            d = jax.random.normal(jax.random.key(100 + seed), z.shape, jnp.float64)
            h = 1e-5
            fd = (loss(z + h * d) - loss(z - h * d)) / (2 * h)
            assert float(jnp.sum(g * d)) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)


def test_chunked_vjp_equals_full_gradient(pixel_prior, guidance_scale=2.0):
    prior, params = pixel_prior
    z, c, noise = latents(prior, params, n=5)
    target = jax.random.normal(jax.random.key(3), (5, *prior.image_shape))
    loss_fn = lambda images: (jnp.sum((images - target) ** 2), None)  # noqa: E731
    full = LD3MGenerator(prior, num_steps=3, guidance_scale=guidance_scale, remat=False)
    g_full = jax.jit(jax.grad(lambda z, c: loss_fn(full(params, z, c, noise))[0], argnums=(0, 1)))(z, c)
    chunked = dataclasses.replace(full, chunk_size=2, remat=True)
    (loss, _), (g_z, g_c) = jax.jit(lambda z, c: chunked.value_and_grad(loss_fn, params, z, c, noise))(z, c)
    assert float(loss) == pytest.approx(float(loss_fn(full(params, z, c, noise))[0]), rel=1e-5)
    np.testing.assert_allclose(g_z, g_full[0], rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(g_c, g_full[1], rtol=2e-4, atol=1e-5)


def test_generator_config_errors():
    with pytest.raises(ValueError, match="chunk_size"):
        LD3MGenerator(LinearPrior(), chunk_size=0)
    with pytest.raises(ValueError, match="DDIM step"):
        LD3MGenerator(LinearPrior(), num_steps=0)


# ------------------------------------------------------------------ LD3M in the distillation driver
@pytest.fixture(scope="module")
def small_world(tmp_path_factory, tiny_dataset):
    """A tiny latent prior saved for the 16x16x3, 3-class test dataset."""
    prior = SmallPrior(num_classes=3, image_shape=(16, 16, 3), pixel_mean=tuple(map(float, tiny_dataset.mean)),
                       pixel_std=tuple(map(float, tiny_dataset.std)), latent="vae", latent_channels=2, ae_width=4,
                       ae_downsamples=1, **TINY)
    folder = tmp_path_factory.mktemp("prior")
    params = random_params(prior)
    save_prior(folder, prior, params)
    return folder, prior, params


def build(small_world, tiny_dataset, **kw):
    from jaxdd.distill import build_method
    from jaxdd.models import create_network

    net = create_network("convnet-w8-d1", num_classes=3, input_shape=tiny_dataset.image_shape)
    kw.setdefault("prior", str(small_world[0]))
    return build_method("ld3m", net, **kw)


def test_ld3m_config_and_errors(small_world, tiny_dataset):
    from jaxdd.distill import method_config

    m = build(small_world, tiny_dataset, ipc=2, match="dc", num_steps=3, match_settings={"outer_loop": 2})
    cfg = m.config
    assert (cfg.match, cfg.num_steps, m.match.config.outer_loop, cfg.ipc, cfg.lr_img) == ("dc", 3, 2, 2, 0.01)
    assert cfg.iterations == 1000 == m.match.config.iterations  # the matching method's default
    assert cfg.match_settings == '{"outer_loop": 2}'
    assert build(small_world, tiny_dataset, ipc=2, match="dc", num_steps=3,
                 match_settings='{"outer_loop": 2}').config == cfg
    with pytest.raises(ValueError, match="needs a diffusion prior"):
        build(small_world, tiny_dataset, prior=None)
    with pytest.raises(ValueError, match="match must be one of"):
        method_config("ld3m", match="gm")
    with pytest.raises(ValueError, match="no setting"):
        build(small_world, tiny_dataset, match_settings={"nonsense": 1})
    from jaxdd.distill import build_method
    from jaxdd.models import create_network

    net = create_network("convnet-w8-d1", num_classes=10, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="use a prior trained on this dataset"):
        build_method("ld3m", net, prior=str(small_world[0]))


def test_ld3m_prior_must_fit_the_dataset(small_world, tiny_dataset):
    from jaxdd.data import from_arrays

    m = build(small_world, tiny_dataset)
    r = np.random.default_rng(0)
    other = from_arrays("other", r.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8), np.arange(8) % 4,
                        r.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8), np.arange(4))
    with pytest.raises(ValueError, match="4 classes vs|3 classes vs 4"):
        m.for_dataset(other)


def test_ld3m_for_dataset_returns_a_new_method(small_world, tiny_dataset):
    """Binding to a dataset builds a new LD3M (generator in the dataset's normalisation, a new
    latent optimiser for the matching method); the method it was called on is unchanged."""
    m = build(small_world, tiny_dataset, ipc=1, match="dm", num_steps=2)
    bound = m.for_dataset(tiny_dataset)
    assert m.generator.mean is None and m.generator.std is None
    assert bound.generator.mean == tuple(float(v) for v in np.ravel(tiny_dataset.mean))
    assert bound.match.image_tx is not m.match.image_tx and bound != m
    assert (bound.name, bound.eval_preset, bound.extendable, bound.network) == ("ld3m", "dc-dsa", True, m.network)


@pytest.mark.parametrize("match", ["dm", "dc"])
def test_ld3m_update_moves_latents_along_the_chunked_gradient(small_world, tiny_dataset, match):
    """One LD3M iteration = the matching method's image gradient pulled back through G, then Adam."""
    from jaxdd.distill import RealData

    m = build(small_world, tiny_dataset, ipc=2, match=match, num_steps=2, chunk_size=4, dsa=False,
              batch_real=4, match_settings={"outer_loop": 1} if match == "dc" else {})
    m = m.for_dataset(tiny_dataset)
    real = RealData.from_dataset(tiny_dataset)
    state = m.init(jax.random.key(0), real)
    lat = state.opt_state
    gen, params = m.generator, small_world[2]
    # the independent computations below are jitted (the same programs op by op compile every
    # primitive separately: several times slower, same numbers up to float32 rounding)
    np.testing.assert_allclose(state.images, jax.jit(gen.__call__)(params, lat.z, lat.c, lat.noise),
                               rtol=1e-5, atol=1e-5)
    # initial latents encode the real images chosen by the matching method's initialisation
    from jaxdd.distill import init_images

    k_init, _ = jax.random.split(jax.random.key(0))
    x0, _ = init_images(k_init, real, 2, "real")
    np.testing.assert_allclose(lat.z, jax.jit(gen.encode)(params, x0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lat.c, small_world[2]["embedding"][np.repeat(np.arange(3), 2)])

    new, metrics = jax.jit(m.update)(state, real)
    assert np.isfinite(float(metrics["loss"]))
    # independent computation: the image gradient of the same matching loss, full (unchunked) vjp, Adam
    if match == "dm":  # the key use of DistributionMatching.update
        _, k_net, k_real, k_aug = jax.random.split(state.key, 4)
    else:  # GradientMatching.update, first (only) outer loop
        _, k_net, k_loop = jax.random.split(state.key, 3)
        k_real, k_aug, _ = jax.random.split(jax.random.split(k_loop, 1)[0], 3)
    full = dataclasses.replace(gen, remat=False)

    @jax.jit
    def reference(images, z, c):
        variables = m.network.init(k_net)
        x_real, w = m.match._real_batch(k_real, real)
        g_img = jax.grad(lambda im: m.match.matching_loss(im, state.labels, variables, x_real, w, k_aug)[0])(images)
        return jax.vjp(lambda z, c: full(params, z, c, lat.noise), z, c)[1](g_img)

    g_z, g_c = reference(state.images, lat.z, lat.c)
    # Adam's first step (bias-corrected moments m = g, v = g^2) is -lr * g / (|g| + 1e-8): compared
    # where g is well above float noise; elsewhere the step is at most lr
    for before, after, g in ((lat.z, new.opt_state.z, g_z), (lat.c, new.opt_state.c, g_c)):
        g, step = np.asarray(g), np.asarray(after) - np.asarray(before)
        big = np.abs(g) > 1e-3 * np.abs(g).max()
        assert big.mean() > 0.5
        np.testing.assert_allclose(step[big], -0.01 * g[big] / (np.abs(g[big]) + 1e-8), atol=2e-5)
        assert np.all(np.abs(step) <= 0.01 + 1e-6)
    np.testing.assert_allclose(new.images, gen(params, new.opt_state.z, new.opt_state.c, lat.noise),
                               rtol=1e-4, atol=1e-4)


def test_ld3m_state_checkpoints_and_resumes_bit_identically(small_world, tiny_dataset, tmp_path):
    """The LD3M state (latents, embeddings, noise, Adam state, key) round-trips through an orbax
    checkpoint: update, save, restore, update == two updates (the driver resumes this way)."""
    from jaxdd.distill import RealData
    from jaxdd.utils.checkpoint import Checkpointer

    m = build(small_world, tiny_dataset, ipc=1, match="dm", num_steps=2, batch_real=4).for_dataset(tiny_dataset)
    real = RealData.from_dataset(tiny_dataset)
    state = m.init(jax.random.key(0), real)
    update = jax.jit(m.update)
    once, _ = update(state, real)
    twice, _ = update(once, real)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, once, {"config": dataclasses.asdict(m.config)})
        step, restored, meta = ckpt.restore_latest(m.init(jax.random.key(0), real))
    assert step == 1 and meta["config"]["match"] == "dm"
    resumed, _ = update(restored, real)
    raw = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(raw(a), raw(b)), resumed, twice)


def test_ld3m_with_trajectory_matching(tmp_path, tiny_npz, pixel_prior):
    """--match mtt: the expert-trajectory loss on G(z, c); latents move along its pulled-back
    gradient, the learnable student lr is updated by MTT's own SGD."""
    from jaxdd.data import load_dataset
    from jaxdd.distill import RealData, build_method
    from jaxdd.experts import ExpertConfig, train_experts
    from jaxdd.models import create_network

    ds = load_dataset(tiny_npz)
    net = create_network("mlp-w16", num_classes=3, input_shape=(8, 8, 1))
    buf = train_experts(ds, net, tmp_path / "buffer", 2, ExpertConfig(epochs=3, batch_size=8), progress=False)
    prior, params = pixel_prior
    save_prior(tmp_path / "prior", prior, params)
    m = build_method("ld3m", net, prior=str(tmp_path / "prior"), match="mtt", ipc=2, num_steps=2, lr_img=0.05,
                     match_settings={"buffer": str(buf.path), "syn_steps": 3, "expert_epochs": 1,
                                     "max_start_epoch": 2, "lr_lr": 1e-4})
    assert m.config.lr_img == 0.05 and m.match.config.syn_steps == 3 and m.eval_preset == "mtt"
    m = m.for_dataset(ds)
    real = RealData.from_dataset(ds)
    state = m.init(jax.random.key(0), real)
    lat = state.opt_images
    # the independent computations jitted (op by op, every primitive would compile on its own)
    np.testing.assert_allclose(state.images, jax.jit(m.generator.__call__)(params, lat.z, lat.c, lat.noise),
                               rtol=1e-5, atol=1e-5)
    new, metrics = jax.jit(m.update)(state, real)
    # MTT's own draws (TrajectoryMatching.update) and its gradient w.r.t. the images and the lr
    _, k_expert, k_start, k_loss = jax.random.split(state.key, 4)
    mtt = m.match
    expert = jax.random.randint(k_expert, (), 0, mtt.num_experts)
    start = jax.random.randint(k_start, (), *mtt.start_window(state.step))
    theta0, theta1 = mtt.expert_pair(expert, start)
    learn = {"images": state.images, "lr": state.syn_lr}
    loss, grads = jax.jit(jax.value_and_grad(lambda l: mtt.matching_loss(l, state, theta0, theta1, k_loss)[0]))(learn)
    assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-5)
    np.testing.assert_allclose(new.syn_lr, state.syn_lr - 1e-4 * grads["lr"], rtol=1e-5)
    g_z, _ = jax.jit(m.generator.vjp)(params, lat.z, lat.c, lat.noise, grads["images"])
    g, step = np.asarray(g_z), np.asarray(new.opt_images.z - lat.z)
    big = np.abs(g) > 1e-3 * np.abs(g).max()
    np.testing.assert_allclose(step[big], -0.05 * g[big] / (np.abs(g[big]) + 1e-8), atol=1e-4)


def test_ld3m_eight_devices_equal_one(small_world, tiny_dataset, sharding_spy):
    """LD3M over DM: the real batches split over 8 devices vs one device give the same latents."""
    from jaxdd.distill import RealData
    from jaxdd.utils.mesh import data_mesh

    kw = dict(ipc=1, match="dm", num_steps=2, chunk_size=4, batch_real=8)
    one, eight = build(small_world, tiny_dataset, **kw), build(small_world, tiny_dataset, mesh=data_mesh(8), **kw)
    one, eight = one.for_dataset(tiny_dataset), eight.for_dataset(tiny_dataset)
    real = RealData.from_dataset(tiny_dataset)
    state = one.init(jax.random.key(0), real)
    a, ma = jax.jit(one.update)(state, real)
    assert sharding_spy.splits(8) == []
    b, mb = jax.jit(eight.update)(state, real)
    assert float(mb["loss"]) == pytest.approx(float(ma["loss"]), rel=1e-4)
    # Adam's first step is -lr g / (|g| + 1e-8): where |g| sits at float32 noise (summation order
    # differs between 1 and 8 devices) its sign may flip, so allow a few elements to differ by <= 2 lr
    diff = np.abs(np.asarray(b.opt_state.z) - np.asarray(a.opt_state.z))
    assert np.mean(diff <= 1e-5) > 0.99 and diff.max() <= 2 * one.config.lr_img + 1e-6
    if diff.max() <= 1e-5:  # no sign flip (the case on the machines tried): the images agree as well
        np.testing.assert_allclose(b.images, a.images, rtol=1e-4, atol=1e-4)
    assert not np.allclose(a.opt_state.z, state.opt_state.z)
    # placement: the real batch (3 classes x 8 images) was split over the 8 devices on its image axis
    assert ((3, 8, 16, 16, 3), (None, "data")) in sharding_spy.splits(8)
    assert len(b.images.sharding.device_set) == 8 and len(a.images.sharding.device_set) == 1
