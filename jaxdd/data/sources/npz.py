"""A ``.npz`` file with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (optional ``class_names``).

Images are uint8 in [0, 255] or floats in [0, 1], NHW or NHWC; labels are integer class indices.
Written e.g. by ``np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...,
class_names=np.array([...]))``. Loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from jaxdd.data.dataset import DatasetError
from jaxdd.data.sources.base import RawData, names_or_default

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | os.PathLike) -> RawData:
    """Read the four arrays (and ``class_names`` if present) of an npz dataset file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"npz dataset {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"cannot read {path}: it is not an .npz archive (not a zip file: another format, or "
                           "truncated); write it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=..., class_names=...)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in REQUIRED_KEYS if k not in z.files]
            if missing:
                raise DatasetError(f"{path} lacks the arrays {missing} (it has {sorted(z.files)}); save it with "
                                   "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=..., "
                                   "class_names=...)")
            arrays = {k: z[k] for k in REQUIRED_KEYS}
            names = [str(c) for c in z["class_names"].tolist()] if "class_names" in z.files else None
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(f"cannot read {path} as an npz archive of plain arrays: {err}") from None
    names = names_or_default(names, str(path), np.ravel(arrays["y_train"]), np.ravel(arrays["y_test"]))
    return RawData(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], names,
                   f"npz:{path}")
