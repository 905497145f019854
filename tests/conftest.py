"""Test configuration: 8 fake CPU devices so every sharded path is tested against 1 device."""

import gc
import os

# 8 fake devices; LLVM optimisation level 0 (same semantics, ~40% less CPU in this suite, which
# is dominated by compiling many tiny programs rather than running them)
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402  (must come after XLA_FLAGS)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402


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


class ShardingSpy:
    """Records every ``NamedSharding`` placement made through ``jax.lax.with_sharding_constraint``
    (inside jitted code, at trace time) or ``jax.device_put``: ``(shape, spec, mesh size)``."""

    def __init__(self):
        self.seen: list[tuple[tuple[int, ...], tuple, int]] = []

    def record(self, tree, shardings):
        leaves = jax.tree.leaves(tree)
        specs = ([shardings] * len(leaves) if isinstance(shardings, NamedSharding)
                 else jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding)))
        for x, s in zip(leaves, specs):
            if isinstance(s, NamedSharding) and hasattr(x, "shape"):
                self.seen.append((tuple(x.shape), tuple(s.spec), s.mesh.size))

    def splits(self, devices: int) -> list[tuple[tuple[int, ...], tuple]]:
        """(shape, spec) of the placements that split an axis of at least ``devices`` elements over
        a mesh of ``devices`` devices (replicated placements are not counted)."""
        return [(shape, spec) for shape, spec, size in self.seen if size == devices
                and any(ax is not None and shape[i] >= devices and shape[i] % devices == 0
                        for i, ax in enumerate(spec))]


@pytest.fixture
def sharding_spy(monkeypatch):
    """A :class:`ShardingSpy` watching ``jax.lax.with_sharding_constraint`` and ``jax.device_put``
    for the duration of a test: the "8 devices equal 1" tests assert that their mesh run really
    split data over the 8 devices (jit caches traces: use functions not traced before the spy)."""
    spy = ShardingSpy()
    constrain, put = jax.lax.with_sharding_constraint, jax.device_put

    def spy_constraint(x, shardings):
        spy.record(x, shardings)
        return constrain(x, shardings)

    def spy_put(x, device=None, *args, **kwargs):
        spy.record(x, device)
        return put(x, device, *args, **kwargs)

    monkeypatch.setattr(jax.lax, "with_sharding_constraint", spy_constraint)
    monkeypatch.setattr(jax, "device_put", spy_put)
    return spy


# The suite runs with ``-n auto --dist loadfile``: each file goes whole to one worker, in the order
# of the collection (``--no-loadscope-reorder`` in pyproject.toml; xdist's default orders files by
# their number of tests, which sent the few-but-long files last). The longest files go first, so
# the short ones fill in at the end and no worker is left with one long file while the other idles.
# Order by measured time (slowest first, from ``--durations=0``); other files follow, most tests first.
SLOWEST_FILES = [
    "test_notebooks.py", "test_ld3m.py", "test_own_model.py", "test_multiprocess.py", "test_sharded_memory.py",
    "test_own_model_fresh.py", "test_remote_paths.py", "test_trajectory.py",
    "test_distill_driver.py", "test_reference_fidelity.py", "test_difficulty.py", "test_generative_training.py",
    "test_faults.py", "test_distill_methods.py", "test_datm.py", "test_train.py", "test_guidance.py",
    "test_generate_cli.py", "test_distill_losses.py", "test_mtt.py", "test_class_split.py", "test_evaluate.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    per_file: dict[str, int] = {}
    for item in items:
        per_file[item.path.name] = per_file.get(item.path.name, 0) + 1
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -per_file[item.path.name], str(item.path)))


def pytest_sessionfinish(session):
    """In an xdist worker, after its last test: collect garbage now and freeze what is left.

    When the controller ends the run, execnet gives each worker 5 s to finish and then sends it
    SIGINT (``execnet.gateway_base.WorkerGateway._terminate_execution``). A worker's shutdown runs
    pytest's unraisable-exception check, 5 full ``gc.collect()`` passes over every live object
    (each also calling JAX's ``_xla_gc_callback``); on a loaded machine these took more than 5 s,
    the SIGINT landed in JAX's gc callback and was printed as a ``PytestUnraisableExceptionWarning``
    (KeyboardInterrupt in ``_xla_gc_callback``). This hook runs before the worker reports that it
    has finished: the garbage is collected here (unraisable exceptions still reported), and the
    survivors are frozen, so the passes at shutdown have nothing to traverse."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        gc.collect()
        gc.freeze()
