"""Selecting training subsets by difficulty score ("Prune First, Distill After", Moser et al. 2025).

Within each class (``per_class=True``) or over the whole set, examples are ranked by score and
the first ``k`` are kept:

* ``easy``: ascending score (low = easy), ties by ascending index;
* ``hard``: descending score, ties by ascending index;
* ``random``: a uniformly random order drawn from ``seed`` (scores are not used).

``k = round(keep · n)`` with halves rounded up, and at least 1, for each class of ``n`` examples
(or for the whole set of ``n``), so every class stays represented. ``+inf`` scores (e.g.
never-learned examples under the forgetting score) are the hardest; NaN scores are rejected.
Kept indices are returned sorted ascending, so the subset keeps the dataset's order.

The subset is ``Dataset.subset(indices)``: every distillation method accepts it as its real data.
:func:`save_subset` also writes it as an ``.npz`` dataset file that ``load_dataset`` /
``--dataset subset.npz`` reads directly (with the kept indices, scores and config alongside).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from jaxdd.data.dataset import Dataset
from jaxdd.utils.io import load_npz, save_npz
from jaxdd.utils.labels import hard_labels

ORDERS = ("easy", "hard", "random")


def check_keep(keep: float) -> float:
    keep = float(keep)
    if not (0.0 < keep <= 1.0) or math.isnan(keep):
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep}; e.g. --keep 0.6 keeps 60 % of each class")
    return keep


def keep_count(n: int, keep: float) -> int:
    """``round(keep · n)`` (halves up), at least 1 when ``n > 0``."""
    if n <= 0:
        return 0
    return int(min(n, max(1, math.floor(keep * n + 0.5))))


def _ranked(scores: np.ndarray, idx: np.ndarray, order: str, rng: np.random.Generator) -> np.ndarray:
    """``idx`` ranked for keeping (first = kept first)."""
    if order == "random":
        return idx[rng.permutation(len(idx))]
    s = scores[idx]
    key = s if order == "easy" else -s
    return idx[np.lexsort((idx, key))]  # primary: key ascending; ties: index ascending


def select_indices(scores: Any, keep: float, order: str = "easy", labels: Any = None, *,
                   per_class: bool = True, seed: int = 0) -> np.ndarray:
    """Indices (sorted ascending) of the examples to keep.

    ``scores`` (N,) with easy = low; ``labels`` (N,) class indices, required when ``per_class``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"scores must be a non-empty 1-D array (one score per example), got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} scores are NaN; recompute them (NaN cannot be ranked)")
    keep = check_keep(keep)
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {ORDERS}")
    rng = np.random.default_rng(seed)
    if not per_class:
        ranked = _ranked(scores, np.arange(len(scores)), order, rng)
        return np.sort(ranked[:keep_count(len(scores), keep)])
    if labels is None:
        raise ValueError("per-class selection needs labels (one class index per example); "
                         "pass labels=... or per_class=False")
    labels = hard_labels(np.asarray(labels))
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must align (one per example)")
    kept = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        kept.append(_ranked(scores, idx, order, rng)[:keep_count(len(idx), keep)])
    return np.sort(np.concatenate(kept))


def check_aligned(dataset: Dataset, scores: np.ndarray, indices: np.ndarray | None = None,
                  labels: np.ndarray | None = None) -> None:
    """Raise ``ValueError`` unless ``scores`` has one entry per training example of ``dataset``
    (and, when given, the scored ``indices``/``labels`` are the dataset's own)."""
    n = len(dataset.y_train)
    if np.ndim(scores) != 1 or len(scores) != n:
        raise ValueError(f"the scores hold {np.shape(scores)} values but {dataset.name} has {n} training examples; "
                         "score the same dataset (and subset) that you prune")
    if indices is not None and not np.array_equal(np.asarray(indices), dataset.original_indices):
        raise ValueError(f"the scores were computed for other examples than {dataset.name}'s training set "
                         "(their dataset indices differ); score the same dataset that you prune")
    if labels is not None and not np.array_equal(np.asarray(labels), dataset.y_train):
        raise ValueError(f"the scores' labels differ from {dataset.name}'s training labels; score the same "
                         "dataset that you prune")


