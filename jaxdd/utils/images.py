"""PNG output: image grids of (distilled) sets and simple plots, written atomically."""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from jaxdd.utils.io import atomic_path


def image_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Tile ``images`` (N, H, W, C) with values in [0, 1] into one uint8 (rows*H, cols*W, 3) array.

    ``nrow`` images per row (default: a square-ish grid); grey images become RGB.
    """
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    if images.ndim != 4:
        raise ValueError(f"image_grid expects (N, H, W, C) images, got shape {images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    n, h, w, _ = images.shape
    cols = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = max(1, int(math.ceil(n / cols)))
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    grid = (grid * 255 + 0.5).astype(np.uint8)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def upscale_factor(size: int, min_size: int = 64) -> int:
    """The integer nearest-neighbour factor that makes a ``size``-pixel image at least ``min_size`` pixels."""
    return max(1, int(math.ceil(min_size / max(int(size), 1))))


def save_png(path: str | os.PathLike, image: np.ndarray) -> str:
    """Write a uint8 (H, W, 3) array as a PNG atomically."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")
    return str(path)


def save_image_grid(path: str | os.PathLike, images: np.ndarray, nrow: int | None = None,
                    scale: int | None = None) -> str:
    """Write ``images`` (N, H, W, C) in [0, 1] as a PNG grid; small images are upscaled (nearest
    neighbour) to at least 64 pixels."""
    scale = scale or upscale_factor(np.asarray(images).shape[1])
    return save_png(path, image_grid(images, nrow=nrow, scale=scale))


FONT_SIZE = 12


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    """``text`` shortened with an ellipsis until it is at most ``width`` pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def labelled_grid(columns: Sequence[np.ndarray], names: Sequence[str] | None = None,
                  row_names: Sequence[str] | None = None, *, pad: int = 2, min_size: int = 64,
                  max_width: int = 4096) -> np.ndarray:
    """Tile image columns into one uint8 (H, W, 3) array: ``columns[j]`` (n_j, h, w, C) in [0, 1]
    top to bottom in column j (shorter columns are padded with white), each image upscaled by the
    integer nearest-neighbour factor ``s = ceil(min_size / h)`` (lowered so the image area stays
    within ``max_width`` pixels). ``names`` are written above the columns (a band of
    ``FONT_SIZE + 3 pad`` rows), ``row_names`` left of the rows; long names are shortened with "…".

    Geometry: the image area starts at (top, left) = (band height, row-name width) and image (i, j)
    occupies rows ``top + pad + i (s h + pad)`` ..., columns ``left + pad + j (s w + pad)`` ...
    """
    from PIL import Image, ImageDraw

    columns = [np.asarray(c, np.float32) for c in columns]
    if not columns or any(c.ndim != 4 for c in columns):
        raise ValueError("labelled_grid expects a non-empty list of (n, H, W, C) image arrays")
    shape = next((c.shape[1:] for c in columns if len(c)), columns[0].shape[1:])
    if any(len(c) and c.shape[1:] != shape for c in columns):
        raise ValueError(f"every image must have the same shape, got {sorted({c.shape[1:] for c in columns})}")
    if names is not None and len(names) != len(columns):
        raise ValueError(f"{len(names)} names for {len(columns)} columns; give one name per column")
    h, w, _ = shape
    rows = max(1, max(len(c) for c in columns))
    if row_names is not None and len(row_names) != rows:
        raise ValueError(f"{len(row_names)} row names for {rows} rows; give one name per row")
    s = upscale_factor(h, min_size)
    while s > 1 and len(columns) * (s * w + pad) + pad > max_width:
        s -= 1
    grid = np.full((rows * (s * h + pad) + pad, len(columns) * (s * w + pad) + pad, 3), 255, np.uint8)
    for j, col in enumerate(columns):
        col = np.clip(col, 0.0, 1.0)
        col = np.repeat(col, 3, axis=-1) if col.shape[-1] == 1 else col[..., :3]
        col = (col * 255 + 0.5).astype(np.uint8).repeat(s, axis=1).repeat(s, axis=2)
        for i, tile in enumerate(col):
            y, x = pad + i * (s * h + pad), pad + j * (s * w + pad)
            grid[y:y + s * h, x:x + s * w] = tile
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    top = FONT_SIZE + 3 * pad if names is not None else 0
    left = 0
    if row_names is not None:
        left = int(max((probe.textlength(str(n), font=font) for n in row_names), default=0)) + 3 * pad
    canvas = Image.new("RGB", (left + grid.shape[1], top + grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (left, top))
    draw = ImageDraw.Draw(canvas)
    if names is not None:
        for j, name in enumerate(names):
            text = _fit(draw, str(name), font, s * w + pad)
            cx = left + pad + j * (s * w + pad) + s * w / 2
            draw.text((cx, top - pad), text, fill="black", font=font, anchor="mb")
    if row_names is not None:
        for i, name in enumerate(row_names):
            cy = top + pad + i * (s * h + pad) + s * h / 2
            draw.text((left - pad, cy), str(name), fill="black", font=font, anchor="rm")
    return np.asarray(canvas)


def class_columns(images: np.ndarray, labels: np.ndarray, num_classes: int,
                  per_class: int | None = None) -> list[np.ndarray]:
    """The images of each class (hard labels, or the argmax of soft-label rows), in class order,
    at most ``per_class`` each."""
    labels = np.asarray(labels)
    if labels.ndim == 2:  # soft labels: use the argmax class
        labels = labels.argmax(-1)
    images = np.asarray(images)
    return [images[labels == c][:per_class] for c in range(num_classes)]


def class_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, class_names: Sequence[str] | None = None,
               per_class: int | None = None) -> np.ndarray:
    """uint8 (H, W, 3) grid: one column per class (its name on top; the class index when
    ``class_names`` is None), one row per image of that class, upscaled (:func:`labelled_grid`)."""
    names = [str(c) for c in range(num_classes)] if class_names is None else list(class_names)
    return labelled_grid(class_columns(images, labels, num_classes, per_class), names)


def save_class_grid(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray,
                    num_classes: int, per_class: int | None = None,
                    class_names: Sequence[str] | None = None) -> str:
    """Write :func:`class_grid` (classes as columns, names on top, images per class as rows) as a PNG."""
    return save_png(path, class_grid(images, labels, num_classes, class_names, per_class))


def save_figure(path: str | os.PathLike, fig) -> str:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def pyplot():
    """``matplotlib.pyplot``, on the file-only Agg backend unless pyplot is already in use.

    Selecting Agg after pyplot was imported (a notebook with ``%matplotlib inline``) would silence
    the user's ``plt.show()``, so an existing backend is left alone."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram_figure(series: dict[str, np.ndarray], bins: int | Sequence[float] = 10,
                     title: str = "", xlabel: str = "score"):
    """A matplotlib figure overlaying normalised histograms of several named score arrays."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in series.items():
        ax.hist(np.asarray(values).ravel(), bins=bins, alpha=0.5, density=True, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    return fig
