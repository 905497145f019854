"""Training the prior (loss decreases on real data, bit-identical resume, errors) and the
``jaxdd prior`` / ``jaxdd distill --method ld3m`` commands, on a small real Fashion-MNIST subset."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from jaxdd.generative import SmallPrior, load_prior
from jaxdd.generative.training import PriorTrainConfig, diffusion_loss, encode_all, init_train_state, train_prior

# one tiny configuration shared by every test here and the CLI test (so jit caches are shared)
CLI_MODEL = ["--latent", "vae", "--latent-channels", "2", "--ae-width", "4", "--width", "8", "--mults", "1",
             "--no-attention", "--embedding-dim", "4", "--timesteps", "20", "--batch-size", "16"]
MODEL = dict(latent="vae", latent_channels=2, ae_width=4, unet_width=8, unet_mults=(1,), attention=False,
             embedding_dim=4, num_timesteps=20)


@pytest.fixture(scope="module")
def fmnist_npz(tmp_path_factory):
    """20 training and 5 test images per class of the embedded (real) Fashion-MNIST subset, as an npz."""
    from jaxdd.data import load_dataset

    ds = load_dataset("embedded")
    tr = np.concatenate([np.flatnonzero(ds.y_train == c)[:20] for c in range(10)])
    te = np.concatenate([np.flatnonzero(ds.y_test == c)[:5] for c in range(10)])
    to_u8 = lambda x: np.round(ds.denormalize(x) * 255).astype(np.uint8)  # noqa: E731
    path = tmp_path_factory.mktemp("data") / "fmnist_small.npz"
    np.savez(path, x_train=to_u8(ds.x_train[tr]), y_train=ds.y_train[tr], x_test=to_u8(ds.x_test[te]),
             y_test=ds.y_test[te], class_names=np.array(ds.class_names))
    return path


@pytest.fixture(scope="module")
def fmnist(fmnist_npz):
    from jaxdd.data import load_dataset

    return load_dataset(str(fmnist_npz))


def tiny_prior(ds, **kw):
    return SmallPrior(num_classes=ds.num_classes, image_shape=ds.image_shape, pixel_mean=tuple(map(float, ds.mean)),
                      pixel_std=tuple(map(float, ds.std)), **{**MODEL, **kw})


def config(**kw):
    return PriorTrainConfig(**{**dict(steps=4, ae_steps=2, batch_size=16), **kw})


def test_training_losses_decrease_on_real_data(fmnist):
    prior = tiny_prior(fmnist)
    cfg = config(steps=60, ae_steps=40, lr=3e-3, ae_lr=3e-3, warmup_steps=5)
    trained, params, history = train_prior(prior, fmnist, cfg, out=None, progress=False, log_every=10)
    ae = [h["loss"] for h in history if h["phase"] == "autoencoder"]
    assert ae[-1] < 0.7 * ae[0]
    assert trained.latent_scale != 1.0  # measured when the autoencoder was done
    # the denoising loss on a fixed batch, noise and timesteps: initial weights vs the trained EMA weights
    z = encode_all(trained, params, fmnist.x_train)
    y = fmnist.y_train
    initial = {**init_train_state(prior, cfg, jax.random.split(jax.random.key(cfg.seed), 3)[0]).params,
               "autoencoder": params["autoencoder"]}
    fixed = lambda p: float(diffusion_loss(trained, p, z, y, jax.random.key(42), 0.0))  # noqa: E731
    assert fixed(params) < 0.8 * fixed(initial)


def test_resume_is_bit_identical_across_the_phase_switch(fmnist, tmp_path):
    prior, cfg = tiny_prior(fmnist), config()
    kw = dict(progress=False, checkpoint_every=100, sample_every=100, grid_per_class=1, sample_steps=2, log_every=1)
    _, straight, h_straight = train_prior(prior, fmnist, cfg, tmp_path / "a", **kw)
    train_prior(prior, fmnist, cfg, tmp_path / "b", stop_at=1, **kw)  # killed in the autoencoder phase
    train_prior(prior, fmnist, cfg, tmp_path / "b", resume=True, stop_at=4, **kw)  # ... and in the denoiser phase
    trained, resumed, h_resumed = train_prior(prior, fmnist, cfg, tmp_path / "b", resume=True, **kw)
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)
    assert [h["loss"] for h in h_resumed] == [h["loss"] for h in h_straight]
    loaded, lparams, meta = load_prior(tmp_path / "b")
    assert loaded == trained and meta["complete"] and meta["step"] == 6
    jax.tree.map(np.testing.assert_array_equal, lparams, straight)
    assert (tmp_path / "b" / "samples" / "step_000006.png").exists()
    assert (tmp_path / "b" / "reconstructions.png").exists()
    with pytest.raises(ValueError, match="pass --resume"):
        train_prior(prior, fmnist, cfg, tmp_path / "b", **kw)
    with pytest.raises(ValueError, match=r"a different train config \(lr: 0.001 in the checkpoint, 0.5 now\)"):
        train_prior(prior, fmnist, dataclasses.replace(cfg, lr=0.5), tmp_path / "b", resume=True, **kw)


def test_prior_incompatible_with_dataset(fmnist, tiny_dataset):
    with pytest.raises(ValueError, match=r"10 classes vs 3.*images \(28, 28, 1\) vs \(16, 16, 3\)"):
        train_prior(tiny_prior(fmnist), tiny_dataset, config(), out=None, progress=False)


def test_cli_prior_train_sample_and_ld3m_distill(fmnist_npz, fmnist, tmp_path, capsys):
    from jaxdd.cli import main
    from jaxdd.sample.pool import load_pool

    prior_dir, pool_dir, run_dir = tmp_path / "prior", tmp_path / "pool", tmp_path / "run"
    assert main(["prior", "train", "--dataset", str(fmnist_npz), "--steps", "4", "--ae-steps", "2", *CLI_MODEL,
                 "--sample-every", "2", "--grid-per-class", "1", "--sample-steps", "2", "--out", str(prior_dir),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "final_loss" in out and "denoiser" in out
    meta = json.loads((prior_dir / "prior.json").read_text())
    assert meta["metadata"]["train_config"]["steps"] == 4 and meta["config"]["unet_width"] == 8
    assert (prior_dir / "samples" / "step_000004.png").exists()

    assert main(["prior", "sample", "--prior", str(prior_dir), "--per-class", "2", "--steps", "2",
                 "--out", str(pool_dir), "--no-progress"]) == 0
    pool = load_pool(pool_dir, fmnist)
    assert len(pool) == 20 and np.all(pool.class_sizes() == 2) and pool.sources[0]["kind"] == "prior"
    assert json.loads((pool_dir / "sample.json").read_text())["config"]["per_class"] == 2
    assert (pool_dir / "samples.png").exists()

    assert main(["distill", "--method", "ld3m", "--prior", str(prior_dir), "--match", "dm", "--dataset",
                 str(fmnist_npz), "--ipc", "1", "--iterations", "2", "--batch-real", "4", "--set", "num_steps=2",
                 "--no-eval", "--checkpoint-every", "1", "--out", str(run_dir), "--no-progress"]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    cfg = results["config"]["method_config"]
    assert results["config"]["method"] == "ld3m" and cfg["match"] == "dm" and cfg["num_steps"] == 2
    assert (run_dir / "distilled" / "distilled.npz").exists()

    # a prior for other classes / image sizes is refused with a message saying what to do
    r = np.random.default_rng(0)
    other = tmp_path / "other.npz"
    np.savez(other, x_train=r.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8), y_train=np.arange(12) % 3,
             x_test=r.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8), y_test=np.arange(3))
    capsys.readouterr()
    assert main(["prior", "sample", "--prior", str(prior_dir), "--per-class", "1", "--dataset", str(other),
                 "--out", str(tmp_path / "p2"), "--no-progress"]) == 1
    assert "10 classes vs 3" in capsys.readouterr().err
    assert main(["distill", "--method", "ld3m", "--prior", str(prior_dir), "--dataset", str(other), "--ipc", "1",
                 "--iterations", "1", "--no-eval", "--out", str(tmp_path / "x"), "--no-progress"]) == 1
    assert "use a prior trained on this dataset" in capsys.readouterr().err
