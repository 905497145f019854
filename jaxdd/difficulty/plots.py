"""Pictures of a score: the easiest and hardest examples of each class, and per-class histograms."""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from jaxdd.data.dataset import Dataset
from jaxdd.utils.images import labelled_grid, save_figure, save_png


def extremes(scores: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class: (indices of the ``per_class`` lowest scores, ascending; of the highest,
    descending). Ties by ascending index."""
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        easy = idx[np.lexsort((idx, scores[idx]))]
        hard = idx[np.lexsort((idx, -scores[idx]))]
        out.append((easy[:per_class], hard[:per_class]))
    return out


def save_extremes_grid(path: str | os.PathLike, dataset: Dataset, scores: np.ndarray, per_class: int = 8) -> str:
    """PNG: one column per class (its name on top): its ``per_class`` easiest examples (easiest
    first, rows "easy 1".."easy k"), a blank row, then its ``per_class`` hardest (hardest first,
    rows "hard 1".."hard k")."""
    scores = np.asarray(scores, np.float64)
    blank = np.ones((1, *dataset.image_shape), np.float32)

    def filled(idx: np.ndarray) -> np.ndarray:  # per_class images, blank where a class has fewer
        return np.concatenate([dataset.denormalize(dataset.x_train[idx]), np.repeat(blank, per_class - len(idx), 0)])

    columns = [np.concatenate([filled(easy), blank, filled(hard)])
               for easy, hard in extremes(scores, dataset.y_train, dataset.num_classes, per_class)]
    rows = [f"easy {i + 1}" for i in range(per_class)] + [""] + [f"hard {i + 1}" for i in range(per_class)]
    return save_png(path, labelled_grid(columns, dataset.class_names, rows))


def histogram_grid_figure(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str], bins: int = 30,
                          title: str = "", xlabel: str = "score"):
    """Matplotlib figure: one histogram per class on shared bins (infinite scores are counted in
    the panel title, not drawn)."""
    from jaxdd.utils.images import pyplot

    plt = pyplot()

    scores = np.asarray(scores, np.float64)
    finite = np.isfinite(scores)
    lo, hi = (scores[finite].min(), scores[finite].max()) if finite.any() else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    n = len(class_names)
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.0 * rows), sharex=True, squeeze=False)
    for c, ax in enumerate(axes.ravel()):
        if c >= n:
            ax.axis("off")
            continue
        s = scores[labels == c]
        ax.hist(s[np.isfinite(s)], bins=edges, color="C0")
        n_inf = int(np.isinf(s).sum())
        ax.set_title(f"{class_names[c]}" + (f" (+{n_inf} inf)" if n_inf else ""), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_class_histograms(path: str | os.PathLike, scores: np.ndarray, labels: np.ndarray,
                          class_names: Sequence[str], title: str = "", xlabel: str = "score") -> str:
    return save_figure(path, histogram_grid_figure(scores, labels, class_names, title=title, xlabel=xlabel))


def class_summary(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """Per-class rows: count, mean, median, min, max (finite scores) and the number of +inf."""
    rows = []
    scores = np.asarray(scores, np.float64)
    for c, name in enumerate(list(class_names) + ["all"]):
        s = scores if name == "all" and c == len(class_names) else scores[labels == c]
        f = s[np.isfinite(s)]
        rows.append({"class": name, "n": int(len(s)),
                     "mean": float(f.mean()) if len(f) else float("nan"),
                     "median": float(np.median(f)) if len(f) else float("nan"),
                     "min": float(f.min()) if len(f) else float("nan"),
                     "max": float(f.max()) if len(f) else float("nan"),
                     "inf": int(np.isinf(s).sum())})
    return rows
