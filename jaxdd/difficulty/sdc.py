"""SDC's sample-difficulty penalty: Wang et al., "Not All Samples Should Be Utilized Equally:
Towards Understanding and Improving Dataset Distillation" (2024),
``L_match + λ · mean_i ‖∇_θ ℓ(f_θ(x̃_i), ỹ_i)‖₂`` on the synthetic images.

The model is a jaxdd ``Network`` with its variables, a :class:`jaxdd.models.adapters.Model` or a
plain ``apply_fn(params, x) -> logits`` with its params; pure and jittable, differentiable w.r.t.
the images.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdd.difficulty.gradnorm import ModelLike, grad_norms
from jaxdd.utils.labels import cross_entropy
from jaxdd.models.adapters import bind
from jaxdd.models.network import Network

SDC_MODES = ("mean", "batch")


def safe_norm(x: jax.Array, axis=None) -> jax.Array:
    """Euclidean norm whose gradient at 0 is 0 (not NaN), like ``torch.norm``."""
    ss = jnp.sum(jnp.square(x), axis=axis)
    pos = ss > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, ss, 1.0)), 0.0)


def per_example_grad_norms(model: ModelLike, variables: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """``‖∇_θ ℓ(f_θ(x_i), y_i)‖₂`` over all parameters for every example (inference mode).

    The one place SDC and the synthetic-set difficulty tracking take per-example norms:
    ``jaxdd.difficulty.grad_norms`` (one forward and one batched backward pass, exact; its gradient
    w.r.t. ``x`` equals that of the ``vmap(grad)`` reference, ``grand_reference``)."""
    return grad_norms(model, variables, x, y)


def sdc_penalty(model: ModelLike, variables: Any, x: jax.Array, y: jax.Array, mode: str = "mean",
                squared: bool = False, train: bool = False) -> jax.Array:
    """SDC's sample-difficulty penalty on a synthetic batch, with the matching loss's network state.

    * ``mean``: ``mean_i ‖∇_θ ℓ(f_θ(x_i), y_i)‖₂`` (per-example GraNd, as in the paper);
    * ``batch``: ``‖∇_θ mean_i ℓ(f_θ(x_i), y_i)‖₂`` (norm of the batch gradient).
    ``squared`` uses ``‖·‖²`` instead of ``‖·‖``. The method adds ``λ ·`` this to its loss.

    ``train`` (a jaxdd ``Network`` only; a plain ``apply_fn`` is used as given) must match the
    matching loss: ``False`` evaluates the network in inference mode with ``variables`` as given
    (DC/DSA, whose BatchNorm statistics are set from real images);
    ``True`` normalises BatchNorm layers with the statistics of ``x`` itself, as a train-mode pass
    does (DM's embedding, MTT/DATM's student steps): ``batch`` takes the exact train-mode gradient;
    ``mean`` takes per-example gradients of the network normalising with those batch statistics
    held fixed (with batch statistics the examples are coupled and per-example gradients are
    otherwise undefined), :meth:`jaxdd.models.Network.batch_statistics`. Without BatchNorm both
    modes are the same.
    """
    if mode not in SDC_MODES:
        raise ValueError(f"unknown SDC mode {mode!r}; choose one of {SDC_MODES}")
    bn = train and isinstance(model, Network) and "batch_stats" in variables
    if mode == "mean":
        norms = per_example_grad_norms(model, model.batch_statistics(variables, x) if bn else variables, x, y)
    else:
        bound = bind(model, variables, train=bn)
        g = jax.grad(lambda p: jnp.mean(cross_entropy(bound.apply(p, x), y)))(bound.params)
        norms = safe_norm(jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(g)]))
    return jnp.mean(jnp.square(norms) if squared else norms)
