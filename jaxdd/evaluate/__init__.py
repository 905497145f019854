"""Evaluation: presets (``dc``, ``dc-dsa``, ``mtt``, ``datm``, ``lr-grid``) and the protocol (train
fresh networks on a set only, test on the real test set; random-real and full-data baselines), and
DD-Ranking's label- / augmentation-robust scores (``robust``)."""

from jaxdd.evaluate.presets import LR_GRID, PRESETS, Preset, available_presets, dsa_strategy, get_preset
from jaxdd.evaluate.protocol import (check_compatible, evaluate_distilled, evaluate_set, full_data, holdout_indices,
                                     random_real_baseline, select_lr)
from jaxdd.evaluate.robust import augmentation_robust_score, label_robust_score, robust_scores

__all__ = ["LR_GRID", "PRESETS", "Preset", "available_presets", "dsa_strategy", "get_preset", "check_compatible",
           "evaluate_distilled", "evaluate_set", "full_data", "holdout_indices", "random_real_baseline", "select_lr",
           "augmentation_robust_score", "label_robust_score", "robust_scores"]
