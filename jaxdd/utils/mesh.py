"""Device meshes for data parallelism with JAX's own SPMD (``jax.jit`` + ``NamedSharding``).

Training and scoring code stays single-device code: it is jitted once, and the *inputs* carry
shardings. Batches are split along their leading axis over the mesh axis ``data``; parameters
and other state are replicated. XLA inserts the cross-device reductions, so the numbers match a
single device up to floating-point summation order.

In a multi-process run (``jaxdd.utils.distributed.initialize``) the mesh spans the devices of
all processes. Every process holds the same host data (it loads the same dataset and draws the
same random numbers), and :func:`shard_batch` / :func:`replicate` build global arrays from it:
each process places only the shards of its own devices.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MODELS_AXIS = "models"


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over the first ``num_devices`` devices (all by default)."""
    return _mesh(num_devices, DATA_AXIS)


def models_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named ``models``: the K seeded models of ``jaxdd.train.Trainer`` (evaluation,
    ensembles) are split over the devices, K/N whole models per device, and every batch is
    replicated; no communication between the devices during training."""
    return _mesh(num_devices, MODELS_AXIS)


def axis_size(mesh: Mesh | None, axis: str) -> int:
    """How many devices ``mesh`` has along ``axis`` (1 without a mesh or without that axis)."""
    return 1 if mesh is None or axis not in mesh.shape else int(mesh.shape[axis])


def _mesh(num_devices: int | None, axis: str) -> Mesh:
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices but only {len(devices)} are visible; on CPU set "
                         "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax")
    if jax.process_count() > 1 and n != len(devices):
        raise ValueError(f"a multi-process run shards over all {len(devices)} devices of its {jax.process_count()} "
                         f"processes, not {n}: omit --devices (or give {len(devices)})")
    return Mesh(np.asarray(devices[:n]), (axis,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split the leading (batch) axis over ``data``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def put_global(x: Any, sharding: NamedSharding) -> jax.Array:
    """``x`` (the same full value on every process) placed with ``sharding``: ``jax.device_put``
    when the sharding's devices are all local, else each process builds its addressable shards
    (``jax.make_array_from_process_local_data`` with the full array as this process's data)."""
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:  # already global: reshard inside jit
        return jax.jit(lambda v: v, out_shardings=sharding)(x)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = put_global(np.asarray(jax.random.key_data(x)), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x, x.shape)


def shard_batch(tree: Any, mesh: Mesh | None) -> Any:
    """Place every array of ``tree`` with its leading axis split over the mesh.

    The leading axis must be divisible by the mesh size (pad or choose the batch size so).
    With ``mesh=None`` the tree is returned unchanged (single-device path); a mesh without a
    ``data`` axis (:func:`models_mesh`) gets the batch replicated.
    """
    if mesh is None:
        return tree
    if DATA_AXIS not in mesh.shape:
        return replicate(tree, mesh)
    n = mesh.size

    def put(x):
        if np.ndim(x) == 0 or x.shape[0] % n:
            raise ValueError(f"cannot shard an array of shape {np.shape(x)} over {n} devices: its "
                             f"leading axis must be a multiple of {n}")
        return put_global(x, batch_sharding(mesh))

    return jax.tree.map(put, tree)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Place every array of ``tree`` on all devices of the mesh (unchanged if ``mesh`` is None)."""
    if mesh is None:
        return tree
    if mesh.is_multi_process:
        return jax.tree.map(lambda x: put_global(x, replicated(mesh)), tree)
    return jax.device_put(tree, replicated(mesh))


def place_models(tree: Any, mesh: Mesh | None) -> Any:
    """Stacked per-model arrays (leading model axis): split over the ``models`` axis of ``mesh``
    when it has one (the model count must be a multiple of its size), else :func:`replicate`."""
    k = axis_size(mesh, MODELS_AXIS)
    if k == 1:
        return replicate(tree, mesh)

    def put(x):
        if np.ndim(x) == 0 or np.shape(x)[0] % k:
            raise ValueError(f"cannot split {np.shape(x)[0] if np.ndim(x) else 'a scalar'} models over the {k} devices "
                             f"of the '{MODELS_AXIS}' axis: use a multiple of {k} models (or fewer devices)")
        return put_global(x, NamedSharding(mesh, P(MODELS_AXIS)))

    return jax.tree.map(put, tree)
