"""Per-example difficulty scores (Paul et al., NeurIPS 2021): fast exact per-example gradient norms (GraNd), EL2N, loss value,
confidence, misclassification probability, forgetting events; the score registry
(:func:`register_score`); drivers that score whole datasets with given models or a trained
ensemble; SDC's penalty and difficulty weights for matching losses. The DGS difficulty
classifier is :mod:`jaxdd.difficulty.classifier`.

Models are a jaxdd ``Network`` with its variables, a :class:`jaxdd.models.adapters.Model` or a
plain ``apply_fn(params, x) -> logits`` with its params."""

from jaxdd.difficulty.drivers import EnsembleResult, batch_scores, ensemble_scores, load_model, score_models
from jaxdd.difficulty.gradnorm import (FallbackWarning, fallback_layers, grad_norms, grad_sq_norms_by_param,
                                       grand_reference, last_layer_grad_norms, layer_calls)
from jaxdd.difficulty.registry import SCORES, Score, get_score, register_score
from jaxdd.difficulty.scores import (ForgettingState, confidence_difficulty, el2n, forgetting_init,
                                     forgetting_scores, forgetting_update, loss_value,
                                     misclassification_probability, misclassified)
from jaxdd.difficulty.sdc import SDC_MODES, per_example_grad_norms, sdc_penalty
from jaxdd.difficulty.weights import difficulty_weights

__all__ = [
    "SCORES", "Score", "get_score", "register_score", "EnsembleResult", "batch_scores", "ensemble_scores",
    "load_model", "score_models", "FallbackWarning", "fallback_layers", "grad_norms", "grad_sq_norms_by_param",
    "grand_reference", "last_layer_grad_norms", "layer_calls", "ForgettingState",
    "confidence_difficulty", "el2n", "forgetting_init", "forgetting_scores", "forgetting_update", "loss_value",
    "misclassification_probability", "misclassified", "SDC_MODES", "per_example_grad_norms", "sdc_penalty",
    "difficulty_weights",
]