def prune_dataset(dataset: Dataset, scores: Any, keep: float, order: str = "easy", *, per_class: bool = True,
                  seed: int = 0) -> Dataset:
    """``dataset`` keeping the fraction ``keep`` of its training examples chosen by ``order``."""
    return prune_with_indices(dataset, scores, keep, order, per_class=per_class, seed=seed)[0]


def prune_with_indices(dataset: Dataset, scores: Any, keep: float, order: str = "easy", *, per_class: bool = True,
                       seed: int = 0) -> tuple[Dataset, np.ndarray]:
    """:func:`prune_dataset` and the kept positions in ``dataset`` (sorted ascending)."""
    scores = np.asarray(scores)
    check_aligned(dataset, scores)
    idx = select_indices(scores, keep, order, dataset.y_train, per_class=per_class, seed=seed)
    tag = f"{order}{keep:g}" if order != "random" else f"random{keep:g}-s{seed}"
    return dataset.subset(idx, name=f"{dataset.name}-{tag}"), idx


def _pixels(dataset: Dataset, x: np.ndarray) -> np.ndarray:
    """Images back in pixel units: uint8 when that is lossless (8-bit sources), else floats in [0, 1]."""
    px = dataset.denormalize(x)
    as8 = np.round(px * 255.0)
    if np.abs(as8 / 255.0 - px).max(initial=0.0) < 1e-3:
        return as8.astype(np.uint8)
    return px.astype(np.float32)


def save_subset(path: str | os.PathLike, full: Dataset, subset: Dataset, config: dict,
                scores: np.ndarray | None = None) -> str:
    """Write ``subset`` as an ``.npz`` dataset file (``x_train``, ``y_train``, ``x_test``, ``y_test``,
    ``class_names`` in pixel units, readable by ``load_dataset(path)``) plus ``train_indices`` (into the
    full training split), ``scores`` of the kept examples, the full set's ``mean``/``std`` and the
    ``config`` as JSON. Loaded as a path, the images are re-normalised with the subset's own
    statistics; :func:`load_subset` keeps the full dataset's normalisation instead."""
    arrays = dict(x_train=_pixels(full, subset.x_train), y_train=subset.y_train,
                  x_test=_pixels(full, subset.x_test), y_test=subset.y_test,
                  class_names=np.asarray(subset.class_names), train_indices=subset.original_indices,
                  mean=np.asarray(full.mean), std=np.asarray(full.std),
                  config=np.asarray(json.dumps(config, default=str)))
    if scores is not None:
        arrays["scores"] = np.asarray(scores)
    save_npz(path, **arrays)
    return str(path)


def load_subset(dataset: Dataset, path: str | os.PathLike) -> Dataset:
    """The subset of ``dataset`` described by a file written by :func:`save_subset` (same
    normalisation as ``dataset``)."""
    with load_npz(path) as z:
        if "train_indices" not in z.files:
            raise ValueError(f"{path} has no train_indices; write it with jaxdd prune")
        idx = z["train_indices"]
        labels = z["y_train"]
    pos = {int(o): i for i, o in enumerate(dataset.original_indices)}
    missing = [int(i) for i in idx if int(i) not in pos]
    if missing:
        raise ValueError(f"{path} keeps examples {missing[:5]} that {dataset.name} does not have; load the "
                         "dataset that was pruned")
    sub = dataset.subset(np.array([pos[int(i)] for i in idx]))
    if not np.array_equal(sub.y_train, labels):
        raise ValueError(f"{path}'s labels differ from {dataset.name}'s; load the dataset that was pruned")
    return sub
