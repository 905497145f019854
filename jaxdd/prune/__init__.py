"""Pruning before distillation: keep the easiest / hardest / a random fraction by score (methods.md §2)."""

from jaxdd.prune.select import (ORDERS, check_aligned, check_keep, keep_count, load_subset, prune_dataset,
                                prune_with_indices, save_subset, select_indices)

__all__ = ["ORDERS", "check_aligned", "check_keep", "keep_count", "load_subset", "prune_dataset",
           "prune_with_indices", "save_subset", "select_indices"]
