"""Orbax checkpoints of arbitrary state pytrees, restored bit-identically into a template.

``Checkpointer(directory)`` wraps ``orbax.checkpoint.CheckpointManager`` (orbax-checkpoint 0.12).
Each step is a folder ``<directory>/<step>/`` holding two orbax items:

- ``state``: the state's array leaves, flattened to ``{"l0": ..., "l1": ...}`` numpy arrays
  (``ocp.args.StandardSave``). Typed PRNG keys are stored as ``jax.random.key_data``; Python
  numbers as 0-d int64/float64/bool/complex128 arrays; zero-size arrays only in the record below
  (orbax cannot write them).
- ``meta``: a JSON record (``ocp.args.JsonSave``): format version, and per leaf its key path,
  shape, dtype, key implementation and CRC-32 of its bytes, plus the caller's metadata dict.

Atomicity comes from orbax: a step is written to ``<step>.orbax-checkpoint-tmp*`` and renamed
into place only when complete, so a killed save leaves at most a temporary folder that is ignored
(and removed the next time a ``Checkpointer`` opens the folder); older steps are deleted only
after the new one is committed. Saves are synchronous. A save that fails (a full disk) removes
its temporary folder, keeps the previous step and raises :class:`CheckpointSaveError` with one
line instead of orbax's per-thread tracebacks.

Restoring takes a *template*, a pytree like the saved state (typically the freshly initialised
state of the same configuration). The result has exactly the template's tree structure and leaf
types (NumPy array/scalar, ``jax.Array`` placed with the template leaf's sharding and weak type,
typed key re-wrapped with the template's key implementation, Python number); values are
bit-identical to what was saved. Any mismatch in leaf paths, shapes, dtypes or key
implementations, or damaged files (caught by orbax or by the CRC-32), raises
:class:`CheckpointError` naming the step, the leaf and what was expected vs found.

**Multi-process runs** (``jaxdd.utils.distributed``): every process calls ``save`` and
``restore`` with the same arguments (orbax's multi-process mode: the processes meet at barriers,
the primary process writes the files and the metadata, the others take part without writing).
Sharded leaves are gathered to host memory on every process before saving, so the files hold
global arrays and do not depend on how many processes or devices wrote them: a run may resume
with another process or device count as long as the global shapes match (otherwise
:class:`CheckpointError` names the leaf and both process/device counts). ``directory`` may be a
remote path (``gs://bucket/run/checkpoints``): it goes through ``etils.epath`` untouched (local
paths are made absolute).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import threading
import zlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax import lax
from orbax.checkpoint import checkpoint_managers

from jaxdd.utils.distributed import is_primary, to_host
from jaxdd.utils.io import OutputError, os_error_reason, to_jsonable
from jaxdd.utils.mesh import put_global

FORMAT = "jaxdd-checkpoint"
VERSION = 1
_PY_DTYPES = ((bool, np.bool_), (int, np.int64), (float, np.float64), (complex, np.complex128))


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged or incompatible with the template; the message says what to do."""


class CheckpointSaveError(OutputError):
    """A checkpoint could not be written (disk full, folder removed); the previous step is kept."""


class _DrainingLoop(asyncio.SelectorEventLoop):
    """An event loop that lets its pending tasks finish before it closes.

    orbax runs every operation in a fresh event loop and closes it as soon as the operation
    returns or raises. When one tensorstore read or write fails, its sibling operations are still
    in flight; on completion they call ``call_soon_threadsafe`` on the closed loop, which raises
    ``RuntimeError('Event loop is closed')`` in tensorstore's thread (printed as an "exception
    ignored" traceback). Finishing them before closing removes that race."""

    def close(self) -> None:
        if not self.is_running() and not self.is_closed():
            pending = [t for t in asyncio.all_tasks(self) if not t.done()]
            if pending:
                self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        super().close()


class _DrainingPolicy(type(asyncio.get_event_loop_policy())):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _DrainingLoop()


