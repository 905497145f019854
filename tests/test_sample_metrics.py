"""Set quality measures (jaxdd.sample.metrics) against hand-computed cases."""

import numpy as np
import pytest

from jaxdd.sample.metrics import coverage, histogram_kl, nearest_distances, within_class_diversity
from jaxdd.sample.transform import KL_EPS


def test_diversity_and_coverage_hand_cases():
    f = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [0.0, 3.0], [9.0, 9.0]])
    # class 0: one pair at distance 5; class 1: pairs 1, 3, 2 -> mean 2; class 2 alone: skipped
    assert within_class_diversity(f[:4], [0, 0, 1, 1]) == pytest.approx((5.0 + 2.0) / 2)
    assert within_class_diversity(np.vstack([f[:2], [[0.0, 0.0], [0.0, 1.0], [0.0, 3.0]]]), [0, 0, 1, 1, 1]) == \
        pytest.approx((5.0 + 2.0) / 2)
    assert np.isnan(within_class_diversity(f[:2], [0, 1]))  # no class with 2 images
    # real points on a line at 0, 1, 2, 10: nearest-neighbour distances 1, 1, 1, 8 -> median 1
    real = np.array([[0.0], [1.0], [2.0], [10.0]])
    np.testing.assert_allclose(nearest_distances(real, real, exclude_self=True), [1, 1, 1, 8])
    np.testing.assert_allclose(nearest_distances(real, real, exclude_self=True, chunk=3), [1, 1, 1, 8])  # chunked
    assert coverage(real, np.array([[0.5], [10.2]])) == pytest.approx(3 / 4)  # 0, 1, 10 within 1 (strictly)
    assert coverage(real, np.array([[100.0]])) == 0.0
    with pytest.raises(ValueError, match="at least 2 real"):
        coverage(real[:1], real)


def test_histogram_kl_hand_case():
    # 2 classes, 2 bins of [0, 1]; class 0 target (0.5, 0.5), achieved 0.1, 0.2 | 0.9 -> (2/3, 1/3);
    # class 1 target (1, 0), achieved 0.7 -> (0, 1)
    weights = np.array([[0.5, 0.5], [1.0, 0.0]])
    kl = histogram_kl(weights, np.array([0.1, 0.2, 0.9, 0.7]), np.array([0, 0, 0, 1]))

    def ref(p, q):  # the smoothed KL written out: (p + eps) and (q + eps), each renormalised
        p, q = np.asarray(p) + KL_EPS, np.asarray(q) + KL_EPS
        p, q = p / p.sum(), q / q.sum()
        return float(np.sum(p * np.log(p / q)))

    # float32 inside kl_divergence: relative error ~1e-6 on values of order 0.06 and 20
    np.testing.assert_allclose(kl, [ref([0.5, 0.5], [2 / 3, 1 / 3]), ref([1, 0], [0, 1])], rtol=1e-4)
    assert kl[0] == pytest.approx(0.5 * np.log(0.5 / (2 / 3)) + 0.5 * np.log(0.5 / (1 / 3)), rel=1e-3)
