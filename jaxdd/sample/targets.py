"""Target difficulty distributions for DGS and their rounding to per-bin image counts.

A target is a non-negative weight per difficulty bin (10 bins of the transformed score on
[0, 1], easy first). ``real`` is the class's histogram of transformed real-image scores (computed
by :mod:`jaxdd.sample.dgs`); the presets below are fixed shapes over the bin centres
``c_k = (k + 1/2) / 10``. The DGS paper (Li et al., arXiv 2601.10090) names them but leaves their exact form open;
the choices made here:

* ``uniform``: ``w_k = 1``;
* ``hill`` (bell): ``w_k = exp(-(c_k - 1/2)^2 / (2 * 0.2^2))``, centred on medium difficulty;
* ``slope`` (easy-weighted, gradual): ``w_k = 1 - c_k``, linear from easy to hard;
* ``cliff`` (easy-weighted, abrupt): ``w_k = 1`` for the easier half (``c_k < 1/2``), else 0.

Any other distribution: a sequence of 10 weights (or one row per class), or a file holding
them (``.json`` list, ``.npy``, or a text file of numbers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxdd.sample.transform import NUM_BINS

PRESETS = ("uniform", "hill", "slope", "cliff")
TARGETS = ("real", *PRESETS)


def preset_weights(name: str, num_bins: int = NUM_BINS) -> np.ndarray:
    """The preset target ``name`` (see module docstring) as probabilities over ``num_bins``."""
    centres = (np.arange(num_bins) + 0.5) / num_bins
    if name == "uniform":
        w = np.ones(num_bins)
    elif name == "hill":
        w = np.exp(-0.5 * ((centres - 0.5) / 0.2) ** 2)
    elif name == "slope":
        w = 1.0 - centres
    elif name == "cliff":
        w = (centres < 0.5).astype(np.float64)
    else:
        raise ValueError(f"unknown target preset {name!r}; choose one of {', '.join(TARGETS)} "
                         "or give a file of bin weights")
    return w / w.sum()


def check_weights(weights: Sequence[float] | np.ndarray, num_bins: int = NUM_BINS,
                  num_classes: int | None = None) -> np.ndarray:
    """Validate user weights: ``(num_bins,)`` or ``(num_classes, num_bins)``, finite, >= 0, and
    each row with a positive sum. Returns float64 rows normalised to sum 1."""
    w = np.asarray(weights, dtype=np.float64)
    shapes = f"({num_bins},)" + (f" or ({num_classes}, {num_bins})" if num_classes else "")
    if w.shape[-1:] != (num_bins,) or w.ndim not in (1, 2) or (
            w.ndim == 2 and num_classes is not None and w.shape[0] != num_classes):
        raise ValueError(f"a target distribution needs {shapes} bin weights (easy to hard), "
                         f"got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("target bin weights must be finite and non-negative")
    sums = w.sum(-1, keepdims=True)
    if np.any(sums <= 0):
        raise ValueError("target bin weights must not be all zero: give at least one positive weight")
    return w / sums


def load_target(spec: str | os.PathLike | Sequence[float] | np.ndarray, num_bins: int = NUM_BINS,
                num_classes: int | None = None) -> str | np.ndarray:
    """A target given by name (``real`` or a preset) stays a string; a file or an array of bin
    weights becomes normalised weights (see :func:`check_weights`)."""
    if isinstance(spec, str) and spec in TARGETS:
        return spec
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.exists():
            raise ValueError(f"target {str(spec)!r} is neither a preset ({', '.join(TARGETS)}) nor an "
                             "existing file of bin weights (.json list, .npy, or text numbers)")
        if path.suffix == ".json":
            spec = json.loads(path.read_text())
        elif path.suffix == ".npy":
            spec = np.load(path)
        else:
            text = path.read_text().replace(",", " ").split()
            try:
                spec = [float(v) for v in text]
            except ValueError as err:
                raise ValueError(f"{path}: expected numbers separated by commas or spaces ({err})") from None
    return check_weights(spec, num_bins, num_classes)


def target_counts(weights: Sequence[float] | np.ndarray, ipc: int) -> np.ndarray:
    """Per-bin image counts summing to ``ipc``: quotas ``ipc * w_k / sum(w)``, floored, and the
    remaining images to the bins with the largest fractional parts (largest-remainder / Hamilton
    rounding; ties to the easier bin). Integer weights (histogram counts) are rounded exactly.
    ``weights`` may be one row or one row per class."""
    w = np.asarray(weights)
    if ipc < 0 or w.ndim not in (1, 2) or w.shape[-1] < 1:
        raise ValueError(f"need ipc >= 0 and (bins,) or (classes, bins) weights; got ipc={ipc}, "
                         f"weights of shape {w.shape}")
    if np.any(w < 0) or np.any(w.sum(-1) <= 0):
        raise ValueError("target weights must be non-negative with a positive sum per row")
    rows = np.atleast_2d(w)
    if np.issubdtype(rows.dtype, np.integer):  # exact: quota = ipc * w / total as a fraction
        total = rows.sum(-1, keepdims=True).astype(np.int64)
        num = int(ipc) * rows.astype(np.int64)
        base, frac = num // total, (num % total) / total
    else:
        quota = int(ipc) * rows.astype(np.float64) / rows.sum(-1, keepdims=True)
        base = np.floor(quota).astype(np.int64)
        frac = quota - base
    left = int(ipc) - base.sum(-1)
    order = np.argsort(-frac, axis=-1, kind="stable")  # largest fraction first, easier bin on ties
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(rows.shape[-1])[None].repeat(len(rows), 0), axis=-1)
    counts = base + (ranks < left[:, None])
    return counts[0] if w.ndim == 1 else counts
