"""Pruning before distillation: keep the easiest / hardest / a random fraction by score ("Prune
First, Distill After", Moser et al. 2025); coreset selection baselines (k-Center greedy, Herding) on network features."""

from jaxdd.prune.coreset import coreset_sampler, embed_features, herding, kcenter_greedy, select_per_class
from jaxdd.prune.select import (ORDERS, check_aligned, check_keep, keep_count, load_subset, prune_dataset,
                                prune_with_indices, save_subset, select_indices)

__all__ = ["ORDERS", "check_aligned", "check_keep", "keep_count", "load_subset", "prune_dataset",
           "prune_with_indices", "save_subset", "select_indices",
           "coreset_sampler", "embed_features", "herding", "kcenter_greedy", "select_per_class"]
