"""Atomic file output, JSON with numpy values, and plain-text tables.

Every file jaxdd writes goes through :func:`atomic_path`: the content is written to a temporary
file in the same folder and moved into place with ``os.replace``, so a killed process never
leaves a half-written output and never destroys the previous version. Commands call
:func:`check_output` on their output location before any work starts; a write that fails later
(a full disk) raises :class:`OutputError` naming the file.

In a multi-process run (``jaxdd.utils.distributed``) only the primary process writes: on the
others :func:`atomic_path` yields a throw-away file, so every process runs the same code and the
output is written once.

**Remote paths.** Every path a command reads or writes goes through :func:`as_path`, an
``etils.epath.Path``: a local path behaves as ``pathlib.Path``, a URL (``gs://bucket/run``) stays a
URL end to end (never made local). A remote output is written to a local temporary file and
uploaded as one object when complete. What "atomic" means there: an object store (GCS, S3) has no
rename, but it replaces one object in a single step, so readers see the previous object or the
complete new one, never a partial upload, and a killed process leaves the previous object as it
was; a folder of several objects (a distilled set's ``.npz`` and ``.json``) is *not* replaced as a
whole, each object is. Orbax checkpoints on GCS mark a complete step with ``commit_success.txt``
instead of a rename (``jaxdd.utils.checkpoint``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from etils import epath


class OutputError(ValueError, OSError):
    """An output location cannot be written (read-only, a file where a folder is needed, disk full).

    Both a ``ValueError`` (bad input: the CLI prints it as one line) and an ``OSError``."""


def os_error_reason(err: OSError) -> str:
    """``err``'s cause and the fix in a few words ("No space left on device; free some space ...")."""
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{err.strerror or 'not writable'}; choose a writable location"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{err.strerror or 'disk full'}; free some space or choose another location"
    return f"{err.strerror or err}"


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a remote location (``gs://``, ``s3://``, ...), handled by ``etils.epath``."""
    return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
    """``path`` as an ``etils.epath.Path``: a URL (``gs://bucket/run``) untouched, a local path with
    ``~`` expanded. An unsupported scheme raises ``ValueError`` naming the ones ``etils.epath`` knows."""
    if isinstance(path, epath.Path) and is_remote(path):
        return path
    text = os.fspath(path)
    if not is_remote(text):
        return epath.Path(text).expanduser()
    scheme = text.split("://", 1)[0]
    try:
        return epath.Path(text)
    except KeyError:
        raise ValueError(f"{text}: the scheme {scheme}:// is not supported; use a local path or one of gs://, "
                         "s3://, az://, hf:// (etils.epath; gs:// needs gcsfs or tensorflow installed)") from None


def require_local(path: str | os.PathLike | None, flag: str, why: str) -> None:
    """Raise :class:`OutputError` before any work starts when ``path`` (given with ``flag``) is a URL
    but the code behind ``flag`` needs a local file or folder (``why`` says what needs it)."""
    if path is not None and is_remote(path):
        raise OutputError(f"{flag} {os.fspath(path)}: {why} needs a local path; give a local path (copy the data "
                          "there first, e.g. with gsutil / gcloud storage cp, or mount the bucket with gcsfuse)")


def check_output(path: str | os.PathLike, *, folder: bool = False, flag: str = "--out") -> epath.Path:
    """Check before any work starts that ``path`` (a file, or a folder when ``folder``) can be written.

    Writes and removes a probe file in the nearest existing folder on the way to ``path`` (creating
    nothing else), so a read-only or missing-permission location fails here, not after hours of
    work (``os.access`` is not enough: root passes it on read-only mounts); a remote ``path`` gets a
    probe object in its folder instead. Raises :class:`OutputError` naming ``flag``, the path and
    the fix. Returns :func:`as_path` of ``path``.
    """
    if is_remote(path):
        return _check_remote_output(as_path(path), folder, flag)
    path = Path(os.fspath(as_path(path)))
    _check_kind(path, folder, flag)
    target = path if folder else path.parent
    existing = next(p for p in [target, *target.parents] if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise OutputError(f"{flag} {path}: {existing} is a file, not a folder; choose an output location outside it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".jaxdd-write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{flag} {path}: cannot write to {existing}: {os_error_reason(err)}") from None
    return as_path(path)


def _check_kind(path, folder: bool, flag: str) -> None:
    """An existing ``path`` (pathlib or epath) is a folder when ``folder``, else not a folder."""
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is an existing file, but it names an output folder; give a folder "
                          "path (e.g. runs/NAME) or move the file away")
    if not folder and path.is_dir():
        raise OutputError(f"{flag} {path} is an existing folder, but it names an output file; give a file path "
                          f"such as {path / 'results.json'}")


def _check_remote_output(path: epath.Path, folder: bool, flag: str) -> epath.Path:
    """:func:`check_output` for a URL: write and delete a probe object beside (or in) ``path``."""
    import uuid

    probe = (path if folder else path.parent) / f".jaxdd-write-check.{uuid.uuid4().hex[:12]}"
    try:
        _check_kind(path, folder, flag)
        probe.write_bytes(b"")
        probe.unlink()
    except OutputError:
        raise
    except ImportError as err:
        raise OutputError(f"{flag} {path}: etils.epath cannot reach this store ({err}); install its client "
                          "(gcsfs for gs://, s3fs for s3://)") from None
    except Exception as err:  # noqa: BLE001 (network, permission and credential errors of any client)
        raise OutputError(f"{flag} {path}: cannot write there ({type(err).__name__}: {err}); check the bucket "
                          "name, credentials and permissions") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    An ``OSError`` (read-only folder, full disk) becomes an :class:`OutputError` naming ``path``;
    the previous version of ``path`` is left as it was. Outside the primary process of a
    multi-process run the file is discarded; a remote ``path`` is uploaded (module docstring)."""
    from jaxdd.utils.distributed import is_primary

    if not is_primary() or is_remote(path):
        name = os.fspath(path).rstrip("/").rsplit("/", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="jaxdd-out-") as folder:
            tmp = Path(folder) / f"{name}{suffix if suffix and not name.endswith(suffix) else ''}"
            yield tmp
            if is_primary():
                try:
                    target = as_path(path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tmp.read_bytes())  # one object, replaced in one step
                except OSError as err:
                    raise OutputError(f"cannot write {path}: {os_error_reason(err)}") from err
        return
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600 files; give outputs normal permissions
        os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(f"cannot write {path}: {os_error_reason(err)}") from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/jax scalars and arrays, tuples and paths into JSON-serialisable values."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (Path, epath.Path)):
        return os.fspath(obj)
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> epath.Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")
    return as_path(path)


def write_report(folder: str | os.PathLike, title: str, table: str, record: Mapping[str, Any]) -> None:
    """An experiment's outputs, atomically: ``results.json`` (``record``: config, rows, timing)
    and ``results.md`` (``# title``, the printed ``table`` and the config)."""
    folder = as_path(folder)
    write_json(folder / "results.json", record)
    with atomic_path(folder / "results.md") as tmp:
        tmp.write_text(f"# {title}\n\n```\n{table}\n```\n\nconfig: `{record.get('config')}`\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a damaged file raises ``ValueError`` naming it (not only the parser position)."""
    try:
        return json.loads(as_path(path).read_text())
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a JSON text file (undecodable byte at offset {err.start}); the file is "
                         "damaged or not a jaxdd output") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg}: line {err.lineno}, column {err.colno}); the file "
                         "is damaged or not a jaxdd output") from None


def save_npz(path: str | os.PathLike, **arrays: Any) -> epath.Path:
    """``np.savez_compressed`` written atomically (the name keeps its ``.npz`` suffix)."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    return as_path(path)


@contextlib.contextmanager
def load_npz(path: str | os.PathLike) -> Iterator[Any]:
    """``np.load(path, allow_pickle=False)`` of a local or remote (:func:`as_path`) ``.npz`` file, as a
    context manager (remote files are read through ``etils.epath``'s file object)."""
    path = as_path(path)
    if not is_remote(path):
        with np.load(path, allow_pickle=False) as z:
            yield z
        return
    with path.open("rb") as f, np.load(f, allow_pickle=False) as z:
        yield z


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render dict rows as an aligned plain-text table (floats with 2 decimals)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(b) for b in body])
