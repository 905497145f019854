"""Multi-process start-up (``jax.distributed``), the primary process, and global arrays.

A multi-process JAX job runs the *same program* in every process (one per host, or one per GPU);
each process drives its local devices and ``jax.devices()`` lists the devices of all of them.
:func:`initialize` connects the processes before any computation:

- flags: ``--coordinator HOST:PORT --num-processes P --process-id I`` (every process the same
  coordinator and P, its own I; process 0 runs the coordinator service on that port);
- environment: with no flags, ``jax.distributed.initialize()`` detects Cloud TPU pod slices,
  SLURM (``srun``), Kubernetes and Open MPI jobs (and ``JAX_COORDINATOR_ADDRESS``); on a plain
  single machine nothing is detected and the run stays one process.

:func:`is_primary` (process 0) is the one place that decides who writes outputs. On CPU, several
devices per process come from ``jax_num_cpu_devices`` (see :func:`initialize`'s
``cpu_devices``), and the processes exchange data with gloo collectives.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


class DistributedError(ValueError):
    """The multi-process settings are inconsistent or came too late; the message says the fix."""


def add_arguments(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """The ``--coordinator / --num-processes / --process-id`` flags (all or none); ``default``
    ``argparse.SUPPRESS`` leaves them out of the namespace when not given."""
    group = parser.add_argument_group("multi-process (omit on one machine; TPU pods and SLURM are detected)")
    group.add_argument("--coordinator", metavar="HOST:PORT", default=default,
                       help="address of process 0's coordinator service, the same for every process")
    group.add_argument("--num-processes", type=int, metavar="P", default=default,
                       help="number of processes in the job")
    group.add_argument("--process-id", type=int, metavar="I", default=default,
                       help="this process's index, 0 .. P-1 (0 writes the outputs)")


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, cpu_devices: int | None = None, initialization_timeout: int = 300,
               heartbeat_timeout: int | None = None) -> int:
    """Join the multi-process job (or stay single-process) before any JAX computation; returns
    ``jax.process_count()``.

    With ``coordinator``, ``num_processes`` and ``process_id`` (all three, or none) this calls
    ``jax.distributed.initialize`` with them. With none, it lets ``jax.distributed.initialize()``
    detect a TPU pod slice, a SLURM job or ``JAX_COORDINATOR_ADDRESS``; when nothing is detected
    the run is one process and nothing happens. ``cpu_devices`` sets ``jax_num_cpu_devices``
    (devices per process on CPU). ``heartbeat_timeout`` (seconds; default JAX's 100, or the
    ``JAXDD_HEARTBEAT_TIMEOUT`` environment variable) is how long the others wait before a
    process that died is reported as dead. Calling it again after a successful start is a no-op.
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise DistributedError("--coordinator, --num-processes and --process-id go together: give all three "
                               "(every process the same coordinator HOST:PORT and P, its own id) or none")
    if all(given):
        if not isinstance(num_processes, int) or num_processes < 1:
            raise DistributedError(f"--num-processes must be a positive integer, got {num_processes!r}")
        if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise DistributedError(f"--process-id must lie in [0, {num_processes}) for --num-processes "
                                   f"{num_processes}, got {process_id!r}")
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise DistributedError(f"--coordinator must be HOST:PORT (e.g. 10.0.0.1:1234), got {coordinator!r}")
    if jax.distributed.is_initialized():
        return jax.process_count()
    if cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", int(cpu_devices))
    if heartbeat_timeout is None and os.environ.get("JAXDD_HEARTBEAT_TIMEOUT"):
        heartbeat_timeout = int(os.environ["JAXDD_HEARTBEAT_TIMEOUT"])
    extra = {} if heartbeat_timeout is None else {"heartbeat_timeout_seconds": int(heartbeat_timeout)}
    if all(given):
        if num_processes == 1:
            return jax.process_count()
        _check_backend_not_started()
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=initialization_timeout, **extra)
        return jax.process_count()
    if not _cluster_detected():
        return jax.process_count()
    _check_backend_not_started()
    jax.distributed.initialize(initialization_timeout=initialization_timeout, **extra)
    return jax.process_count()


def cpu_collective_timeout_flags(seconds: int) -> str:
    """``XLA_FLAGS`` entries that let a CPU device wait ``seconds`` at a collective for its peers.

    XLA's CPU runtime warns after 20 s and aborts with ``DEADLINE_EXCEEDED`` ("Termination timeout
    ... exceeded") after 40 s when the participants of a collective do not all arrive. In a
    multi-process CPU job on a loaded machine one process can arrive that much later than another
    (it is still compiling, or it is the primary writing the outputs). Put these into the
    ``XLA_FLAGS`` of every process before JAX starts; a process that died is still reported
    after the heartbeat timeout."""
    return (f"--xla_cpu_collective_call_warn_stuck_timeout_seconds={max(20, seconds // 2)} "
            f"--xla_cpu_collective_call_terminate_timeout_seconds={int(seconds)}")


def initialize_from_args(args: argparse.Namespace) -> int:
    """:func:`initialize` from the flags of :func:`add_arguments`."""
    return initialize(getattr(args, "coordinator", None), getattr(args, "num_processes", None),
                      getattr(args, "process_id", None))


def _cluster_detected() -> bool:
    """Whether ``jax.distributed.initialize()`` would find a job to join (its own cluster detection)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    try:
        from jax._src import clusters
    except ImportError:  # pragma: no cover - JAX moved its cluster detection; only the flags work then
        return False
    return any(not env.opt_in_only_method and env.is_env_present() for env in clusters.ClusterEnv._cluster_types)


def _check_backend_not_started() -> None:
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise DistributedError("jax.distributed must be initialised before any JAX computation: call "
                               "jaxdd.utils.distributed.initialize() first thing in the program")


def is_primary() -> bool:
    """Whether this process writes outputs (JSON, images, distilled sets): process 0 (always true
    before or without ``jax.distributed``; asking does not start a backend then)."""
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def process_count() -> int:
    return jax.process_count()


def barrier(name: str) -> None:
    """Wait until every process has reached ``name`` (no-op in a single-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def global_array(local: Any, mesh: Mesh, spec: P = P()) -> jax.Array:
    """A global ``jax.Array`` on ``mesh`` with ``NamedSharding(mesh, spec)`` from this process's
    part of the data (``jax.make_array_from_process_local_data``).

    For a replicated ``spec`` (``P()``) every process passes the whole array; for a sharded
    leading axis each process passes its contiguous block (its addressable devices' rows). In a
    single-process run this is ``jax.device_put``.
    """
    sharding = NamedSharding(mesh, spec)
    local = np.asarray(local)
    if jax.process_count() == 1:
        return jax.device_put(local, sharding)
    return jax.make_array_from_process_local_data(sharding, local)


def to_host(x: Any) -> np.ndarray:
    """The full value of a (possibly multi-process, sharded) array as NumPy, on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
