"""An image-folder tree: one sub-folder per class, ``train/`` plus ``val/`` (or ``test/``).

This is how ImageNette / ImageWoof (fast.ai) and most hand-made datasets ship::

    root/train/<class>/*.JPEG
    root/val/<class>/*.JPEG

Classes are the sorted sub-folder names of ``train/`` (ImageNet WordNet ids such as ``n01440764``
are shown with their human name). Images are decoded with PIL, converted to RGB (or grey with
``mode="L"``) and resized to ``image_size`` (stretched, or shorter side + centre crop with
``crop=True``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxdd.data.dataset import DatasetError
from jaxdd.data.preprocess import resize_pil
from jaxdd.data.sources.base import RawData

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"})
TRAIN_DIRS = ("train",)
TEST_DIRS = ("val", "test", "validation")

# ImageNette and ImageWoof classes (Howard, 2019, https://github.com/fastai/imagenette).
WNID_NAMES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888605": "parachute",
    "n02086240": "Shih-Tzu", "n02087394": "Rhodesian ridgeback", "n02088364": "beagle",
    "n02089973": "English foxhound", "n02093754": "Border terrier", "n02096294": "Australian terrier",
    "n02099601": "golden retriever", "n02105641": "Old English sheepdog", "n02111889": "Samoyed",
    "n02115641": "dingo",
}


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def is_image_folder(path: str | os.PathLike) -> bool:
    """True if ``path/train`` exists and has at least one class sub-folder."""
    train = _first_dir(Path(path), TRAIN_DIRS)
    return train is not None and len(_class_dirs(train)) > 0


def load_image_folder(root: str | os.PathLike, image_size: int | None = None, crop: bool = False,
                      mode: str = "RGB", progress: bool = True) -> RawData:
    """Decode every image of ``root/train`` and ``root/val`` (or ``test``/``validation``).

    Without ``image_size`` all images must already share one size.
    """
    root = Path(root)
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    train_dir, test_dir = _first_dir(root, TRAIN_DIRS), _first_dir(root, TEST_DIRS)
    if train_dir is None or test_dir is None:
        raise DatasetError(f"{root} is not an image-folder tree: expected {root}/train/<class>/ and "
                           f"{root}/val/<class>/ (or test/, validation/) sub-folders of images")
    classes = [p.name for p in _class_dirs(train_dir)]
    if len(classes) < 2:
        raise DatasetError(f"{train_dir} must have one sub-folder per class (at least 2); found {classes}")
    extra = sorted({p.name for p in _class_dirs(test_dir)} - set(classes))
    if extra:
        raise DatasetError(f"{test_dir} has class folders that {train_dir} lacks: {extra}; both splits must "
                           "use the same class folder names")
    files: dict[str, list[tuple[Path, int]]] = {}
    for split, split_dir in (("train", train_dir), ("test", test_dir)):
        files[split] = []
        for label, c in enumerate(classes):
            found = _images_in(split_dir / c) if (split_dir / c).is_dir() else []
            if split == "train" and not found:
                raise DatasetError(f"class folder {split_dir / c} has no images (extensions "
                                   f"{sorted(IMAGE_EXTENSIONS)})")
            files[split] += [(f, label) for f in found]
    total = sum(len(v) for v in files.values())
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc=f"decode {root.name}", unit="img", leave=False)
    arrays = {}
    sizes: dict[tuple[int, int], Path] = {}
    for split, items in files.items():
        images, labels = [], []
        for f, label in items:
            try:
                with Image.open(f) as img:
                    img = img.convert(mode)
                    if image_size is not None:
                        img = resize_pil(img, image_size, crop)
                    arr = np.asarray(img, dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as err:
                raise DatasetError(f"cannot decode image {f}: {err}; remove or replace the file") from None
            sizes.setdefault(arr.shape[:2], f)
            if len(sizes) > 1:
                (s1, f1), (s2, f2) = list(sizes.items())[:2]
                raise DatasetError(f"images differ in size ({f1}: {s1[1]}x{s1[0]}, {f2}: {s2[1]}x{s2[0]}); "
                                   "pass image_size=N to load_dataset to resize them all to N x N (`jaxdd data info "
                                   "--image-size N` shows the result); the other commands need files of one size: "
                                   "resize them, or save the images as an .npz dataset")
            images.append(arr)
            labels.append(label)
            if bar is not None:
                bar.update()
        shape = next(iter(sizes)) if sizes else (image_size or 1, image_size or 1)
        empty = np.zeros((0,) + tuple(shape) + ((3,) if mode == "RGB" else ()), np.uint8)
        arrays[split] = (np.stack(images) if images else empty, np.asarray(labels, np.int64))
    if bar is not None:
        bar.close()
    names = tuple(WNID_NAMES.get(c, c) for c in classes)
    return RawData(arrays["train"][0], arrays["train"][1], arrays["test"][0], arrays["test"][1], names,
                   f"image-folder:{root}")
