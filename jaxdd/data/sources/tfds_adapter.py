"""TensorFlow Datasets by name (``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``,
``svhn_cropped`` ...) through the optional ``tensorflow_datasets`` package (``pip install
jaxdd[tfds]``, imported lazily).

Reading does not need TensorFlow when the dataset was prepared in the ``array_record`` format:
``builder.as_data_source(split)`` returns random-access numpy examples (images decoded with PIL).
Data prepared in the default ``tfrecord`` format is read with ``tfds.as_numpy(builder.as_dataset(
split, batch_size=-1))``, which needs TensorFlow (``pip install tensorflow-cpu``). Preparing
(``download=True``) image datasets also needs TensorFlow (TFDS encodes images with it); prepare
with ``tfds build NAME --file_format=array_record`` on a machine that has it, then read anywhere.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxdd.data.dataset import DatasetError
from jaxdd.data.sources.base import RawData, names_or_default


def import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DatasetError("TFDS datasets need the optional tensorflow-datasets package: "
                           "pip install 'jaxdd[tfds]' (or pip install tensorflow-datasets)") from None
    return tfds


def tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _stack_source(source: Any, image_key: str, label_key: str, desc: str, progress: bool):
    """Read every example of a random-access data source into (images, labels) arrays."""
    n = len(source)
    it = range(n)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=desc, unit="img", leave=False)
    images, labels = [], []
    for i in it:
        ex = source[i]
        if image_key not in ex or label_key not in ex:
            raise DatasetError(f"{desc}: examples have keys {sorted(ex)}; pass image_key=/label_key= naming "
                               "the image and the class-label features")
        images.append(np.asarray(ex[image_key]))
        labels.append(int(np.asarray(ex[label_key])))
    if not images:
        return np.zeros((0, 1, 1, 1), np.uint8), np.zeros((0,), np.int64)
    return np.stack(images), np.asarray(labels, np.int64)


def _not_prepared(builder, name: str) -> DatasetError:
    return DatasetError(
        f"tfds:{name} is not prepared: looked in {builder.data_dir}. Pass download=True (--download) to let "
        f"TFDS download and prepare it (needs TensorFlow for image datasets), or run `tfds build {name} "
        "--file_format=array_record --data_dir DIR` and pass data_dir=DIR")


def _read_split(tfds, builder, name: str, split: str, image_key: str, label_key: str, progress: bool):
    desc = f"tfds:{name}[{split}]"
    try:
        source = builder.as_data_source(split=split)
    except NotImplementedError:  # no random-access files: unprepared, or prepared as tfrecord
        if not Path(str(builder.data_dir)).exists():
            raise _not_prepared(builder, name) from None
        if not tensorflow_available():
            raise DatasetError(
                f"{desc}: the data in {builder.data_dir} was prepared in the tfrecord format, which needs "
                "TensorFlow to read: pip install tensorflow-cpu, or re-prepare it without TF-only formats "
                f"with `tfds build {name} --file_format=array_record --data_dir DIR`") from None
        arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        if image_key not in arrays or label_key not in arrays:
            raise DatasetError(f"{desc}: features are {sorted(arrays)}; pass image_key=/label_key= naming the "
                               "image and the class-label features") from None
        return np.asarray(arrays[image_key]), np.asarray(arrays[label_key]).astype(np.int64)
    except (KeyError, ValueError, AssertionError, FileNotFoundError) as err:
        if not Path(str(builder.data_dir)).exists():
            raise _not_prepared(builder, name) from None
        splits = sorted(getattr(builder.info, "splits", {}) or {})
        raise DatasetError(f"{desc}: cannot read split {split!r} (available: {splits}): {err}") from None
    return _stack_source(source, image_key, label_key, desc, progress)


def load_tfds(name: str, data_dir: str | os.PathLike | None = None, download: bool = False,
              train_split: str = "train", test_split: str = "test", image_key: str = "image",
              label_key: str = "label", progress: bool = True) -> RawData:
    """Read the train and test splits of TFDS dataset ``name`` as uint8 NHWC + int labels.

    ``data_dir`` defaults to TFDS's own (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). Class
    names come from the ``ClassLabel`` feature ``label_key`` when it has names.
    """
    tfds = import_tfds()
    kwargs = {"data_dir": os.fspath(data_dir)} if data_dir is not None else {}
    try:
        builder = tfds.builder(name, **kwargs)
    except Exception as err:  # noqa: BLE001  (tfds raises several types for unknown names)
        raise DatasetError(f"TFDS has no dataset {name!r} ({type(err).__name__}: {str(err).splitlines()[0]}); "
                           "see https://www.tensorflow.org/datasets/catalog for names") from None
    if download:
        try:
            builder.download_and_prepare(file_format="array_record")
        except ModuleNotFoundError as err:
            raise DatasetError(f"preparing tfds:{name} needs {err.name} (TFDS encodes images with TensorFlow): "
                               "pip install tensorflow-cpu, or prepare it elsewhere with `tfds build "
                               f"{name} --file_format=array_record` and copy the data_dir") from None
    xtr, ytr = _read_split(tfds, builder, name, train_split, image_key, label_key, progress)
    xte, yte = _read_split(tfds, builder, name, test_split, image_key, label_key, progress)
    feature = builder.info.features[label_key] if label_key in builder.info.features else None
    names = getattr(feature, "names", None) or None
    names = names_or_default(names, f"tfds:{name}", ytr, yte)
    return RawData(xtr, ytr, xte, yte, names, f"tfds:{name}@{builder.data_dir}")
