"""TensorBoard metric logs for long runs, written with ``tensorboardX`` (needs only numpy and protobuf).

``log = MetricLog(folder)`` writes ``events.out.tfevents.*`` files into ``folder`` (a run's output
folder, beside its ``history.json``), so ``tensorboard --logdir runs/`` shows every run under its
folder name. ``log.scalars(step, {"loss": 0.3, "grand_per_class": [..]})`` writes numbers as scalars
and number lists as ``tag/<name>`` (names from ``list_names``, else the index); ``log.image(step,
tag, hwc)`` writes a (H, W, 3) uint8 or [0, 1] float image. ``purge_step=s`` (a resumed run) tells
TensorBoard to drop events at steps ``>= s`` left by the interrupted run. Writes are queued and
flushed by ``flush()`` / ``close()`` (also on leaving a ``with`` block). A remote ``folder``
(``gs://bucket/run``, ``etils.epath``) gets its events written to a local temporary folder and
uploaded there, each event file as one object, at every ``flush()`` / ``close()`` and at most
every ``UPLOAD_SECONDS`` while logging.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import uuid
from numbers import Real
from typing import Any, Mapping, Sequence

import numpy as np


UPLOAD_SECONDS = 60.0  # a remote logdir's events are uploaded at most this often while logging


class _NoWriter:
    """The writer of a non-primary process: drops everything."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class MetricLog:
    """A TensorBoard event writer for one run folder (see the module docstring)."""

    def __init__(self, logdir: str | os.PathLike, *, purge_step: int | None = None,
                 list_names: Sequence[str] | None = None):
        from tensorboardX import SummaryWriter

        from jaxdd.utils.io import is_remote

        self.logdir = os.fspath(logdir)
        self._staging = None  # the local folder of a remote logdir's events
        self._uploaded = time.monotonic()
        self.list_names = None if list_names is None else [str(n) for n in list_names]
        # tensorboardX names event files by the second and the host only: a run resumed within the
        # same second would overwrite the interrupted run's file, so each writer gets its own suffix
        from jaxdd.utils.distributed import is_primary

        if not is_primary():  # a multi-process run logs once, from the primary process
            self._writer = _NoWriter()
        else:
            if is_remote(self.logdir):
                self._staging = tempfile.mkdtemp(prefix="jaxdd-events-")
            self._writer = SummaryWriter(self._staging or self.logdir, purge_step=purge_step, flush_secs=30,
                                         filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}")
        self._closed = False

    def _upload(self, every: float = 0.0) -> None:
        """Copy the staged event files of a remote logdir there (each replaced as one object), if
        ``every`` seconds have passed since the last upload."""
        if self._staging is None or time.monotonic() - self._uploaded < every:
            return
        from jaxdd.utils.io import as_path

        self._writer.flush()
        self._uploaded = time.monotonic()
        target = as_path(self.logdir)
        for name in sorted(os.listdir(self._staging)):
            with open(os.path.join(self._staging, name), "rb") as f:
                (target / name).write_bytes(f.read())

    def _names(self, n: int) -> list[str]:
        if self.list_names is not None and len(self.list_names) == n:
            return self.list_names
        return [str(i) for i in range(n)]

    def scalars(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> None:
        """Every finite number in ``metrics`` as a scalar ``prefix + key`` at ``step``; lists of
        numbers as ``prefix + key/<name>``; other values (strings, NaN) are skipped."""
        for key, value in metrics.items():
            if isinstance(value, (list, tuple, np.ndarray)) and np.ndim(value) == 1:
                for name, v in zip(self._names(len(value)), value):
                    self._scalar(f"{prefix}{key}/{name}", v, step)
            else:
                self._scalar(prefix + key, value, step)
        self._upload(every=UPLOAD_SECONDS)

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.number)):
            return
        if math.isfinite(float(value)):
            self._writer.add_scalar(tag, float(value), global_step=int(step))

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """A (H, W, 3) or (H, W) image, uint8 or floats in [0, 1]."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None].repeat(3, axis=-1)
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
            raise ValueError(f"MetricLog.image expects an (H, W, 3) image, got shape {image.shape}")
        if image.dtype != np.uint8:
            image = (np.clip(image.astype(np.float32), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        self._writer.add_image(tag, image, global_step=int(step), dataformats="HWC")
        self._upload(every=UPLOAD_SECONDS)

    def histogram(self, step: int, tag: str, values: Any) -> None:
        values = np.asarray(values, np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size:
            self._writer.add_histogram(tag, values, global_step=int(step))

    def flush(self) -> None:
        if not self._closed:
            self._writer.flush()
            self._upload()

    def close(self) -> None:
        if not self._closed:
            self._writer.close()
            self._closed = True
            self._upload()
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> "MetricLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
