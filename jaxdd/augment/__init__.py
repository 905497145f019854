"""Data augmentation: DSA, differentiable siamese augmentation (Zhao & Bilen, ICML 2021)."""

from jaxdd.augment.dsa import (
    DEFAULT_STRATEGY,
    DSA_OPS,
    NO_FLIP_STRATEGY,
    DSAParams,
    affine_grid_sample,
    choose_op,
    default_strategy,
    dsa,
    is_digit_dataset,
    parse_strategy,
)

__all__ = ["DEFAULT_STRATEGY", "DSA_OPS", "NO_FLIP_STRATEGY", "DSAParams", "affine_grid_sample", "choose_op",
           "default_strategy", "dsa", "is_digit_dataset", "parse_strategy"]
