"""Per-example difficulty scores (Paul et al., NeurIPS 2021): fast exact per-example gradient norms (GraNd),
EL2N, loss value, confidence, misclassification probability, forgetting events, and drivers that
score whole datasets with given models or a trained ensemble."""

from jaxdd.difficulty.drivers import (SCORES, EnsembleResult, batch_scores, ensemble_scores, load_model,
                                      score_models)
from jaxdd.difficulty.gradnorm import (grad_norms, grad_sq_norms_by_param, grand_reference,
                                       last_layer_grad_norms, layer_calls)
from jaxdd.difficulty.scores import (ForgettingState, confidence_difficulty, el2n, forgetting_init,
                                     forgetting_scores, forgetting_update, loss_value,
                                     misclassification_probability, misclassified)

__all__ = [
    "SCORES", "EnsembleResult", "batch_scores", "ensemble_scores", "load_model", "score_models",
    "grad_norms", "grad_sq_norms_by_param", "grand_reference", "last_layer_grad_norms", "layer_calls",
    "ForgettingState", "confidence_difficulty", "el2n", "forgetting_init",
    "forgetting_scores", "forgetting_update", "loss_value", "misclassification_probability", "misclassified",
]