class _NoThreadTracebacks(logging.Filter):
    """Drop the tracebacks orbax logs from its worker threads; the caller re-raises the error once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


@contextlib.contextmanager
def _orbax_call():
    """Around every orbax call: loops that drain before closing, no per-thread tracebacks, and
    Ctrl-C held until the call has finished (an interrupted save leaves orbax's worker threads
    writing while the interpreter shuts down); the ``KeyboardInterrupt`` is raised right after."""
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DrainingPolicy())
    quiet = _NoThreadTracebacks()
    loggers = [logging.getLogger("absl"), logging.getLogger("orbax")]
    for lg in loggers:
        lg.addFilter(quiet)
    held: list[int] = []
    hold = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if hold:
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        if hold:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        for lg in loggers:
            lg.removeFilter(quiet)
        asyncio.set_event_loop_policy(policy)
    if held:
        raise KeyboardInterrupt


def _os_error(err: BaseException) -> OSError | None:
    """The operating-system error behind an orbax/tensorstore failure, if there is one."""
    for e in (err, err.__cause__, err.__context__):
        if isinstance(e, OSError) and e.errno is not None:
            return e
    code = re.search(r"os_error_code='(\d+)'", str(err))
    if code:
        return OSError(int(code.group(1)), os.strerror(int(code.group(1))))
    if "No space left on device" in str(err):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def _path_str(path: tuple) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _py_dtype(leaf: Any):
    for typ, dtype in _PY_DTYPES:  # bool before int: bool is a subclass of int
        if isinstance(leaf, typ):
            return dtype
    return None


def _spec(path_s: str, leaf: Any) -> dict:
    """Shape / dtype / key implementation of a state or template leaf (no data transfer)."""
    if _is_key(leaf):
        return {"path": path_s, "shape": list(leaf.shape), "dtype": str(leaf.dtype),
                "key_impl": str(jax.random.key_impl(leaf))}
    if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
        return {"path": path_s, "shape": list(np.shape(leaf)), "dtype": str(leaf.dtype), "key_impl": None}
    dtype = _py_dtype(leaf)
    if dtype is None:
        raise ValueError(
            f"state leaf {path_s} has type {type(leaf).__name__}; checkpointed state leaves must be "
            "NumPy/JAX arrays, typed PRNG keys or Python numbers. Put strings and other settings "
            "into the metadata dict instead, or mark dataclass fields pytree_node=False.")
    return {"path": path_s, "shape": [], "dtype": np.dtype(dtype).name, "key_impl": None}


def checkpoint_path(directory: str | os.PathLike) -> Path | epath.Path:
    """A checkpoint folder: remote paths (``scheme://...``, e.g. ``gs://bucket/run``) as
    ``etils.epath.Path`` untouched; local ones as an absolute ``pathlib.Path``."""
    text = os.fspath(directory)
    if "://" in text:
        return epath.Path(text)
    return Path(text).expanduser().resolve()


def _rmtree(path: Path | epath.Path) -> None:
    if isinstance(path, Path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(Exception):
            path.rmtree()


def _host_data(path_s: str, leaf: Any) -> np.ndarray:
    """The bytes that get stored for a leaf, as a NumPy array (sharded arrays of a multi-process
    run are gathered from all processes)."""
    if _is_key(leaf):
        return to_host(jax.random.key_data(leaf))
    if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
        return to_host(leaf)
    try:
        return np.asarray(leaf, dtype=_py_dtype(leaf))
    except OverflowError as e:
        raise ValueError(f"state leaf {path_s} = {leaf!r} does not fit in int64; store it as a "
                         "NumPy array or in the metadata") from e


def _crc32(data: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(data).reshape(-1).view(np.uint8))


def _describe(spec: dict) -> str:
    text = f"{spec['dtype']}{list(spec['shape'])}"
    return text if not spec.get("key_impl") else f"{text} (key impl {spec['key_impl']})"


def _to_template_type(tmpl: Any, data: np.ndarray) -> Any:
    """Rebuild one leaf from its stored NumPy data with the template leaf's type and placement."""
    if _is_key(tmpl):
        key = jax.random.wrap_key_data(data, impl=jax.random.key_impl(tmpl))
        return put_global(key, tmpl.sharding)
    if isinstance(tmpl, jax.Array) and not tmpl.is_fully_addressable:  # a multi-process run's global array
        if tmpl.weak_type:  # rebuilt inside jit from the (small, typically scalar) data as a constant
            return jax.jit(lambda t: jax.vmap(lambda v: lax.full_like(t, v, shape=()))(
                jax.numpy.asarray(data).reshape(-1)).reshape(data.shape), out_shardings=tmpl.sharding)(tmpl)
        return put_global(data, tmpl.sharding)
    if isinstance(tmpl, jax.Array):
        if tmpl.weak_type:  # keep the weak type: it changes dtype promotion after resuming
            scalar = lax.full_like(tmpl, 0, shape=())
            flat = jax.vmap(lambda v: lax.full_like(scalar, v))(data.reshape(-1))
            return jax.device_put(flat.reshape(data.shape), tmpl.sharding)
        return jax.device_put(data, tmpl.sharding)
    if isinstance(tmpl, np.ndarray):
        return data
    if isinstance(tmpl, np.generic):
        return data[()]
    return type(tmpl)(data.item())


class Checkpointer:
    """Keep the last ``max_to_keep`` checkpoints of a run in ``directory`` (``None`` keeps all).

    Usage::

        with Checkpointer(out / "checkpoints") as ckpt:
            found = ckpt.restore_latest(state)       # None on a fresh folder
            if found: step, state, meta = found
            ...
            ckpt.save(step, state, {"config": config})
    """

    def __init__(self, directory: str | Path, max_to_keep: int | None = 3):
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int)
                                        or max_to_keep < 1):
            raise ValueError(f"max_to_keep must be a positive int or None (keep all), got {max_to_keep!r}")
        self.directory = checkpoint_path(directory)
        self.max_to_keep = max_to_keep
        policy = None if max_to_keep is None else checkpoint_managers.LatestN(n=max_to_keep)
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=False, preservation_policy=policy, create=True,
            cleanup_tmp_directories=True)
        try:
            with _orbax_call():
                self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))
        except OSError as e:
            raise OutputError(f"cannot create the checkpoint folder {self.directory}: {os_error_reason(e)}") from None

    # -- listing --------------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Committed steps, ascending (temporary folders of interrupted saves are not steps)."""
        with _orbax_call():
            self._manager.reload()
            return sorted(int(s) for s in self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    # -- saving ---------------------------------------------------------------------------------
    def save(self, step: int, state: Any, metadata: dict | None = None) -> Path:
        """Write ``state`` (any pytree) and a JSON-serialisable ``metadata`` dict as ``step``.

        Returns the step folder once the checkpoint is committed. Steps must increase. In a
        multi-process run every process calls it with the same step (the primary writes).
        """
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        step = int(step)
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError(f"metadata must be a dict or None, got {type(metadata).__name__}")
        latest = self.latest_step()
        if latest is not None and step <= latest:
            raise ValueError(
                f"cannot save step {step} in {self.directory}: it already holds step {latest} and steps "
                "must increase. Resume from the latest checkpoint, or use a new output folder.")
        try:
            meta_user = json.loads(json.dumps(to_jsonable(metadata or {})))
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint metadata must be JSON-serialisable: {e}") from e

        flat, _ = jax.tree_util.tree_flatten_with_path(state)
        specs, arrays = [], {}
        for i, (path, leaf) in enumerate(flat):
            path_s = _path_str(path)
            spec = _spec(path_s, leaf)
            data = _host_data(path_s, leaf)
            spec["crc32"] = _crc32(data)
            if data.size:
                spec["item"] = f"l{i}"
                arrays[spec["item"]] = data
            else:
                spec["item"] = None
            specs.append(spec)
        record = {"format": FORMAT, "version": VERSION, "step": step, "leaves": specs, "metadata": meta_user,
                  **dict(zip(("processes", "devices"), _topology()))}
        items = {"meta": ocp.args.JsonSave(record)}
        if arrays:
            items["state"] = ocp.args.StandardSave(arrays)
        try:
            with _orbax_call():
                saved = self._manager.save(step, args=ocp.args.Composite(**items), force=True)
                self._manager.wait_until_finished()
        except Exception as e:  # orbax/tensorstore raise OSError, ValueError, RuntimeError for I/O failures
            if is_primary():
                for tmp in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                    _rmtree(tmp)
            cause = _os_error(e)
            if cause is None:
                raise
            kept = (f"the previous checkpoint (step {latest}) is kept" if latest is not None
                    else "no earlier checkpoint exists")
            raise CheckpointSaveError(f"cannot save checkpoint step {step} in {self.directory}: "
                                      f"{os_error_reason(cause)}; {kept}") from None
        if not saved:
            raise RuntimeError(f"orbax declined to save step {step} in {self.directory}")
        return self.directory / str(step)

    # -- restoring ------------------------------------------------------------------------------
    def _fix_damaged(self, step: int) -> str:
        older = [s for s in self.all_steps() if s < step]
        back = f"delete {self.directory / str(step)} to fall back to step {older[-1]}, or " if older else ""
        return f"The checkpoint files are damaged: {back}delete {self.directory} to start afresh."

    def _fix_incompatible(self) -> str:
        return (f"The checkpoint was written by a run with a different configuration: use --resume only "
                f"with the same config, or delete {self.directory} (or choose another output folder).")

    def _read_record(self, step: int) -> dict:
        try:
            with _orbax_call():
                record = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as e:  # orbax/JSON raise many types for unreadable files
            raise CheckpointError(f"step {step}: cannot read the checkpoint record ({type(e).__name__}: "
                                  f"{str(e)[:300]}). {self._fix_damaged(step)}") from e
        ok = (isinstance(record, dict) and record.get("format") == FORMAT and isinstance(record.get("leaves"), list)
              and all(isinstance(s, dict) and {"path", "shape", "dtype", "key_impl", "crc32", "item"} <= s.keys()
                      for s in record["leaves"]))
        if not ok:
            raise CheckpointError(f"step {step}: the checkpoint record is not a {FORMAT} record (garbled or "
                                  f"written by another tool). {self._fix_damaged(step)}")
        if record.get("version") != VERSION:
            raise CheckpointError(f"step {step}: checkpoint format version {record.get('version')} is not the "
                                  f"supported version {VERSION}. {self._fix_incompatible()}")
        return record

    def _restore_arrays(self, step: int, wanted: dict[str, np.ndarray], paths: dict[str, str]) -> dict:
        if not wanted:
            return {}
        try:
            with _orbax_call():
                return dict(self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(wanted))).state)
        except Exception as e:
            bad = []
            for name, abstract in wanted.items():  # which leaves cannot be read on their own?
                try:
                    with _orbax_call(), ocp.PyTreeCheckpointer() as single:
                        single.restore(self.directory / str(step) / "state", args=ocp.args.PyTreeRestore(
                            item={name: abstract}, partial_restore=True,
                            restore_args={name: ocp.RestoreArgs(restore_type=np.ndarray)}))
                except Exception:
                    bad.append(paths[name])
            if bad and len(bad) < len(wanted):
                where = f"leaf {_short(bad)}"
            else:
                where = "the state files (" + ("no leaf can be read" if bad else "no single leaf fails alone") + ")"
            raise CheckpointError(f"step {step}: cannot read {where} ({type(e).__name__}: {str(e)[:300]}). "
                                  f"{self._fix_damaged(step)}") from e

    def _existing_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}; start without --resume or point it "
                                  "at the folder of the run to continue")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; available steps: {steps}")
        return int(step)

    def describe(self, step: int | None = None) -> dict:
        """What ``step`` (latest if None) holds, without reading its arrays:
        ``{"step", "leaves": [{"path", "shape", "dtype", "key_impl"}, ...], "metadata"}``."""
        step = self._existing_step(step)
        record = self._read_record(step)
        leaves = [{k: s[k] for k in ("path", "shape", "dtype", "key_impl")} for s in record["leaves"]]
        return {"step": step, "leaves": leaves, "metadata": record.get("metadata") or {}}

    def restore(self, template: Any, step: int | None = None) -> tuple[int, Any, dict]:
        """Restore ``step`` (latest if None) into ``template``'s structure -> ``(step, state, metadata)``."""
        step = self._existing_step(step)
        record = self._read_record(step)

        flat, treedef = jax.tree_util.tree_flatten_with_path(template)
        expected = [_spec(_path_str(p), leaf) for p, leaf in flat]
        found = record["leaves"]
        found_paths = {s["path"] for s in found}
        expected_paths = {s["path"] for s in expected}
        for s in expected:
            if s["path"] not in found_paths:
                raise CheckpointError(
                    f"step {step}: the template has leaf {s['path']} ({_describe(s)}) but the checkpoint "
                    f"has no such leaf (checkpoint leaves: {_short([f['path'] for f in found])}). "
                    f"{self._fix_incompatible()}")
        for s in found:
            if s["path"] not in expected_paths:
                raise CheckpointError(
                    f"step {step}: the checkpoint has leaf {s['path']} ({_describe(s)}) that the template "
                    f"lacks (template leaves: {_short([e['path'] for e in expected])}). {self._fix_incompatible()}")
        if len(found) != len(expected) or [s["path"] for s in found] != [s["path"] for s in expected]:
            raise CheckpointError(f"step {step}: the checkpoint's leaves are ordered differently from the "
                                  f"template's (different tree types). {self._fix_incompatible()}")
        for e, f in zip(expected, found):
            if (list(f["shape"]), f["dtype"], f["key_impl"]) != (e["shape"], e["dtype"], e["key_impl"]):
                raise CheckpointError(f"step {step}: leaf {e['path']}: the template expects {_describe(e)}, "
                                      f"the checkpoint has {_describe(f)}.{_topology_note(record)} "
                                      f"{self._fix_incompatible()}")

        # Abstract arrays for the stored bytes (key data has trailing key-implementation dims).
        abstract, paths, stored = {}, {}, []
        for (_, leaf), f in zip(flat, found):
            host_like = jax.eval_shape(jax.random.key_data, leaf) if _is_key(leaf) else leaf
            dtype = host_like.dtype if hasattr(host_like, "dtype") else np.dtype(f["dtype"])
            proto = np.empty(np.shape(host_like), dtype)
            stored.append(proto)
            if f["item"] is not None:
                abstract[f["item"]], paths[f["item"]] = proto, f["path"]
        arrays = self._restore_arrays(step, abstract, paths)

        leaves = []
        for (_, leaf), f, proto in zip(flat, found, stored):
            data = np.asarray(arrays[f["item"]]) if f["item"] is not None else proto
            if data.shape != proto.shape or data.dtype != proto.dtype:
                raise CheckpointError(f"step {step}: leaf {f['path']}: the stored data is {data.dtype}"
                                      f"{list(data.shape)}, its record says {proto.dtype}{list(proto.shape)}. "
                                      f"{self._fix_damaged(step)}")
            if _crc32(data) != f["crc32"]:
                raise CheckpointError(f"step {step}: leaf {f['path']}: the data does not match its checksum "
                                      f"(expected CRC-32 {f['crc32']}, found {_crc32(data)}). "
                                      f"{self._fix_damaged(step)}")
            leaves.append(_to_template_type(leaf, data))
        return step, jax.tree_util.tree_unflatten(treedef, leaves), record.get("metadata") or {}

    def restore_latest(self, template: Any) -> tuple[int, Any, dict] | None:
        """``restore(template)`` of the latest step, or None when the folder holds no checkpoint."""
        if self.latest_step() is None:
            return None
        return self.restore(template)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        with _orbax_call():
            self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpointer({str(self.directory)!r}, max_to_keep={self.max_to_keep})"


def _topology() -> tuple[int, int]:
    """(processes, devices) of this run, recorded with every checkpoint."""
    return jax.process_count(), jax.device_count()


def _topology_note(record: dict) -> str:
    """When the saving run had another process/device count: say so (global shapes that depend on
    it, such as a batch per device, cannot be resumed across counts)."""
    saved = (record.get("processes"), record.get("devices"))
    now = _topology()
    if saved[0] is None or tuple(saved) == now:
        return ""
    return (f" The checkpoint was saved by {saved[0]} process(es) with {saved[1]} device(s), this run has {now[0]} "
            f"with {now[1]}: resuming on another count works only when the global shapes do not depend on it "
            "(resume with the original counts, or choose sizes that do not).")


def _short(paths: list[str], n: int = 6) -> str:
    return ", ".join(paths[:n]) + (f", ... ({len(paths)} in all)" if len(paths) > n else "") if paths else "none"
