"""The pool format: save/load round trip, provenance, npz and distilled-set inputs, normalisation."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxdd.data.distilled import DistilledSet
from jaxdd.sample.pool import concatenate_pools, load_pool, make_pool, pool_from_distilled, real_pool


def distilled(ds, seed, ipc=2):
    r = np.random.default_rng(seed)
    images = r.normal(size=(ds.num_classes * ipc, *ds.image_shape)).astype(np.float32)
    return DistilledSet(images=images, labels=np.repeat(np.arange(ds.num_classes), ipc), num_classes=ds.num_classes,
                        dataset=ds.name, mean=ds.mean, std=ds.std, config={"method": "dm", "seed": seed})


def test_pool_round_trip_keeps_provenance(tiny_dataset, tmp_path):
    sets = [distilled(tiny_dataset, s) for s in (3, 4, 5)]
    pool = pool_from_distilled(sets, seeds=[3, 4, 5], iterations=[100, 100, 50], config={"ipc": 2})
    assert len(pool) == 18 and pool.class_sizes().tolist() == [6, 6, 6]
    assert pool.run.tolist() == [0] * 6 + [1] * 6 + [2] * 6 and pool.seed.tolist() == [3] * 6 + [4] * 6 + [5] * 6
    assert pool.iteration.tolist() == [100] * 12 + [50] * 6 and pool.source_index.tolist() == list(range(6)) * 3
    assert [s["seed"] for s in pool.sources] == [3, 4, 5]
    np.testing.assert_array_equal(pool.images[6:12], sets[1].images)
    pool.save(tmp_path / "pool")
    back = load_pool(tmp_path / "pool", tiny_dataset)
    for name in ("images", "labels", "run", "seed", "iteration", "source_index"):
        np.testing.assert_array_equal(getattr(back, name), getattr(pool, name))
    assert back.sources == pool.sources and back.config == {"ipc": 2} and back.dataset == "tiny"
    chosen = back.to_distilled([7, 0, 13], config={"method": "dgs"})
    np.testing.assert_array_equal(chosen.images, pool.images[[7, 0, 13]])
    assert chosen.labels.tolist() == pool.labels[[7, 0, 13]].tolist()
    assert chosen.config["provenance"]["seed"] == [4, 3, 5] and chosen.config["pool_indices"] == [7, 0, 13]


def test_real_pool_and_concatenation(tiny_dataset):
    pool = real_pool(jax.random.key(0), tiny_dataset, 5)
    assert pool.class_sizes().tolist() == [5, 5, 5]
    idx = pool.source_index
    assert len(set(idx.tolist())) == 15
    np.testing.assert_array_equal(pool.images, tiny_dataset.x_train[idx])
    np.testing.assert_array_equal(pool.labels, tiny_dataset.y_train[idx])
    with pytest.raises(ValueError, match=r"1 <= size <= 20"):
        real_pool(jax.random.key(0), tiny_dataset, 21)
    both = concatenate_pools([pool, pool_from_distilled([distilled(tiny_dataset, 1)], seeds=[1])])
    assert len(both) == 21 and both.run.tolist() == [0] * 15 + [1] * 6
    assert [s["kind"] for s in both.sources] == ["real", "distilled"]


def test_npz_pools_and_renormalisation(tiny_dataset, tmp_path):
    ds = tiny_dataset
    pixels = np.random.default_rng(0).integers(0, 256, size=(6, *ds.image_shape), dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", images=pixels, labels=np.array([0, 0, 1, 1, 2, 2]))
    pool = load_pool(tmp_path / "u8.npz", ds)
    np.testing.assert_allclose(pool.images, (pixels / 255.0 - ds.mean) / ds.std, rtol=1e-5, atol=1e-5)
    assert pool.seed.tolist() == [-1] * 6 and pool.sources[0]["kind"] == "npz"
    # float images with their own mean/std are mapped to the dataset's normalisation
    mean, std = np.full(3, 0.2, np.float32), np.full(3, 0.5, np.float32)
    np.savez(tmp_path / "f.npz", images=((pixels / 255.0 - mean) / std).astype(np.float32),
             labels=np.eye(3)[[0, 0, 1, 1, 2, 2]], mean=mean, std=std, seed=np.arange(6))
    pool = load_pool(tmp_path / "f.npz", ds)
    np.testing.assert_allclose(pool.images, (pixels / 255.0 - ds.mean) / ds.std, rtol=1e-4, atol=1e-4)
    assert pool.labels.tolist() == [0, 0, 1, 1, 2, 2] and pool.seed.tolist() == list(range(6))
    # a distilled-set folder is a pool too
    distilled(ds, 0).save(tmp_path / "d")
    assert len(load_pool(tmp_path / "d", ds)) == 6


def test_pool_errors_name_the_problem(tiny_dataset, tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 16, 16, 3)))
    with pytest.raises(ValueError, match="needs arrays 'images' and 'labels'"):
        load_pool(tmp_path / "bad.npz", tiny_dataset)
    with pytest.raises(FileNotFoundError, match="is not a pool"):
        load_pool(tmp_path / "missing", tiny_dataset)
    np.savez(tmp_path / "small.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=[0, 1])
    with pytest.raises(ValueError, match=r"pool images are \(8, 8, 3\)"):
        load_pool(tmp_path / "small.npz", tiny_dataset)
    pool = make_pool(np.zeros((2, 16, 16, 3)), [0, 1], 3, "tiny", tiny_dataset.mean, tiny_dataset.std)
    with pytest.raises(ValueError, match="one entry per image"):
        dataclasses.replace(pool, seed=np.zeros(3))
    with pytest.raises(ValueError, match="hard class indices"):
        dataclasses.replace(pool, labels=np.eye(3)[[0, 1]])
