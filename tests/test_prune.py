"""Selecting subsets by score (jaxdd.prune)."""

import numpy as np
import pytest

from jaxdd.data import from_arrays, load_dataset
from jaxdd.prune import keep_count, load_subset, prune_dataset, save_subset, select_indices


def test_keep_count_rounding():
    assert [keep_count(n, 0.5) for n in (7, 10, 3, 1, 0)] == [4, 5, 2, 1, 0]
    assert keep_count(10, 0.01) == 1 and keep_count(10, 1.0) == 10 and keep_count(9, 0.6) == 5


def test_per_class_counts_and_order():
    r = np.random.default_rng(0)
    labels = np.array([0] * 7 + [1] * 10 + [2] * 3)
    r.shuffle(labels)
    scores = r.normal(size=len(labels))
    for order in ("easy", "hard", "random"):
        idx = select_indices(scores, 0.5, order, labels)
        assert np.all(np.diff(idx) > 0)
        np.testing.assert_array_equal(np.bincount(labels[idx], minlength=3), [4, 5, 2])
    easy = select_indices(scores, 0.5, "easy", labels)
    hard = select_indices(scores, 0.5, "hard", labels)
    for c in range(3):  # slow check: the kept easy scores are the smallest of their class
        sc = np.sort(scores[labels == c])
        k = keep_count(len(sc), 0.5)
        np.testing.assert_allclose(np.sort(scores[easy][labels[easy] == c]), sc[:k])
        np.testing.assert_allclose(np.sort(scores[hard][labels[hard] == c]), sc[-k:])


def test_ties_global_inf_and_random_seed():
    scores = np.array([1.0, 0.0, 1.0, 1.0, 0.0, np.inf])
    # global: 3 of 6 kept; ties broken by ascending index
    np.testing.assert_array_equal(select_indices(scores, 0.5, "easy", per_class=False), [0, 1, 4])
    np.testing.assert_array_equal(select_indices(scores, 0.5, "hard", per_class=False), [0, 2, 5])
    a = select_indices(scores, 0.5, "random", per_class=False, seed=1)
    np.testing.assert_array_equal(a, select_indices(scores, 0.5, "random", per_class=False, seed=1))
    draws = {tuple(select_indices(np.zeros(50), 0.5, "random", per_class=False, seed=s)) for s in range(5)}
    assert len(draws) == 5


def test_bad_input():
    with pytest.raises(ValueError, match=r"keep must be a fraction in \(0, 1\]"):
        select_indices(np.zeros(4), 0.0, "easy", per_class=False)
    with pytest.raises(ValueError, match=r"keep must be a fraction in \(0, 1\]"):
        select_indices(np.zeros(4), 1.5, "easy", per_class=False)
    with pytest.raises(ValueError, match="unknown order"):
        select_indices(np.zeros(4), 0.5, "middle", per_class=False)
    with pytest.raises(ValueError, match="NaN"):
        select_indices(np.array([0.0, np.nan]), 0.5, per_class=False)
    with pytest.raises(ValueError, match="needs labels"):
        select_indices(np.zeros(4), 0.5)
    with pytest.raises(ValueError, match="must align"):
        select_indices(np.zeros(4), 0.5, labels=np.zeros(3, int))


def test_prune_dataset_and_subset_file(tiny_dataset, tmp_path):
    ds = tiny_dataset
    scores = np.arange(len(ds.y_train))[::-1].astype(float)  # later examples are easier
    sub = prune_dataset(ds, scores, 0.3, "easy")
    np.testing.assert_array_equal(np.bincount(sub.y_train), [6, 6, 6])
    np.testing.assert_array_equal(sub.original_indices, np.concatenate([np.arange(14, 20), np.arange(34, 40),
                                                                       np.arange(54, 60)]))
    with pytest.raises(ValueError, match="training examples; score the same dataset"):
        prune_dataset(ds, scores[:-1], 0.3)
    path = save_subset(tmp_path / "subset.npz", ds, sub, {"keep": 0.3}, scores[sub.original_indices])
    loaded = load_dataset(path)  # every method reads it through --dataset subset.npz
    assert len(loaded.y_train) == 18 and len(loaded.y_test) == len(ds.y_test)
    np.testing.assert_allclose(loaded.denormalize(loaded.x_train), ds.denormalize(sub.x_train), atol=1e-6)
    again = load_subset(ds, path)  # the full dataset's normalisation
    np.testing.assert_array_equal(again.x_train, sub.x_train)
    np.testing.assert_array_equal(again.original_indices, sub.original_indices)
    # a subset of a subset keeps indices into the full training split
    sub2 = prune_dataset(sub, np.zeros(18), 0.5, "random", seed=0)
    assert set(sub2.original_indices) <= set(sub.original_indices)
    other = from_arrays("other", np.zeros((5, 4, 4, 1), np.uint8), np.zeros(5), np.zeros((2, 4, 4, 1), np.uint8),
                        np.zeros(2))
    with pytest.raises(ValueError, match="does not have"):
        load_subset(other, path)
