"""Difficulty-guided sampling (DGS) of a final distilled set from a larger pool
(Li et al., arXiv 2601.10090; SumomoTaku/DiffGuideSamp).

* :mod:`~jaxdd.sample.transform`: the clipped log transform and the (b, t) search by KL;
* :mod:`~jaxdd.sample.targets`: target distributions (real histogram, presets, user weights) and
  largest-remainder rounding to per-bin counts;
* :mod:`~jaxdd.sample.select`: per-bin sampling without replacement with shortfall filling;
* :mod:`~jaxdd.sample.dgs`: the per-class DGS selection and the random baseline;
* :mod:`~jaxdd.sample.pool`: the pool format (candidate images with provenance);
* :mod:`~jaxdd.sample.guided`: sets generated from a diffusion prior with DAG / ACS guidance and
  DGS on the generated pool (``jaxdd generate``).

The difficulty classifier that scores pool and real images is
:mod:`jaxdd.difficulty.classifier`.
"""

from jaxdd.sample.dgs import DGSResult, Transforms, check_pool_classes, dgs_select, fit_transforms, random_select
from jaxdd.sample.select import Selection, random_selection, sample_by_bins
from jaxdd.sample.targets import PRESETS, TARGETS, check_weights, load_target, preset_weights, target_counts
from jaxdd.sample.transform import (ClipSearch, bin_index, clip_bounds, clip_objective, default_grid_size,
                                    histogram, kl_divergence, log_transform, search_clip_counts,
                                    transform_scores)

__all__ = [
    "ClipSearch", "DGSResult", "PRESETS", "Selection", "TARGETS", "Transforms", "fit_transforms", "bin_index", "check_pool_classes",
    "check_weights", "clip_bounds", "clip_objective", "default_grid_size", "dgs_select", "histogram",
    "kl_divergence", "load_target", "log_transform", "preset_weights", "random_select",
    "random_selection", "sample_by_bins", "search_clip_counts", "target_counts", "transform_scores",
]
