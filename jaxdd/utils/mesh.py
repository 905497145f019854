"""Device meshes for data parallelism with JAX's own SPMD (``jax.jit`` + ``NamedSharding``).

Training and scoring code stays single-device code: it is jitted once, and the *inputs* carry
shardings. Batches are split along their leading axis over the mesh axis ``data``; parameters
and other state are replicated. XLA inserts the cross-device reductions, so the numbers match a
single device up to floating-point summation order. Today this is one process with many devices
(one host's GPUs, or fake CPU devices); multi-process runs are not supported yet (the
checkpointer refuses ``jax.process_count() > 1``).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over the first ``num_devices`` devices (all by default)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for {n} devices but only {len(devices)} are visible; on CPU set "
                         "XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax")
    return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split the leading (batch) axis over ``data``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(tree: Any, mesh: Mesh | None) -> Any:
    """Place every array of ``tree`` with its leading axis split over the mesh.

    The leading axis must be divisible by the mesh size (pad or choose the batch size so).
    With ``mesh=None`` the tree is returned unchanged (single-device path).
    """
    if mesh is None:
        return tree
    n = mesh.size

    def put(x):
        if np.ndim(x) == 0 or x.shape[0] % n:
            raise ValueError(f"cannot shard an array of shape {np.shape(x)} over {n} devices: its "
                             f"leading axis must be a multiple of {n}")
        return jax.device_put(x, batch_sharding(mesh))

    return jax.tree.map(put, tree)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Place every array of ``tree`` on all devices of the mesh (unchanged if ``mesh`` is None)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, replicated(mesh))
