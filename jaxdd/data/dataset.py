"""The in-memory dataset record every stage of jaxdd consumes.

Images are float32 NHWC arrays already normalised per channel with ``(x - mean) / std``
(``mean``/``std`` measured on the training split in [0, 1] pixel units and kept for
visualisation). Labels are int32 class indices. When ZCA whitening is applied, ``zca`` keeps
the fitted transform so images can be mapped back for display.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from jaxdd.data.preprocess import channel_stats


class DatasetError(ValueError):
    """A dataset could not be found, read or validated; the message says what to do."""


def integer_labels(name: str, split: str, y: Any) -> np.ndarray:
    """``y`` as int64 class indices, or :class:`DatasetError` naming the split (strings, fractions)."""
    y = np.asarray(y)
    if y.dtype.kind in "USO":
        examples = ", ".join(repr(str(v)) for v in np.unique(y.astype(str))[:3])
        raise DatasetError(f"{name}: {split} labels are strings ({examples} ...); labels must be integer class "
                           "indices 0..K-1: convert them with `class_names, y = np.unique(y, return_inverse=True)` "
                           "and save class_names next to them")
    if not np.issubdtype(y.dtype, np.integer) and not (
            np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
        raise DatasetError(f"{name}: {split} labels must be integer class indices, got dtype {y.dtype}")
    return y.astype(np.int64)


def classes_from_labels(name: str, y_train: Any, y_test: Any) -> tuple[str, ...]:
    """Class names "0".."K-1" for a source that declares none, K = 1 + the largest training label.

    Every class 0..K-1 must have a training image and every test label must be one of them, so a
    stray label (99 among 0..9, or 7 in a test split of 3 classes) cannot silently add classes."""
    ytr, yte = integer_labels(name, "train", y_train), integer_labels(name, "test", y_test)
    if not ytr.size:
        return ()
    if ytr.min() < 0:
        raise DatasetError(f"{name}: train labels must be class indices >= 0, got {ytr.min()}")
    k = int(ytr.max()) + 1
    missing = np.setdiff1d(np.arange(k), ytr)
    if missing.size:
        raise DatasetError(f"{name}: train labels go up to {k - 1} but classes {_listing(missing)} have no training "
                           f"image (a stray label would add empty classes); relabel the classes as 0..K-1, e.g. "
                           "`class_names, y = np.unique(y, return_inverse=True)`, or declare class_names")
    outside = np.unique(yte[(yte < 0) | (yte >= k)])
    if outside.size:
        raise DatasetError(f"{name}: test labels {_listing(outside)} are not training classes (0..{k - 1}); fix those "
                           "test labels or declare class_names covering every class")
    return tuple(str(c) for c in range(k))


def _listing(values: np.ndarray, n: int = 5) -> str:
    shown = ", ".join(str(int(v)) for v in values[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    source: str = ""
    zca: Any = None  # jaxdd.data.preprocess.ZCA when whitened
    train_indices: np.ndarray | None = None  # indices into the original train split (subsets)

    def __post_init__(self):
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 4:
                raise DatasetError(f"{self.name}: {split} images must be NHWC (4-D), got shape {x.shape}")
            if y.ndim != 1 or len(y) != len(x):
                raise DatasetError(
                    f"{self.name}: {split} labels must be 1-D with one label per image, "
                    f"got {y.shape} labels for {len(x)} images")
            if len(y) and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise DatasetError(
                    f"{self.name}: {split} labels must lie in [0, {len(self.class_names)}), "
                    f"got range [{y.min()}, {y.max()}]")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetError(f"{self.name}: train images {self.x_train.shape[1:]} and test images "
                               f"{self.x_test.shape[1:]} differ in shape")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def original_indices(self) -> np.ndarray:
        """Indices of the training examples in the full (unpruned) training split."""
        if self.train_indices is None:
            return np.arange(len(self.y_train))
        return self.train_indices

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> "Dataset":
        """The same dataset with only the given training examples (test split unchanged)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or (len(indices) and (indices.min() < 0 or indices.max() >= len(self.y_train))):
            raise DatasetError(f"{self.name}: subset indices must be 1-D within [0, {len(self.y_train)})")
        return dataclasses.replace(
            self, name=name or self.name, x_train=self.x_train[indices], y_train=self.y_train[indices],
            train_indices=self.original_indices[indices])

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """Map normalised (and possibly ZCA-whitened) images back to [0, 1] pixel space."""
        x = np.asarray(x, dtype=np.float32)
        if self.zca is not None:
            x = np.asarray(self.zca.inverse(x))
        return np.clip(x * self.std + self.mean, 0.0, 1.0)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y_train, minlength=self.num_classes)

    def describe(self) -> dict:
        """A JSON-serialisable summary (used by ``jaxdd data info`` and recorded in outputs)."""
        return {
            "name": self.name,
            "source": self.source,
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "train_size": int(len(self.y_train)),
            "test_size": int(len(self.y_test)),
            "train_per_class": self.class_counts().tolist(),
            "mean": np.asarray(self.mean).round(4).tolist(),
            "std": np.asarray(self.std).round(4).tolist(),
            "zca": self.zca is not None,
        }


def from_arrays(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                y_test: np.ndarray, class_names: Sequence[str] | None = None, source: str = "") -> Dataset:
    """Build a normalised :class:`Dataset` from raw images.

    ``x_*`` are NHWC (or NHW for grey images) arrays of uint8 in [0, 255] or floats in [0, 1].
    Per-channel mean/std are measured on the training split.
    """
    def to_float(split: str, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[..., None]
        if x.dtype == np.uint8:
            return x.astype(np.float32) / 255.0
        x = x.astype(np.float32)
        finite = np.isfinite(x).reshape(len(x), -1).all(1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            where = f"{name} ({source})" if source else name
            raise DatasetError(f"{where}: {len(bad)} {split} image(s) contain NaN or inf pixels (image "
                               f"{_listing(bad)}); fix or drop them in the source files")
        if x.size and (x.min() < -1e-6 or x.max() > 1.0 + 1e-6):
            raise DatasetError(f"{name}: float images must lie in [0, 1]; got [{x.min():.3g}, {x.max():.3g}]. "
                               "Pass uint8 images or scale them first.")
        return x

    xtr, xte = to_float("train", x_train), to_float("test", x_test)
    if class_names is None:
        class_names = classes_from_labels(name, np.ravel(y_train), np.ravel(y_test))
    ytr, yte = np.asarray(y_train).astype(np.int32).ravel(), np.asarray(y_test).astype(np.int32).ravel()
    if len(xtr) == 0:
        raise DatasetError(f"{name}: the training split is empty; a dataset needs training images")
    mean, std = channel_stats(xtr)
    return Dataset(name=name, x_train=(xtr - mean) / std, y_train=ytr, x_test=(xte - mean) / std,
                   y_test=yte, class_names=tuple(class_names), mean=mean, std=std, source=source)
