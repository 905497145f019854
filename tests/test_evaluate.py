"""Evaluation presets and protocol (jaxdd.evaluate)."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxdd.augment import DEFAULT_STRATEGY, NO_FLIP_STRATEGY
from jaxdd.data.dataset import from_arrays
from jaxdd.data.distilled import DistilledSet
from jaxdd.evaluate import (LR_GRID, check_compatible, dsa_strategy, evaluate_distilled, evaluate_set, full_data,
                            get_preset, holdout_indices, random_real_baseline)
from jaxdd.utils.mesh import data_mesh

ARCH = "convnet-d1-w4"


def stripes(n, seed):
    """8x8 grey images of 3 classes: class c has a bright vertical stripe at columns 3c..3c+1."""
    r = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = r.integers(0, 90, size=(n, 8, 8)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, :, 3 * c: 3 * c + 2] = 230
    return x, y


@pytest.fixture(scope="module")
def sep():
    (x, y), (xt, yt) = stripes(60, 0), stripes(30, 1)
    return from_arrays("stripes", x, y, xt, yt, class_names=["left", "middle", "right"], source="test")


def real_set(ds, ipc):
    idx = np.concatenate([np.flatnonzero(ds.y_train == c)[:ipc] for c in range(ds.num_classes)])
    return ds.x_train[idx], ds.y_train[idx]


# ------------------------------------------------------------------------------------ presets
def test_presets_follow_the_spec(sep, tiny_dataset):
    dc = get_preset("dc").train_config(sep)
    assert (dc.lr, dc.momentum, dc.weight_decay, dc.batch_size, dc.epochs, dc.schedule, dc.augment,
            dc.soft_labels) == (0.01, 0.9, 5e-4, 256, 300, "reference", None, False)
    dsa = get_preset("dsa").train_config(tiny_dataset)
    assert get_preset("dsa").name == get_preset("dm").name == "dc-dsa"
    assert (dsa.epochs, dsa.augment, dsa.lr) == (1000, DEFAULT_STRATEGY, 0.01)  # RGB: flip kept
    assert get_preset("dc-dsa").train_config(sep).augment == DEFAULT_STRATEGY  # grey, not digits: flip kept
    mtt = get_preset("mtt")
    assert mtt.lr_from_set and mtt.train_config(sep).epochs == 1000 and mtt.train_config(sep).augment
    datm = get_preset("datm").train_config(sep)
    assert (datm.batch_size, datm.soft_labels, datm.epochs) == (128, True, 1000) and get_preset("datm").lr_from_set
    assert get_preset("lr-grid").lr_grid == LR_GRID == (0.001, 0.005, 0.01, 0.05, 0.1)
    assert get_preset("dc").train_config(sep, epochs=7).epochs == 7
    with pytest.raises(ValueError, match="unknown evaluation preset"):
        get_preset("dcc")
    with pytest.raises(ValueError, match="epochs"):
        get_preset("dc").train_config(sep, epochs=0)


def test_dsa_strategy_drops_flip_for_mnist_like(tiny_dataset):
    fashion = dataclasses.replace(tiny_dataset, name="embedded", source="embedded:fashion_mnist_small")
    assert dsa_strategy(fashion) == DEFAULT_STRATEGY  # the reference keeps flip for FashionMNIST
    assert dsa_strategy(dataclasses.replace(tiny_dataset, name="mnist")) == NO_FLIP_STRATEGY
    assert dsa_strategy(dataclasses.replace(tiny_dataset, name="svhn")) == NO_FLIP_STRATEGY
    assert dsa_strategy(tiny_dataset) == DEFAULT_STRATEGY


def test_holdout_indices():
    rest, val = holdout_indices(jax.random.key(0), 50)
    assert len(val) == 5 and len(rest) == 45
    np.testing.assert_array_equal(np.sort(np.concatenate([rest, val])), np.arange(50))
    assert len(holdout_indices(jax.random.key(0), 100_000)[1]) == 5000
    with pytest.raises(ValueError, match="at least 2"):
        holdout_indices(jax.random.key(0), 1)


# ------------------------------------------------------------------------------------ protocol
def test_random_real_baseline_learns_and_reports_mean_std(sep, sharding_spy):
    r, x, y = random_real_baseline(sep, 8, ARCH, "dc", jax.random.key(1), num_models=2, epochs=15, progress=False,
                                   return_set=True)
    assert r["ipc"] == 8 and r["train_size"] == 24 and x.shape == (24, 8, 8, 1)
    np.testing.assert_array_equal(np.bincount(y), [8, 8, 8])
    assert len(r["accs"]) == 2 and r["mean"] >= 90.0, r  # the stripes are learnable from 8 per class
    assert r["mean"] == pytest.approx(np.mean(r["accs"]), abs=1e-3)
    assert r["std"] == pytest.approx(np.std(r["accs"]), abs=1e-3)
    for row in x:  # the set is made of real training images
        assert np.any(np.all(sep.x_train == row, axis=(1, 2, 3)))
    # the same evaluation with every batch (24 = 3 per device) split over 8 fake devices
    r8 = random_real_baseline(sep, 8, ARCH, "dc", jax.random.key(1), num_models=2, epochs=15, progress=False,
                              mesh=data_mesh(8))
    np.testing.assert_allclose(r8["accs"], r["accs"])
    # placement: training minibatches (image axis) and test batches were split over the 8 devices
    splits = sharding_spy.splits(8)
    assert any(spec == (None, "data") for _, spec in splits) and any(spec == ("data",) for _, spec in splits), splits


def test_distilled_round_trip_and_cross_architecture(sep, tmp_path):
    x, y = real_set(sep, 2)
    ds_set = DistilledSet(images=x, labels=y, num_classes=3, dataset=sep.name, mean=sep.mean, std=sep.std,
                          config={"method": "test"})
    loaded = DistilledSet.load(ds_set.save(tmp_path / "set"))
    out = evaluate_distilled(loaded, sep, [ARCH, "mlp"], "dc", jax.random.key(2), num_models=2, epochs=2,
                             progress=False)
    assert [r["arch"] for r in out["results"]] == [ARCH, "mlp"]
    assert out["distilled"]["ipc"] == 2 and out["distilled"]["size"] == 6
    direct = evaluate_set(x, y, sep, ARCH, "dc", jax.random.key(2), num_models=2, epochs=2, progress=False)
    assert out["results"][0]["accs"] == direct["accs"]  # same key, same numbers after the round trip


def test_soft_labels(sep):
    x, y = real_set(sep, 2)
    onehot = np.eye(3, dtype=np.float32)[y]
    kw = dict(num_models=1, lr=0.01, epochs=1, progress=False)
    soft = evaluate_set(x, onehot, sep, ARCH, "datm", jax.random.key(3), **kw)
    hard = evaluate_set(x, y, sep, ARCH, "datm", jax.random.key(3), **kw)
    assert soft["labels"] == "soft" and soft["config"]["soft_labels"] and soft["config"]["batch_size"] == 128
    assert soft["accs"] == hard["accs"]  # soft CE on one-hot rows is hard CE
    arg = evaluate_set(x, onehot * 0.7 + 0.1, sep, ARCH, "dc", jax.random.key(3), **kw)
    ref = evaluate_set(x, y, sep, ARCH, "dc", jax.random.key(3), **kw)
    assert arg["labels"].startswith("argmax") and arg["accs"] == ref["accs"]
    with pytest.raises(ValueError, match="probability rows"):
        evaluate_set(x, onehot * 3.0, sep, ARCH, "datm", jax.random.key(3), **kw)


def test_mtt_preset_uses_the_learned_lr(sep):
    x, y = real_set(sep, 1)
    learned = DistilledSet(images=x, labels=y, num_classes=3, dataset=sep.name, mean=sep.mean, std=sep.std, lr=0.03)
    out = evaluate_distilled(learned, sep, [ARCH], "mtt", jax.random.key(4), num_models=1, epochs=1, progress=False)
    assert out["results"][0]["lr"] == pytest.approx(0.03)
    direct = evaluate_set(x, y, sep, ARCH, "mtt", jax.random.key(4), num_models=1, lr=0.03, epochs=1, progress=False)
    assert out["results"][0]["accs"] == direct["accs"]
    no_lr = dataclasses.replace(learned, lr=None)
    with pytest.raises(ValueError, match="learned lr"):
        evaluate_distilled(no_lr, sep, [ARCH], "mtt", jax.random.key(4), progress=False)
    with pytest.raises(ValueError, match="learned lr"):
        evaluate_set(x, y, sep, ARCH, "mtt", jax.random.key(4), progress=False)


def test_lr_grid_picks_the_best_held_out_lr(sep):
    # num_models = len(grid): the final models reuse the compiled grid training (same shapes)
    r = random_real_baseline(sep, 3, ARCH, "lr-grid", jax.random.key(5), num_models=5, epochs=3, progress=False)
    grid = r["lr_grid"]
    assert sorted(grid) == list(LR_GRID)
    best = max(grid.values())
    assert r["lr"] == min(lr for lr, acc in grid.items() if acc == best)  # first (smallest) maximum


def test_full_data(sep):
    r = full_data(sep, ARCH, "dc", jax.random.key(6), num_models=1, epochs=3, progress=False)
    assert r["train_size"] == 60 and r["mean"] >= 90.0


# ------------------------------------------------------------------------------------ errors
def test_incompatible_sets_raise(sep, tiny_dataset):
    x, y = real_set(sep, 1)
    good = DistilledSet(images=x, labels=y, num_classes=3, dataset=sep.name, mean=sep.mean, std=sep.std)
    check_compatible(good, sep)
    with pytest.raises(ValueError, match="image size"):
        check_compatible(good, tiny_dataset)
    with pytest.raises(ValueError, match="classes"):
        check_compatible(dataclasses.replace(good, num_classes=4), sep)
    with pytest.raises(ValueError, match="zca=True"):
        check_compatible(dataclasses.replace(good, zca=True), sep)
    with pytest.raises(ValueError, match="normalised"):
        check_compatible(dataclasses.replace(good, mean=sep.mean + 0.1), sep)
    with pytest.raises(ValueError, match="do not match"):
        evaluate_set(x[:, :4], y, sep, ARCH, "dc", jax.random.key(0), progress=False)
    with pytest.raises(ValueError, match="num_models"):
        evaluate_set(x, y, sep, ARCH, "dc", jax.random.key(0), num_models=0, progress=False)
    with pytest.raises(ValueError, match="explicit PRNG key"):
        evaluate_set(x, y, sep, ARCH, "dc")
    with pytest.raises(ValueError, match="archs is empty"):
        evaluate_distilled(good, sep, [], "dc", jax.random.key(0))
