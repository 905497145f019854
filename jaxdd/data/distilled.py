"""The distilled-set format: what every distillation / sampling method writes and evaluation reads.

On disk a distilled set is a folder with ``distilled.npz`` (``images``, ``labels``, optional
``lr``) and ``distilled.json`` (everything else: dataset, normalisation, method config). Images
are stored normalised, exactly as the training code sees them; ``mean``/``std`` (and the ZCA flag)
allow mapping them back to pixels.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from typing import Any

import numpy as np

from jaxdd.utils.io import as_path, load_npz, read_json, save_npz, write_json
from jaxdd.utils.labels import hard_labels, is_soft

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, eq=False)
class DistilledSet:
    images: np.ndarray  # (N, H, W, C) float32, normalised
    labels: np.ndarray  # (N,) int32 hard labels or (N, num_classes) float32 soft labels
    num_classes: int
    dataset: str
    mean: np.ndarray
    std: np.ndarray
    lr: float | None = None  # learned learning rate (MTT/DATM), used by the mtt/datm presets
    zca: bool = False
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        validate(self.images, self.labels, self.num_classes)

    @property
    def soft_labels(self) -> bool:
        return is_soft(self.labels)

    @property
    def hard_labels(self) -> np.ndarray:
        return hard_labels(np.asarray(self.labels)).astype(np.int32)

    @property
    def ipc(self) -> int:
        return int(np.bincount(self.hard_labels, minlength=self.num_classes).max())

    def denormalized(self) -> np.ndarray:
        if self.zca:
            raise ValueError("images are ZCA-whitened: use Dataset.denormalize of the whitened dataset")
        return np.clip(np.asarray(self.images) * self.std + self.mean, 0.0, 1.0)

    def save(self, folder: str | os.PathLike):
        """Write ``distilled.npz`` and ``distilled.json`` into ``folder`` (local or a URL, ``etils.epath``)."""
        folder = as_path(folder)
        arrays = {"images": np.asarray(self.images, np.float32), "labels": np.asarray(self.labels)}
        if self.lr is not None:
            arrays["lr"] = np.float32(self.lr)
        save_npz(folder / "distilled.npz", **arrays)
        write_json(folder / "distilled.json", {
            "format_version": FORMAT_VERSION, "num_classes": self.num_classes, "dataset": self.dataset,
            "mean": self.mean, "std": self.std, "zca": self.zca, "lr": self.lr,
            "ipc": self.ipc, "soft_labels": self.soft_labels, "config": self.config})
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "DistilledSet":
        folder = as_path(folder)
        npz, meta_path = folder / "distilled.npz", folder / "distilled.json"
        if not npz.exists() or not meta_path.exists():
            raise FileNotFoundError(
                f"{folder} is not a distilled set: expected distilled.npz and distilled.json there "
                "(written by `jaxdd distill`, `jaxdd sample` or DistilledSet.save)")
        fix = ("rewrite it with the command that made the set (a `jaxdd distill` run: the same command with "
               "--resume rewrites distilled/ from its last checkpoint)")
        try:
            meta = read_json(meta_path)
        except ValueError as err:
            raise ValueError(f"{err}; {fix}") from None
        if not isinstance(meta, dict) or not {"num_classes", "dataset", "mean", "std"} <= meta.keys():
            raise ValueError(f"{meta_path} is not a distilled-set record (it needs num_classes, dataset, mean and "
                             f"std); {fix}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{folder}: distilled-set format version {meta.get('format_version')} is not "
                             f"supported (this jaxdd reads version {FORMAT_VERSION})")
        try:
            with load_npz(npz) as z:
                missing = {"images", "labels"} - set(z.files)
                if missing:
                    raise ValueError(f"{npz} lacks the arrays {sorted(missing)}; {fix}")
                images, labels = z["images"], z["labels"]
                lr = float(z["lr"]) if "lr" in z.files else None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise ValueError(f"{npz} is damaged ({type(err).__name__}: {err}); {fix}") from None
        except ValueError as err:  # numpy: "cannot reshape", pickled data in a non-zip file ...
            if str(err).startswith(str(npz)):
                raise
            raise ValueError(f"{npz} is damaged ({err}); {fix}") from None
        return cls(images=images, labels=labels, num_classes=int(meta["num_classes"]), dataset=meta["dataset"],
                   mean=np.asarray(meta["mean"], np.float32), std=np.asarray(meta["std"], np.float32), lr=lr,
                   zca=bool(meta.get("zca")), config=meta.get("config", {}))


def validate(images: Any, labels: Any, num_classes: int) -> None:
    """Raise ``ValueError`` naming the problem if a synthetic set is malformed or has NaNs."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"synthetic images must be (N, H, W, C), got shape {images.shape}")
    if labels.shape[0] != images.shape[0] or labels.ndim not in (1, 2):
        raise ValueError(f"need one label (or soft-label row) per image: {images.shape[0]} images, "
                         f"labels of shape {labels.shape}")
    if labels.ndim == 2 and labels.shape[1] != num_classes:
        raise ValueError(f"soft labels have {labels.shape[1]} columns but there are {num_classes} classes")
    if labels.ndim == 1 and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    if not np.all(np.isfinite(images)):
        bad = int(np.sum(~np.isfinite(images).reshape(len(images), -1).all(1)))
        raise ValueError(f"{bad} synthetic image(s) contain NaN or inf; lower the image learning rate "
                         "or resume from the last good checkpoint")
