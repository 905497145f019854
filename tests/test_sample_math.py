"""DGS math: log transform, (b, t) search, target counts, per-bin sampling (methods.md §5).

Each piece is checked on hand-made cases and against an independent numpy / pure-Python version.
"""

import json
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.sample import (bin_index, clip_bounds, clip_objective, histogram, kl_divergence, load_target,
                          log_transform, preset_weights, random_selection, sample_by_bins,
                          search_clip_counts, target_counts, transform_scores)

# ---------------------------------------------------------------- independent numpy reference


def ref_transform(scores, b, t):
    s = np.sort(np.asarray(scores, np.float64))
    lo = s[b] if s[b] > 0 else 1e-4
    hi = s[len(s) - 1 - t]
    if hi <= lo:
        return np.full(len(scores), 1e-4)
    out = [math.log(min(max(d, lo), hi) / lo) / math.log(hi / lo) for d in scores]
    return np.maximum(out, 1e-4)


def ref_hist(x):
    counts = [0.0] * 10
    for v in x:
        counts[min(int(v * 10), 9)] += 1
    return np.array(counts)


def ref_kl(p, q, eps=1e-6):
    p, q = np.asarray(p) + eps, np.asarray(q) + eps
    p, q = p / p.sum(), q / q.sum()
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def ref_objective(scores, b, t):
    if b + t >= len(scores) - 1:
        return math.inf
    raw, moved = ref_hist(scores), ref_hist(ref_transform(scores, b, t))
    return 0.5 * ref_kl(raw, moved) + 0.5 * ref_kl(np.ones(10), moved)


def ref_counts(weights, ipc):
    """Largest remainder with exact fractions; ties to the lower bin."""
    total = sum(Fraction(w) for w in weights)
    quotas = [Fraction(w) * ipc / total for w in weights]
    base = [math.floor(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda k: (-(quotas[k] - base[k]), k))
    for k in order[: ipc - sum(base)]:
        base[k] += 1
    return base


# ---------------------------------------------------------------- transform


def test_log_transform_hand_made():
    d = np.array([0.0, 0.001, 0.01, 0.1, 1.0], np.float32)
    # b = t = 0: lo = 1e-4 (smallest is 0), hi = 1; T(d) = log(d / 1e-4) / log(1e4)
    np.testing.assert_allclose(transform_scores(d, 0, 0), [1e-4, 0.25, 0.5, 0.75, 1.0], atol=1e-6)
    # b = t = 1: lo = 0.001, hi = 0.1; the two smallest are floored, 1.0 is clipped to hi
    lo, hi = clip_bounds(d, 1, 1)
    assert float(lo) == pytest.approx(0.001) and float(hi) == pytest.approx(0.1)
    np.testing.assert_allclose(log_transform(d, lo, hi), [1e-4, 1e-4, 0.5, 1.0, 1.0], atol=1e-6)
    # degenerate range (all equal) maps everything to the floor
    np.testing.assert_allclose(transform_scores(np.full(4, 0.3), 0, 0), np.full(4, 1e-4), rtol=1e-6)  # float32 1e-4


def test_transform_matches_reference_and_respects_mask(rng):
    scores = rng.beta(0.3, 3.0, size=40).astype(np.float32)
    for b, t in [(0, 0), (2, 1), (3, 4)]:
        np.testing.assert_allclose(transform_scores(scores, b, t), ref_transform(scores, b, t), rtol=1e-5, atol=1e-6)
    # with a mask the bounds come from the masked scores only
    mask = np.arange(40) % 3 == 0
    lo, hi = clip_bounds(scores, 1, 2, mask)
    np.testing.assert_allclose([lo, hi], ref_transform_bounds(scores[mask], 1, 2), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(transform_scores(scores, 1, 2, mask))[mask],
                               ref_transform(scores[mask], 1, 2), rtol=1e-5, atol=1e-6)


def ref_transform_bounds(scores, b, t):
    s = np.sort(scores)
    return (s[b] if s[b] > 0 else 1e-4), s[len(s) - 1 - t]


def test_histogram_and_kl_match_reference(rng):
    x = rng.uniform(size=57).astype(np.float32)
    x[:3] = [0.0, 1.0, 0.999]
    np.testing.assert_array_equal(histogram(x), ref_hist(x))
    np.testing.assert_array_equal(np.asarray(bin_index(np.array([0.0, 0.05, 0.15, 0.95, 1.0]))), [0, 0, 1, 9, 9])
    mask = x > 0.5
    np.testing.assert_array_equal(histogram(x, mask=mask), ref_hist(x[mask]))
    p, q = rng.integers(0, 5, size=10), rng.integers(0, 5, size=10)
    assert float(kl_divergence(p, q)) == pytest.approx(ref_kl(p, q), rel=1e-4)
    assert float(kl_divergence(p, p)) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- (b, t) search


def test_objective_and_search_match_brute_force(rng):
    scores = rng.beta(0.4, 4.0, size=25).astype(np.float32)
    grid = np.array([[ref_objective(scores, b, t) for t in range(4)] for b in range(4)])
    found = search_clip_counts(scores, 4)
    np.testing.assert_allclose(found.grid, grid, rtol=1e-4)
    b, t = np.unravel_index(np.argmin(grid), grid.shape)
    assert (int(found.b), int(found.t)) == (b, t)
    assert float(found.objective) == pytest.approx(grid[b, t], rel=1e-4)
    assert float(clip_objective(scores, 24, 0)) == math.inf  # no range left


def test_search_finds_constructed_optimum():
    # By Gibbs' inequality 1/2 KL(P || Q) + 1/2 KL(U || Q) is smallest at Q = (P + U) / 2, where it
    # equals the Jensen-Shannon divergence JS(P, U). Build 80 scores whose raw histogram is
    # P = [78, 0, ..., 0, 2] / 80 and whose T_{1,2} histogram is exactly 80 (P + U) / 2 =
    # [43, 4, 4, 4, 4, 4, 4, 4, 4, 5]: so (b, t) = (1, 2) is the optimum of the grid.
    lo, hi = 1e-3, 1e-2
    t_values = np.concatenate([
        [0.0],  # lo itself (T = 0, floored into bin 0)
        0.002 * np.arange(1, 42),  # 41 more easy scores in bin 0
        np.concatenate([k / 10 + 0.01 + 0.02 * np.arange(4) for k in range(1, 9)]),  # 4 per bin 1..8
        [0.93, 0.96, 1.0]])  # bin 9, the last one is hi
    scores = np.concatenate([[0.0], lo * (hi / lo) ** t_values, [0.92, 0.95]]).astype(np.float32)
    assert len(scores) == 80 and ref_hist(scores).tolist() == [78] + [0] * 8 + [2]
    found = search_clip_counts(scores, 4)
    assert (int(found.b), int(found.t)) == (1, 2)
    assert float(found.lo) == pytest.approx(lo, rel=1e-6) and float(found.hi) == pytest.approx(hi, rel=1e-6)
    assert histogram(transform_scores(scores, 1, 2)).tolist() == [43] + [4] * 8 + [5]
    p, u = ref_hist(scores) / 80, np.full(10, 0.1)
    # JS(P, U), with the empty bins smoothed as the objective smooths them (eps added to counts, not
    # to probabilities: smoothing the probabilities instead moves the value by 5e-5 relative)
    js = 0.5 * ref_kl(80 * p, 80 * (p + u) / 2) + 0.5 * ref_kl(np.ones(10), 80 * (p + u) / 2)
    assert float(found.objective) == pytest.approx(js, rel=1e-5)
    kl0 = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)  # noqa: E731  (unsmoothed)
    assert float(found.objective) == pytest.approx(0.5 * kl0(p, (p + u) / 2) + 0.5 * kl0(u, (p + u) / 2), rel=1e-3)
    assert np.all(np.asarray(found.grid) >= float(found.objective))


