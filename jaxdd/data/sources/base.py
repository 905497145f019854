"""What every source returns (raw uint8 images + int labels) and the checks they all share."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from jaxdd.data.dataset import DatasetError, classes_from_labels, integer_labels


class RawData(NamedTuple):
    """Raw splits as read from disk: images uint8 NHW/NHWC (or floats in [0, 1]), int labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str  # where the data came from (a path, a package, a TFDS name)


def check_raw(name: str, raw: RawData) -> RawData:
    """Validate shapes, dtypes and labels; return ``raw`` with labels as 1-D int64 arrays.

    Raises :class:`DatasetError` naming the offending split and what was expected.
    """
    class_names = tuple(str(c) for c in raw.class_names)
    shapes = {}
    labels = {}
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim not in (3, 4):
            raise DatasetError(f"{name}: {split} images must be NHW (grey) or NHWC, got shape {x.shape}")
        if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
            raise DatasetError(f"{name}: {split} images must be uint8 in [0, 255] or floats in [0, 1], "
                               f"got dtype {x.dtype}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(x):
            raise DatasetError(f"{name}: {split} labels must be 1-D with one integer label per image; got "
                               f"labels of shape {y.shape} for {len(x)} images")
        y = integer_labels(name, split, y)
        if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
            raise DatasetError(f"{name}: {split} labels must lie in [0, {len(class_names)}) for the "
                               f"{len(class_names)} declared classes; got range [{y.min()}, {y.max()}]: fix those "
                               "labels or the class_names list")
        shapes[split] = x.shape[1:] if x.ndim == 4 else x.shape[1:] + (1,)
        labels[split] = y
    if len(raw.x_train) == 0:
        raise DatasetError(f"{name}: the training split is empty")
    if shapes["test"] != shapes["train"] and len(raw.x_test):
        raise DatasetError(f"{name}: train images {shapes['train']} and test images {shapes['test']} differ "
                           "in shape; pass image_size=... to resize both")
    if len(class_names) < 2:
        raise DatasetError(f"{name}: a classification dataset needs at least 2 classes, got {class_names}")
    return raw._replace(y_train=labels["train"], y_test=labels["test"], class_names=class_names)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic class-stratified train/test split: sorted (train_idx, test_idx).

    Uses scikit-learn's ``train_test_split(stratify=labels, random_state=seed)``.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    idx = np.arange(len(labels))
    tr, te = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(tr), np.sort(te)


def digit_names(n: int = 10) -> tuple[str, ...]:
    return tuple(str(i) for i in range(n))


def names_or_default(class_names: Sequence[str] | None, name: str, y_train: np.ndarray,
                     y_test: np.ndarray) -> tuple[str, ...]:
    """``class_names``, or "0".."K-1" from the training labels (:func:`jaxdd.data.dataset.classes_from_labels`)."""
    if class_names is not None:
        return tuple(str(c) for c in class_names)
    return classes_from_labels(name, y_train, y_test)
