"""Quality measures of a generated or distilled set, in a classifier's feature space and in
DGS's difficulty space.

* :func:`within_class_diversity`: mean over classes of the mean pairwise Euclidean distance
  between the features of the images of one class.
* :func:`coverage`: the fraction of real images whose nearest synthetic neighbour is closer than
  the median real-to-real nearest-neighbour distance (the "coverage" of Naeem et al., "Reliable
  Fidelity and Diversity Metrics for Generative Models", ICML 2020, with k = 1 and one radius for
  every real image: the median of their 1-NN distances).
* :func:`histogram_kl`: per class, ``KL(target || achieved)`` between a target distribution over
  DGS's difficulty bins and the histogram of a set's transformed difficulties (Li et al.,
  "Difficulty-guided Sampling", arXiv 2601.10090: the same KL DGS minimises).
* :func:`set_metrics`: diversity and coverage in the feature space of a difficulty classifier.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.sample.transform import NUM_BINS, histogram, kl_divergence


def within_class_diversity(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the mean pairwise Euclidean distance between the features of one class
    (classes with fewer than 2 images are skipped; nan if none has 2)."""
    features, labels = np.asarray(features, np.float64), np.asarray(labels)
    means = []
    for c in np.unique(labels):
        f = features[labels == c]
        if len(f) < 2:
            continue
        d = np.sqrt(np.maximum(((f[:, None] - f[None]) ** 2).sum(-1), 0.0))
        means.append(d[np.triu_indices(len(f), 1)].mean())
    return float(np.mean(means)) if means else float("nan")


def nearest_distances(a: np.ndarray, b: np.ndarray, exclude_self: bool = False, chunk: int = 1024) -> np.ndarray:
    """Distance from each row of ``a`` to its nearest row of ``b`` (row i of ``b`` excluded for row i
    of ``a`` with ``exclude_self``, for ``a is b``), in float64, in chunks of ``chunk`` rows."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bb = (b ** 2).sum(-1)
    out = np.empty(len(a))
    for i in range(0, len(a), chunk):
        d2 = (a[i:i + chunk] ** 2).sum(-1)[:, None] + bb[None] - 2.0 * a[i:i + chunk] @ b.T
        if exclude_self:
            rows = np.arange(i, min(i + chunk, len(a)))
            d2[rows - i, rows] = np.inf
        out[i:i + chunk] = np.sqrt(np.maximum(d2.min(-1), 0.0))
    return out


def coverage(real_features: np.ndarray, synthetic_features: np.ndarray) -> float:
    """Fraction of real images whose nearest synthetic neighbour is closer (strictly) than the
    median real-to-real nearest-neighbour distance (feature space)."""
    if len(real_features) < 2:
        raise ValueError(f"coverage needs at least 2 real images (a real-to-real distance), got {len(real_features)}")
    radius = np.median(nearest_distances(real_features, real_features, exclude_self=True))
    return float(np.mean(nearest_distances(real_features, synthetic_features) < radius))


def class_histograms(transformed: np.ndarray, labels: np.ndarray, num_classes: int,
                     num_bins: int = NUM_BINS) -> np.ndarray:
    """``(C, bins)`` normalised histograms of transformed scores in [0, 1] per class (all-zero rows
    for classes without images)."""
    h = np.stack([np.asarray(histogram(transformed, num_bins, np.asarray(labels) == c)) for c in range(num_classes)])
    return h / np.maximum(h.sum(-1, keepdims=True), 1)


def histogram_kl(weights: np.ndarray, transformed: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(C,)`` per class ``KL(weights_c || achieved_c)`` (:func:`jaxdd.sample.transform.kl_divergence`,
    smoothed), ``achieved_c`` the histogram of the class's ``transformed`` difficulties over the
    ``weights.shape[1]`` bins of [0, 1]."""
    weights = np.asarray(weights, np.float64)
    achieved = class_histograms(transformed, labels, weights.shape[0], weights.shape[1])
    return np.asarray([float(kl_divergence(weights[c], achieved[c])) for c in range(weights.shape[0])])


def set_metrics(classifier, images: np.ndarray, labels: np.ndarray, ds, max_real: int = 2000) -> dict:
    """Within-class diversity of ``images`` and coverage of (up to ``max_real``, the first) real test
    images of ``ds``, in the feature space of the classifier's first model (``net.embed``)."""
    from jaxdd.train import default_inference_batch

    net, variables = classifier.net, jax.tree.map(lambda v: v[0], classifier.variables)
    embed = jax.jit(lambda x: net.embed(variables, x))
    b = default_inference_batch()

    def feats(x):
        return np.concatenate([np.asarray(embed(jnp.asarray(x[i:i + b]))) for i in range(0, len(x), b)])

    syn = feats(np.asarray(images, np.float32))
    real = feats(np.asarray(ds.x_test[:max_real], np.float32))
    return {"diversity": within_class_diversity(syn, labels), "coverage": coverage(real, syn),
            "coverage_real_images": int(len(real))}