def test_search_jits_and_vmaps_over_class_masks(rng):
    scores = rng.beta(0.3, 3.0, size=30).astype(np.float32)
    labels = np.repeat(np.arange(3), 10)
    masks = labels[None] == np.arange(3)[:, None]
    batched = jax.jit(jax.vmap(lambda m: search_clip_counts(scores, 2, m)))(masks)
    for c in range(3):
        single = search_clip_counts(scores[labels == c], 2)
        assert (int(batched.b[c]), int(batched.t[c])) == (int(single.b), int(single.t))
        np.testing.assert_allclose(batched.grid[c], single.grid, rtol=1e-5)


# ---------------------------------------------------------------- targets


@pytest.mark.parametrize("weights,ipc,expected", [
    ([1, 1, 1], 10, [4, 3, 3]),  # equal fractions: the easier bin first
    ([7, 2, 1], 5, [4, 1, 0]),  # quotas 3.5, 1, 0.5: tie of remainders -> bin 0
    ([0.5, 0.3, 0.2], 1, [1, 0, 0]),
    ([0.3, 0.7], 10, [3, 7]),
    ([0, 0, 5], 4, [0, 0, 4]),
])
def test_target_counts_hand_made(weights, ipc, expected):
    assert target_counts(np.asarray(weights), ipc).tolist() == expected


def test_target_counts_sum_to_ipc_with_largest_remainder(rng):
    for _ in range(50):
        hist = rng.integers(0, 40, size=10)
        hist[rng.integers(10)] += 1
        ipc = int(rng.integers(1, 60))
        counts = target_counts(hist, ipc)
        assert counts.sum() == ipc and counts.tolist() == ref_counts(hist.tolist(), ipc)
        quotas = ipc * hist / hist.sum()
        assert np.all((counts == np.floor(quotas)) | (counts == np.ceil(quotas)))
    rows = rng.uniform(size=(4, 10))
    counts = target_counts(rows, 7)
    assert counts.shape == (4, 10) and np.all(counts.sum(1) == 7)
    for row, c in zip(rows, counts):  # floats: same as exact rounding of the float weights
        assert c.tolist() == ref_counts(row.tolist(), 7)


