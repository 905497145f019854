"""Test configuration: 8 fake CPU devices so every sharded path is tested against 1 device."""

import os

# 8 fake devices; LLVM optimisation level 0 (same semantics, ~40% less CPU in this suite, which
# is dominated by compiling many tiny programs rather than running them)
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402  (must come after XLA_FLAGS)
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_dataset():
    """A small random dataset record (16x16 RGB, 3 classes) for fast unit tests."""
    from jaxdd.data.dataset import from_arrays

    r = np.random.default_rng(0)
    x = r.integers(0, 256, size=(60, 16, 16, 3), dtype=np.uint8)
    y = np.repeat(np.arange(3), 20)
    xt = r.integers(0, 256, size=(30, 16, 16, 3), dtype=np.uint8)
    yt = np.repeat(np.arange(3), 10)
    return from_arrays("tiny", x, y, xt, yt, class_names=["a", "b", "c"], source="random (tests)")


def test_devices_visible():
    assert len(jax.devices()) == 8


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> str:
    """Path of a tiny ``.npz`` dataset (24 train / 9 test random 8x8 grayscale images, 3 classes
    'a', 'b', 'c'), loadable with ``load_dataset(path)`` and by every CLI ``--dataset``."""
    r = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("tiny_npz") / "tiny.npz"
    np.savez(path, x_train=r.integers(0, 256, (24, 8, 8), dtype=np.uint8), y_train=np.repeat(np.arange(3), 8),
             x_test=r.integers(0, 256, (9, 8, 8), dtype=np.uint8), y_test=np.repeat(np.arange(3), 3),
             class_names=np.array(["a", "b", "c"]))
    return str(path)
