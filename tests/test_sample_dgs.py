"""DGS selection end to end on synthetic scores, the random baseline, and the difficulty classifier."""

import jax
import numpy as np
import pytest

from jaxdd.sample import dgs_select, random_select, target_counts
from jaxdd.difficulty.classifier import DifficultyClassifier, train_classifier
from jaxdd.train import TrainConfig
from test_sample_math import ref_objective, ref_transform_bounds


def make_scores(rng, per_class=(12, 15, 10), real_per_class=40):
    labels = np.repeat(np.arange(len(per_class)), per_class)
    scores = rng.beta(0.5, 3.0, size=len(labels)).astype(np.float32)
    real_labels = np.repeat(np.arange(len(per_class)), real_per_class)
    real = rng.beta(0.5, 3.0, size=len(real_labels)).astype(np.float32)
    return scores, labels, real, real_labels


def test_dgs_real_target_matches_per_class_reference(rng):
    scores, labels, real, real_labels = make_scores(rng)
    ipc = 6
    res = dgs_select(jax.random.key(0), scores, labels, ipc, "real", real_scores=real, real_labels=real_labels)
    assert res.indices.shape == (3, ipc)
    for c in range(3):
        own = np.flatnonzero(labels == c)
        # brute force over the grid {0, 1, 2}^2 (IPC 6), in float64 Python (test_sample_math's reference)
        grid = np.array([[ref_objective(scores[own], b, t) for t in range(3)] for b in range(3)])
        b, t = np.unravel_index(np.argmin(grid), grid.shape)  # first minimum: smallest b, then t
        assert np.sort(grid.ravel())[1] > grid[b, t] * (1 + 1e-3)  # a clear winner, so float32 agrees
        assert (res.b[c], res.t[c]) == (b, t)
        assert float(res.objective[c]) == pytest.approx(grid[b, t], rel=1e-4)
        # the real scores go through the pool's transform of the class; counts by largest remainder
        lo, hi = ref_transform_bounds(scores[own], b, t)
        assert (float(res.lo[c]), float(res.hi[c])) == (pytest.approx(lo, rel=1e-6), pytest.approx(hi, rel=1e-6))
        t_real = np.maximum(np.log(np.clip(real[real_labels == c], lo, hi) / lo) / np.log(hi / lo), 1e-4)
        hist = np.bincount(np.minimum((t_real * 10).astype(int), 9), minlength=10)
        assert res.target_counts[c].tolist() == target_counts(hist, ipc).tolist()
        np.testing.assert_allclose(res.pool_transformed[own], np.maximum(
            np.log(np.clip(scores[own], lo, hi) / lo) / np.log(hi / lo), 1e-4), rtol=1e-5, atol=1e-6)
        chosen = res.indices[c]
        assert len(set(chosen.tolist())) == ipc and np.all(labels[chosen] == c)
        # every bin gets min(target, available) before any shortfall filling
        got = np.bincount(np.minimum((res.pool_transformed[chosen[~res.filled[c]]] * 10).astype(int), 9), minlength=10)
        np.testing.assert_array_equal(got, np.minimum(res.target_counts[c], res.pool_counts[c]))
        assert res.filled[c].sum() == ipc - got.sum()
    assert res.target_counts.sum(1).tolist() == [ipc] * 3 and res.chosen_counts.sum(1).tolist() == [ipc] * 3


def test_dgs_presets_user_weights_and_keys(rng, tmp_path):
    scores, labels, _, _ = make_scores(rng, per_class=(20, 20))
    a = dgs_select(jax.random.key(1), scores, labels, 4, "hill")
    b = dgs_select(jax.random.key(1), scores, labels, 4, "hill")
    np.testing.assert_array_equal(a.indices, b.indices)  # same key, same choice
    assert a.target_counts.tolist() == [target_counts(np.exp(-0.5 * ((np.arange(10) + 0.5 - 5) / 2) ** 2), 4).tolist()] * 2
    others = [dgs_select(jax.random.key(s), scores, labels, 4, "uniform").indices for s in range(2, 6)]
    assert any(not np.array_equal(others[0], o) for o in others[1:])
    w = [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    (tmp_path / "w.json").write_text(str(w))
    hard = dgs_select(jax.random.key(0), scores, labels, 4, str(tmp_path / "w.json"))
    assert hard.target_counts.tolist() == [[0] * 9 + [4]] * 2
    for c in range(2):  # the hardest bin (holding at least the t+1 largest scores) is taken first
        bins = np.minimum((hard.pool_transformed * 10).astype(int), 9)
        in_bin9 = np.flatnonzero((labels == c) & (bins == 9))
        assert len(in_bin9) >= hard.t[c] + 1
        assert np.all(bins[hard.indices[c][~hard.filled[c]]] == 9)
        assert hard.filled[c].sum() == max(0, 4 - len(in_bin9))
    per_class = dgs_select(jax.random.key(0), scores, labels, 4, np.eye(10)[[0, 9]])
    assert per_class.target_counts[0, 0] == 4 and per_class.target_counts[1, 9] == 4


def test_dgs_errors_name_the_problem(rng):
    scores, labels, real, real_labels = make_scores(rng, per_class=(8, 3, 8))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"IPC=5 for class 1 \(shirt\) \(3 images\)"):
        dgs_select(key, scores, labels, 5, "uniform", class_names=["a", "shirt", "c"])
    with pytest.raises(ValueError, match=r"class 3 missing from the pool"):
        dgs_select(key, scores, labels, 2, "uniform", num_classes=4)
    with pytest.raises(ValueError, match="needs the real images"):
        dgs_select(key, scores, labels, 2, "real")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        dgs_select(key, scores * 3, labels, 2, "uniform")
    with pytest.raises(ValueError, match="one score per image"):
        dgs_select(key, scores[:-1], labels, 2, "uniform")
    with pytest.raises(ValueError, match="IPC=5"):
        random_select(key, labels, 5)


def test_random_select_per_class(rng):
    labels = rng.permutation(np.repeat(np.arange(4), 6))
    idx = random_select(jax.random.key(2), labels, 3)
    assert idx.shape == (4, 3)
    for c in range(4):
        assert len(set(idx[c].tolist())) == 3 and np.all(labels[idx[c]] == c)
    np.testing.assert_array_equal(idx, random_select(jax.random.key(2), labels, 3))


def test_classifier_trains_scores_and_round_trips(tiny_dataset, tmp_path):
    clf = train_classifier(jax.random.key(0), tiny_dataset, model="mlp",
                           config=TrainConfig(epochs=2, batch_size=30), num_models=2, progress=False)
    d = clf.scores(tiny_dataset.x_train[:10], tiny_dataset.y_train[:10])
    assert d.shape == (10,) and np.all((d >= 0) & (d <= 1))
    logits = np.asarray(jax.vmap(lambda v: clf.net.logits(v, tiny_dataset.x_train[:10]))(clf.variables), np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)  # (M, N, C); d = 1 - mean_m p_m(y|x)
    np.testing.assert_allclose(d, 1 - p[:, np.arange(10), tiny_dataset.y_train[:10]].mean(0), rtol=1e-5, atol=1e-6)
    clf.save(tmp_path / "clf")
    back = DifficultyClassifier.load(tmp_path / "clf", tiny_dataset)
    assert back.num_models == 2 and back.meta["model"] == "mlp"
    np.testing.assert_array_equal(back.scores(tiny_dataset.x_train[:10], tiny_dataset.y_train[:10]), d)
    with pytest.raises(FileNotFoundError, match="no difficulty classifier"):
        DifficultyClassifier.load(tmp_path / "nothing")