def test_presets_have_their_shapes():
    for name in ("uniform", "hill", "slope", "cliff"):
        assert preset_weights(name).sum() == pytest.approx(1.0)
    assert np.ptp(preset_weights("uniform")) == 0
    hill = preset_weights("hill")
    np.testing.assert_allclose(hill, hill[::-1]) and hill.argmax() in (4, 5)
    assert np.all(np.diff(preset_weights("slope")) < 0)
    np.testing.assert_array_equal(preset_weights("cliff") > 0, np.arange(10) < 5)
    assert target_counts(preset_weights("cliff"), 10).tolist() == [2, 2, 2, 2, 2, 0, 0, 0, 0, 0]


def test_load_target_from_files_and_errors(tmp_path):
    w = [1, 2, 3, 4, 0, 0, 0, 0, 0, 0]
    (tmp_path / "t.json").write_text(json.dumps(w))
    np.save(tmp_path / "t.npy", np.asarray(w, np.float32))
    (tmp_path / "t.txt").write_text("1, 2 3\n4 0 0 0 0 0 0\n")
    for name in ("t.json", "t.npy", "t.txt"):
        np.testing.assert_allclose(load_target(tmp_path / name), np.asarray(w) / 10)
    assert load_target("hill") == "hill" and load_target("real") == "real"
    with pytest.raises(ValueError, match="neither a preset"):
        load_target("bell")
    with pytest.raises(ValueError, match=r"\(10,\)"):
        load_target([1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        load_target([-1] + [1] * 9)
    with pytest.raises(ValueError, match="all zero"):
        load_target([0] * 10)
    per_class = load_target(np.ones((3, 10)), num_classes=3)
    assert per_class.shape == (3, 10)
    with pytest.raises(ValueError, match=r"\(4, 10\)"):
        load_target(np.ones((3, 10)), num_classes=4)


# ---------------------------------------------------------------- sampling


def ref_sample(perm, bins, counts, k, mask):
    """Slow loop with the same random ranks: per bin the lowest ranks, then fill by rank."""
    rank = np.empty(len(perm), int)
    rank[np.asarray(perm)] = np.arange(len(perm))
    chosen, filled = [], []
    for j, n in enumerate(counts):
        members = sorted((i for i in range(len(bins)) if mask[i] and bins[i] == j), key=lambda i: rank[i])
        chosen += members[:n]
    rest = sorted((i for i in range(len(bins)) if mask[i] and i not in chosen), key=lambda i: rank[i])
    filled = rest[: k - len(chosen)]
    return chosen, filled


def test_sample_by_bins_matches_slow_loop(rng):
    n, k = 40, 8
    for trial in range(5):
        key = jax.random.key(trial)
        bins = rng.integers(0, 10, size=n)
        mask = rng.uniform(size=n) < 0.6
        counts = target_counts(rng.integers(0, 5, size=10) + np.eye(10, dtype=int)[trial], k)
        sel = sample_by_bins(key, bins, counts, k, mask)
        chosen, filled = ref_sample(jax.random.permutation(key, n), bins, counts, k, mask)
        assert np.asarray(sel.indices).tolist() == chosen + filled
        assert np.asarray(sel.filled).tolist() == [False] * len(chosen) + [True] * len(filled)


def test_sampling_fills_shortfall_without_repeats():
    # bins 0..2 hold 1, 2, 7 candidates; the target wants 3 from bin 0 and 3 from bin 1
    bins = np.array([0, 1, 1, 2, 2, 2, 2, 2, 2, 2])
    counts = np.array([3, 3, 0])
    for seed in range(10):
        sel = sample_by_bins(jax.random.key(seed), bins, counts, 6)
        idx = np.asarray(sel.indices)
        assert len(set(idx.tolist())) == 6  # no image twice
        assert set(idx[:3].tolist()) == {0, 1, 2}  # every bin-0/1 image taken
        assert np.all(bins[idx[3:]] == 2) and np.asarray(sel.filled).tolist() == [False] * 3 + [True] * 3


def test_sampling_is_uniform_within_a_bin_and_keyed():
    bins = np.array([0, 0, 0, 0, 1, 1])
    counts = np.array([2, 1])
    keys = jax.random.split(jax.random.key(0), 2000)
    idx = np.asarray(jax.jit(jax.vmap(lambda k: sample_by_bins(k, bins, counts, 3).indices))(keys))
    freq = np.bincount(idx.ravel(), minlength=6) / len(keys)
    np.testing.assert_allclose(freq, [0.5, 0.5, 0.5, 0.5, 0.5, 0.5], atol=0.05)  # 2 of 4, 1 of 2
    assert np.all(np.sort(idx, 1)[:, :-1] != np.sort(idx, 1)[:, 1:])
    a = sample_by_bins(jax.random.key(3), bins, counts, 3).indices
    np.testing.assert_array_equal(a, sample_by_bins(jax.random.key(3), bins, counts, 3).indices)
    assert any(not np.array_equal(a, sample_by_bins(jax.random.key(s), bins, counts, 3).indices) for s in range(4, 10))


def test_random_selection_respects_mask():
    mask = jnp.arange(12) % 2 == 1
    sel = random_selection(jax.random.key(1), 12, 5, mask)
    idx = np.asarray(sel.indices)
    assert len(set(idx.tolist())) == 5 and np.all(idx % 2 == 1)
