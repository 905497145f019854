"""Any JAX model as plain functions: ``apply_fn(params, x) -> logits``, ``embed_fn(params, x) -> features``.

jaxdd's losses and scores take a model in one of three forms, normalised by :func:`bind`:

* a jaxdd :class:`~jaxdd.models.Network` with its variables ``{"params", ["batch_stats"]}``
  (differentiated w.r.t. ``variables["params"]``; the other collections are held fixed);
* a :class:`Model` (a pair of plain functions) with its ``params`` pytree;
* a bare ``apply_fn(params, x) -> logits`` with its ``params`` pytree (``embed_fn=`` where
  features are needed).

The adapters build a :class:`Model` and its ``params`` from other sources:

* :func:`from_network`: a jaxdd ``Network`` (what every jaxdd call site does implicitly);
* :func:`from_linen`: a ``flax.linen`` module and its variables (``module.apply``), features
  from a named method (``embed="embed"``) or, by default, the input of the last ``Dense`` layer
  called (the penultimate output, captured with ``nn.intercept_methods``);
* :func:`from_nnx`: a ``flax.nnx`` module, split into ``(graphdef, params, rest)`` with
  ``nnx.split`` and rebuilt with ``nnx.merge`` inside the functions.

The functions are pure in ``(params, x)``, so everything built on them jits and differentiates
w.r.t. ``params`` or ``x``. Per-example quantities (gradient norms, SDC) assume the model treats
examples independently (BatchNorm in inference mode).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax

from jaxdd.models.network import Network, Variables

ApplyFn = Callable[[Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Model:
    """A model as plain functions of ``(params, x)``: ``apply`` gives logits (B, C), ``embed``
    features (B, D) (None when the model has no feature extractor). Hashable, so it can be a
    static argument of ``jax.jit``."""

    apply: ApplyFn
    embed: ApplyFn | None = None
    name: str = "model"

    def __post_init__(self):
        if not callable(self.apply):
            raise ValueError(f"Model.apply must be a function apply_fn(params, x) -> logits, got {self.apply!r}")
        if self.embed is not None and not callable(self.embed):
            raise ValueError(f"Model.embed must be a function embed_fn(params, x) -> features or None, "
                             f"got {self.embed!r}")


class Bound(NamedTuple):
    """``apply`` / ``embed`` functions of the differentiated ``params`` (what :func:`bind` returns)."""

    apply: ApplyFn
    embed: ApplyFn | None
    params: Any


def from_network(net: Network, variables: Variables, *, train: bool = False) -> tuple[Model, Any]:
    """``(Model, params)`` for a jaxdd ``Network``: ``params = variables["params"]``; the other
    collections (BatchNorm statistics) are fixed inside the functions. ``train=True`` runs
    BatchNorm on the statistics of each batch (its running-statistics update is discarded)."""
    if not isinstance(variables, dict) or "params" not in variables:
        raise ValueError(f"the variables of network {net.name!r} must be a dict with a 'params' entry "
                         "(what net.init returns)")

    def full(p):
        return {**variables, "params": p}

    if train:
        def apply(p, x):
            return net.apply(full(p), x, train=True)[0]
    else:
        def apply(p, x):
            return net.logits(full(p), x)

    def embed(p, x):
        return net.embed(full(p), x, train=train)

    return Model(apply, embed, net.name), variables["params"]


def _penultimate(module: nn.Module, variables: Variables, x: jax.Array, kwargs: dict) -> jax.Array:
    """The input of the last ``nn.Dense`` (or jaxdd ``Dense``) called in ``module``'s forward pass."""
    from jaxdd.models.layers import Dense

    seen = []

    def record(next_fun, args, kw, context):
        if context.method_name == "__call__" and isinstance(context.module, (nn.Dense, Dense)):
            seen.append(args[0])
        return next_fun(*args, **kw)

    with nn.intercept_methods(record):
        module.apply(variables, x, **kwargs)
    if not seen:
        raise ValueError(f"{type(module).__name__} calls no Dense layer, so it has no penultimate output to use "
                         "as features; pass embed='method_name' (a method returning features) to from_linen")
    return seen[-1].reshape(seen[-1].shape[0], -1)


