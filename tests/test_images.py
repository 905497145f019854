"""Readable pictures: class grids (classes as columns, names on top, IPC as rows, upscaled), the
score extremes grid, and named lines in the distillation driver's difficulty plot."""

import numpy as np
import pytest
from PIL import Image

from jaxdd.difficulty.plots import save_extremes_grid
from jaxdd.distill.driver import _plot_history
from jaxdd.utils.images import FONT_SIZE, class_grid, labelled_grid, save_class_grid


def _cell(grid, top, i, j, s, h, w, pad=2):
    y, x = top + pad + i * (s * h + pad), pad + j * (s * w + pad)
    return grid[y:y + s * h, x:x + s * w]


def test_class_grid_has_classes_as_columns_ipc_as_rows_upscaled(tmp_path):
    c, ipc, h, w = 3, 2, 7, 5
    # image value encodes (class, row): 0.1 * class + 0.4 * row, labels shuffled
    labels = np.array([2, 0, 1, 0, 2, 1])
    row = np.array([0, 0, 0, 1, 1, 1])
    vals = 0.1 * labels + 0.4 * row
    images = np.broadcast_to(vals[:, None, None, None], (6, h, w, 1)).astype(np.float32)
    grid = class_grid(images, labels, c, ["a", "b", "c"])
    s = int(np.ceil(64 / h))  # 10: nearest-neighbour upscale to >= 64 px
    top = FONT_SIZE + 3 * 2
    assert grid.dtype == np.uint8 and grid.shape == (top + ipc * (s * h + 2) + 2, c * (s * w + 2) + 2, 3)
    for j in range(c):
        for i in range(ipc):
            tile = _cell(grid, top, i, j, s, h, w)
            assert tile.shape == (s * h, s * w, 3)
            assert np.all(tile == int((0.1 * j + 0.4 * i) * 255 + 0.5)), (i, j)
        header = grid[:top, 2 + j * (s * w + 2): 2 + (j + 1) * (s * w + 2) - 2]
        assert header.min() < 128  # a name is drawn above every column
    bare = labelled_grid([images[labels == k] for k in range(c)])  # no names: no header band
    assert bare.shape == (ipc * (s * h + 2) + 2, c * (s * w + 2) + 2, 3)
    np.testing.assert_array_equal(bare, grid[top:])
    path = save_class_grid(tmp_path / "g.png", images, labels, c, class_names=["a", "b", "c"])
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), grid)


def test_class_grid_soft_labels_missing_images_and_bad_input():
    images = np.zeros((3, 4, 4, 3), np.float32)
    soft = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])  # every image is class 0; class 1 stays white
    grid = labelled_grid([images[:2], images[:0]])
    s = 16
    assert np.all(_cell(grid, 0, 1, 0, s, 4, 4) == 0) and np.all(_cell(grid, 0, 0, 1, s, 4, 4) == 255)
    np.testing.assert_array_equal(class_grid(images, soft, 2, per_class=2)[-grid.shape[0]:], grid)
    with pytest.raises(ValueError, match="one name per column"):
        labelled_grid([images], ["a", "b"])
    with pytest.raises(ValueError, match="same shape"):
        labelled_grid([images, np.zeros((1, 5, 5, 3))])


def test_extremes_grid_columns_are_classes(tiny_dataset, tmp_path):
    scores = np.arange(len(tiny_dataset.y_train), dtype=np.float64)
    path = save_extremes_grid(tmp_path / "x.png", tiny_dataset, scores, per_class=2)
    img = np.asarray(Image.open(path).convert("RGB"))
    h = tiny_dataset.image_shape[0]
    s = int(np.ceil(64 / h))
    columns = tiny_dataset.num_classes
    # a left band with the row names, then num_classes columns of 5 rows (2 easy, blank, 2 hard)
    assert img.shape[0] == FONT_SIZE + 6 + 5 * (s * h + 2) + 2
    assert img.shape[1] > columns * (s * h + 2) + 2


def test_difficulty_plot_names_every_line(tmp_path, monkeypatch):
    import matplotlib.axes

    names = ["T-shirt", "Trouser", "Bag"]
    history = [{"iteration": i, "grand": 1.0 + i, "grand_per_class": [1.0, 2.0, 3.0 + i]} for i in range(3)]
    seen = []
    orig = matplotlib.axes.Axes.legend

    def spy(self, *a, **k):
        leg = orig(self, *a, **k)
        seen.append([t.get_text() for t in leg.get_texts()])
        return leg

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", spy)
    _plot_history(tmp_path, history, names)
    assert seen == [names + ["mean"]] and (tmp_path / "difficulty.png").exists()
    _plot_history(tmp_path, history)  # no names given: the class indices
    assert seen[-1] == ["class 0", "class 1", "class 2", "mean"]
