"""The difficulty scores by name: one registry that the drivers and ``jaxdd score`` read.

A new score is one registered function::

    from jaxdd.difficulty import register_score
    register_score("margin", lambda logits, y: ..., description="...")   # fn(logits, y) -> (B,)
    # or, with the model: register_score("name", fn, inputs="model"), fn(model, variables, x, y, method) -> (B,)

after which ``score_models(..., "margin")``, ``ensemble_scores(score="margin")`` and
``jaxdd score --score margin`` (in a process that registered it) use it. Scores follow
"easy = low"; labels are class indices (B,) or soft-label rows (B, C).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from jaxdd.difficulty import gradnorm, scores as S

INPUTS = ("logits", "model", "training")


@dataclasses.dataclass(frozen=True)
class Score:
    """A registered score. ``inputs``: ``"logits"`` (``fn(logits, y)``), ``"model"``
    (``fn(model, variables, x, y, method)``; ``method`` the gradient-norm form, see
    :func:`jaxdd.difficulty.grad_norms`) or ``"training"`` (counted while the ensemble trains,
    ``fn`` None: only :func:`jaxdd.difficulty.ensemble_scores` computes it)."""

    name: str
    fn: Callable | None
    inputs: str = "logits"
    description: str = ""


#: name -> :class:`Score`, in registration order (live: later registrations appear here).
SCORES: dict[str, Score] = {}


def register_score(name: str, fn: Callable | None, *, inputs: str = "logits", description: str = "",
                   overwrite: bool = False) -> Score:
    """Register ``fn`` as the score ``name`` (see the module docstring) and return its record.

    Raises ``ValueError`` for a taken name (unless ``overwrite``), a bad ``inputs`` kind or a
    missing function."""
    if not isinstance(name, str) or not name or "," in name or name != name.strip():
        raise ValueError(f"a score name must be a non-empty string without commas or surrounding spaces, got {name!r}")
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
    if inputs != "training" and not callable(fn):
        raise ValueError(f"score {name!r} needs a function ({'fn(logits, y)' if inputs == 'logits' else 'fn(model, variables, x, y, method)'}), got {fn!r}")
    if name in SCORES and not overwrite:
        raise ValueError(f"a score named {name!r} is already registered; choose another name or pass overwrite=True")
    SCORES[name] = Score(name, fn, inputs, description)
    return SCORES[name]


def get_score(name: str) -> Score:
    """The registered score ``name``; ``ValueError`` listing the registered names otherwise."""
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; choose one of {', '.join(SCORES)} (or register it with "
                         "jaxdd.difficulty.register_score)")
    return SCORES[name]


def check_score(name: str) -> str:
    get_score(name)
    return name


def _grand(model, variables, x, y, method):
    return gradnorm.grad_norms(model, variables, x, y, method=method)


def _grand_last(model, variables, x, y, method):
    return gradnorm.grad_norms(model, variables, x, y, method=method, layers="last")


register_score("grand", _grand, inputs="model", description="GraNd: per-example gradient norm over all parameters")
register_score("grand-last", _grand_last, inputs="model", description="GraNd restricted to the last layer")
register_score("el2n", S.el2n, description="EL2N: ||softmax(z) - onehot(y)||")
register_score("loss", S.loss_value, description="cross-entropy loss value")
register_score("confidence", S.confidence_difficulty, description="1 - p(y|x)")
register_score("misclass", S.misclassified, description="misclassification probability over the ensemble (SDC chi)")
register_score("forgetting", None, inputs="training",
               description="forgetting events during training (+inf = never learned)")
