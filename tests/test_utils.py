"""Atomic io, tables, meshes, the distilled-set format and PNG grids."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxdd.data.distilled import DistilledSet, validate
from jaxdd.utils import io, mesh
from jaxdd.utils.images import image_grid, save_class_grid


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    io.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_json_handles_numpy_and_jax(tmp_path):
    io.write_json(tmp_path / "x.json", {"a": np.float32(1.5), "b": jnp.arange(3), "c": (1, 2)})
    assert io.read_json(tmp_path / "x.json") == {"a": 1.5, "b": [0, 1, 2], "c": [1, 2]}


def test_format_table():
    table = io.format_table([{"method": "dc", "acc": 70.123}, {"method": "dm", "acc": 5.0}])
    lines = table.splitlines()
    assert lines[0].split() == ["method", "acc"] and lines[2].split() == ["dc", "70.12"]


def test_devices_visible():
    """conftest.py's XLA_FLAGS give every test 8 fake CPU devices (the sharded-path tests need them)."""
    assert len(jax.devices()) == 8 and len(mesh.data_mesh().devices) == 8


def test_sharding_spy_sees_splits_and_ignores_replication(sharding_spy):
    """The fixture the "8 devices equal 1" tests rely on: it records a batch split over 8 devices
    (inside and outside jit), and a replicated placement or another mesh size is not a split."""
    m = mesh.data_mesh(8)
    mesh.replicate(np.zeros((8, 2), np.float32), m)
    assert sharding_spy.splits(8) == []
    mesh.shard_batch(np.zeros((16, 2), np.float32), m)
    spec = jax.sharding.NamedSharding(m, jax.sharding.PartitionSpec(None, mesh.DATA_AXIS))
    jax.jit(lambda x: jax.lax.with_sharding_constraint(x * 2, spec))(np.zeros((3, 8), np.float32))
    assert sharding_spy.splits(8) == [((16, 2), ("data",)), ((3, 8), (None, "data"))]
    assert sharding_spy.splits(4) == []


def test_sharded_matmul_equals_single_device():
    m = mesh.data_mesh(8)
    x = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    f = jax.jit(lambda x, w: jnp.tanh(x @ w).sum(0))
    sharded = f(mesh.shard_batch(x, m), mesh.replicate(w, m))
    assert len(mesh.shard_batch(x, m).sharding.device_set) == 8
    np.testing.assert_allclose(sharded, f(x, w), rtol=1e-6, atol=1e-6)


def test_shard_batch_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="multiple of 8"):
        mesh.shard_batch(np.zeros((10, 2)), mesh.data_mesh(8))
    with pytest.raises(ValueError, match="XLA_FLAGS"):
        mesh.data_mesh(64)


def _distilled(labels=None, images=None):
    images = np.random.default_rng(0).normal(size=(6, 4, 4, 1)).astype(np.float32) if images is None else images
    labels = np.array([0, 0, 1, 1, 2, 2]) if labels is None else labels
    return DistilledSet(images, labels, 3, "tiny", np.array([0.5]), np.array([0.25]), lr=0.01,
                        config={"method": "test"})


def test_distilled_round_trip(tmp_path):
    d = _distilled()
    d.save(tmp_path / "set")
    e = DistilledSet.load(tmp_path / "set")
    np.testing.assert_array_equal(e.images, d.images)
    np.testing.assert_array_equal(e.labels, d.labels)
    assert (e.lr, e.ipc, e.config) == (pytest.approx(0.01), 2, {"method": "test"})


def test_distilled_soft_labels(tmp_path):
    soft = np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 2, 2]] * 0.8 + 0.2 / 3
    d = _distilled(labels=soft)
    assert d.soft_labels and d.hard_labels.tolist() == [0, 0, 1, 1, 2, 2]
    np.testing.assert_allclose(DistilledSet.load(d.save(tmp_path / "s")).labels, soft)


def test_distilled_rejects_bad_input(tmp_path):
    bad = np.zeros((6, 4, 4, 1), np.float32)
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _distilled(images=bad)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        _distilled(labels=np.array([0, 0, 1, 1, 2, 3]))
    with pytest.raises(ValueError, match="one label"):
        validate(np.zeros((6, 4, 4, 1)), np.zeros(5, int), 3)
    with pytest.raises(FileNotFoundError, match="not a distilled set"):
        DistilledSet.load(tmp_path)


def test_image_grid_layout(tmp_path):
    imgs = np.zeros((5, 3, 3, 1), np.float32)
    imgs[4] = 1.0
    grid = image_grid(imgs, nrow=2, pad=1)
    assert grid.shape == (3 * 4 + 1, 2 * 4 + 1, 3)
    assert grid[9:12, 1:4].min() == 255 and grid[1:4, 1:4].max() == 0  # image 4 at row 2, col 0
    path = save_class_grid(tmp_path / "g.png", imgs, np.array([0, 1, 1, 2, 2]), num_classes=3)
    assert Image.open(path).size[0] > 0