def from_linen(module: nn.Module, variables: Variables, *, embed: str | None = None,
               **apply_kwargs) -> tuple[Model, Any]:
    """``(Model, params)`` for a ``flax.linen`` module: ``apply(p, x) = module.apply({**variables,
    "params": p}, x, **apply_kwargs)``.

    ``embed`` names a method of the module returning features (``module.apply(..., method=embed)``);
    None uses the input of the last ``Dense`` layer called (the penultimate output).
    ``apply_kwargs`` (e.g. ``train=False``) go to every call."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"from_linen takes a flax.linen Module, got {type(module).__name__}; use from_nnx for "
                         "flax.nnx modules")
    if not isinstance(variables, dict) or "params" not in variables:
        raise ValueError("from_linen needs the module's variables as returned by module.init (a dict with 'params')")
    if embed is not None and not callable(getattr(module, embed, None)):
        raise ValueError(f"{type(module).__name__} has no method {embed!r} to compute features; pass the name of "
                         "a method returning features, or embed=None for the penultimate output")

    def full(p):
        return {**variables, "params": p}

    def apply(p, x):
        return module.apply(full(p), x, **apply_kwargs)

    if embed is None:
        def embed_fn(p, x):
            return _penultimate(module, full(p), x, apply_kwargs)
    else:
        def embed_fn(p, x):
            return module.apply(full(p), x, method=embed, **apply_kwargs)

    return Model(apply, embed_fn, type(module).__name__), variables["params"]


def from_nnx(module: Any, *, embed: str | None = None) -> tuple[Model, Any]:
    """``(Model, params)`` for a ``flax.nnx`` module: ``graphdef, params, rest = nnx.split(module,
    nnx.Param, ...)`` and ``apply(p, x) = nnx.merge(graphdef, p, rest)(x)``.

    ``embed`` names a method of the module returning features (None: no features). Put the module
    in the mode to use first (``module.eval()`` for BatchNorm running statistics / no dropout)."""
    from flax import nnx

    if not isinstance(module, nnx.Module):
        raise ValueError(f"from_nnx takes a flax.nnx Module, got {type(module).__name__}; use from_linen for "
                         "flax.linen modules")
    if embed is not None and not callable(getattr(module, embed, None)):
        raise ValueError(f"{type(module).__name__} has no method {embed!r} to compute features")
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def apply(p, x):
        return nnx.merge(graphdef, p, rest)(x)

    embed_fn = None
    if embed is not None:
        def embed_fn(p, x):
            return getattr(nnx.merge(graphdef, p, rest), embed)(x)

    return Model(apply, embed_fn, type(module).__name__), params


def bind(model: Network | Model | ApplyFn, variables: Any, *, embed_fn: ApplyFn | None = None,
         train: bool = False) -> Bound:
    """Normalise the model forms (module docstring) to ``Bound(apply, embed, params)``.

    ``train`` only matters for a ``Network`` (BatchNorm on batch statistics); ``embed_fn``
    overrides the model's own feature function."""
    if isinstance(model, Network):
        m, params = from_network(model, variables, train=train)
    elif isinstance(model, Model):
        m, params = model, variables
    elif callable(model):
        m, params = Model(model), variables
    else:
        raise ValueError(f"a model must be a jaxdd Network, a jaxdd.models.Model or a function "
                         f"apply_fn(params, x) -> logits, got {type(model).__name__}")
    return Bound(m.apply, embed_fn if embed_fn is not None else m.embed, params)


def require_embed(bound: Bound, what: str) -> ApplyFn:
    """``bound.embed``, or a clear error naming ``what`` needs features."""
    if bound.embed is None:
        raise ValueError(f"{what} needs features: pass embed_fn(params, x) -> features (or a Model / Network "
                         "with an embed function)")
    return bound.embed
