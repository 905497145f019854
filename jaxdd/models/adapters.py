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

Methods and scores that initialise fresh networks (DC, DSA, DM, MTT, DATM, ensemble scores) also
need ``init(key, x) -> params``: :func:`linen_model` (``module.init``), :func:`nnx_model` (a
constructor ``lambda rngs: MyModule(..., rngs=rngs)``) or ``Model(apply, embed, init=init_fn)``.
:func:`as_network` turns any of them into a jaxdd ``Network`` (variables ``{"params": params}``),
which every trainer, method and score takes.

The functions are pure in ``(params, x)``, so everything built on them jits and differentiates
w.r.t. ``params`` or ``x``. Per-example quantities (gradient norms, SDC) assume the model treats
examples independently (BatchNorm in inference mode).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdd.models.network import Network, Variables

ApplyFn = Callable[[Any, jax.Array], jax.Array]
InitFn = Callable[[jax.Array, jax.Array], Any]


@dataclasses.dataclass(frozen=True)
class Model:
    """A model as plain functions of ``(params, x)``: ``apply`` gives logits (B, C), ``embed``
    features (B, D) (None when the model has no feature extractor); ``init(key, x)`` fresh
    ``params`` for a batch ``x`` of inputs (None: the model cannot be initialised, so it only
    serves with given parameters). Hashable, so it can be a static argument of ``jax.jit``."""

    apply: ApplyFn
    embed: ApplyFn | None = None
    name: str = "model"
    init: InitFn | None = None

    def __post_init__(self):
        if not callable(self.apply):
            raise ValueError(f"Model.apply must be a function apply_fn(params, x) -> logits, got {self.apply!r}")
        if self.embed is not None and not callable(self.embed):
            raise ValueError(f"Model.embed must be a function embed_fn(params, x) -> features or None, "
                             f"got {self.embed!r}")
        if self.init is not None and not callable(self.init):
            raise ValueError(f"Model.init must be a function init_fn(key, x) -> params or None, got {self.init!r}")


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


def linen_model(module: nn.Module, *, embed: str | None = None, **apply_kwargs) -> Model:
    """A :class:`Model` with ``init`` for a ``flax.linen`` module without state other than
    ``params``: ``init(key, x) = module.init(key, x, **apply_kwargs)["params"]``, ``apply`` and
    ``embed`` as :func:`from_linen` with ``variables = {"params": params}``.

    A module that creates other collections (BatchNorm ``batch_stats``, ...) raises at ``init``:
    wrap it as a jaxdd ``Network`` instead (a module with ``__call__(x, train)`` and ``embed``)."""
    model, _ = from_linen(module, {"params": None}, embed=embed, **apply_kwargs)

    def init(key, x):
        variables = module.init(key, x, **apply_kwargs)
        extra = sorted(set(variables) - {"params"})
        if extra:
            raise ValueError(f"{type(module).__name__} creates the collections {extra} besides 'params'; fresh "
                             "networks of an own model must be stateless (no BatchNorm): use a BatchNorm-free "
                             "model, or build a jaxdd Network(name, module, input_shape, num_classes) from a module "
                             "with __call__(x, train) and an embed method")
        return variables["params"]

    return dataclasses.replace(model, init=init)


def nnx_model(constructor: Callable[[Any], Any], *, embed: str | None = None) -> Model:
    """A :class:`Model` with ``init`` for a ``flax.nnx`` module built by ``constructor(rngs)``
    (e.g. ``lambda rngs: MyModule(..., rngs=rngs)``): ``init(key, x)`` keeps the ``nnx.Param``
    state of ``constructor(nnx.Rngs(key))`` (``x`` unused: an nnx module knows its shapes);
    ``apply`` / ``embed`` as :func:`from_nnx` of one module built now (other state, e.g. a
    Dropout's ``Rngs``, is held fixed). BatchNorm statistics raise: fresh networks of an own model
    must be BatchNorm-free."""
    from flax import nnx

    if isinstance(constructor, nnx.Module) or not callable(constructor):
        raise ValueError("nnx_model takes a constructor lambda rngs: MyModule(..., rngs=rngs) (fresh modules for "
                         f"every key), got {type(constructor).__name__}; use from_nnx for one built module")
    module = constructor(nnx.Rngs(0))
    if not isinstance(module, nnx.Module):
        raise ValueError(f"the nnx constructor returned {type(module).__name__}, not a flax.nnx Module")
    if jax.tree.leaves(nnx.state(module, nnx.BatchStat)):
        raise ValueError(f"{type(module).__name__} holds BatchNorm statistics; fresh networks of an own model must be "
                         "BatchNorm-free (use a BatchNorm-free model, or a jaxdd Network)")
    model, _ = from_nnx(module, embed=embed)

    def init(key, x):
        return nnx.split(constructor(nnx.Rngs(key)), nnx.Param, ...)[1]

    return dataclasses.replace(model, init=init)


def _positional_arity(fn: Callable) -> int | None:
    """Number of required positional parameters of ``fn`` (None when it has no signature)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return sum(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def as_model(model: Model | nn.Module | Callable) -> Model:
    """A :class:`Model` with ``init`` from a ``Model`` (which must have ``init``), a ``flax.linen``
    module (:func:`linen_model`) or an nnx constructor of one argument ``rngs``
    (:func:`nnx_model`); a clear error for anything that cannot initialise fresh parameters."""
    from flax import nnx

    how = ("give a Model(apply_fn, embed_fn, init=init_fn) with init_fn(key, x) -> params, a flax.linen module, or "
           "an nnx constructor lambda rngs: MyModule(..., rngs=rngs)")
    if isinstance(model, Model):
        if model.init is None:
            raise ValueError(f"model {model.name!r} has no init function, and fresh networks are needed here; {how}")
        return model
    if isinstance(model, nn.Module):
        return linen_model(model)
    if isinstance(model, nnx.Module):
        raise ValueError(f"a built nnx module ({type(model).__name__}) cannot give fresh networks; {how}")
    if callable(model) and _positional_arity(model) == 1:
        return nnx_model(model)
    raise ValueError(f"cannot initialise fresh networks from {type(model).__name__} (a plain apply_fn has no "
                     f"init); {how}")


@dataclasses.dataclass(frozen=True)
class ModelNetwork(Network):
    """A jaxdd ``Network`` over a :class:`Model` with ``init``: variables ``{"params": params}``,
    no BatchNorm, ``train`` ignored (the model's functions are used as given)."""

    model: Model | None = None

    def init(self, key: jax.Array) -> Variables:
        return {"params": self.model.init(key, jnp.zeros((1, *self.input_shape), jnp.float32))}

    def apply(self, variables: Variables, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, Variables]:
        return self.model.apply(variables["params"], x), variables

    def logits(self, variables: Variables, x: jax.Array) -> jax.Array:
        return self.model.apply(variables["params"], x)

    def embed(self, variables: Variables, x: jax.Array, *, train: bool = False) -> jax.Array:
        if self.model.embed is None:
            raise ValueError(f"model {self.name!r} has no embed function, and features are needed here (DM, "
                             "k-Center / Herding): give the Model an embed_fn(params, x) -> features")
        return self.model.embed(variables["params"], x)

    def batch_statistics(self, variables: Variables, x: jax.Array) -> Variables:
        return variables


def as_network(model: str | Network | Model | nn.Module | Callable, input_shape: tuple[int, ...],
               num_classes: int | None = None, *, name: str | None = None) -> Network:
    """A jaxdd ``Network`` for ``model`` on inputs of ``input_shape`` (one example, e.g. (H, W, C)):
    a network name is built with ``jaxdd.models.create_network`` (``num_classes`` required), a
    ``Network`` is returned as it is (its shapes checked), anything else goes through
    :func:`as_model` into a :class:`ModelNetwork` named ``name`` (default: the model's). The class
    count is read from the logits of ``init`` (checked against ``num_classes`` when given)."""
    input_shape = tuple(int(d) for d in input_shape)
    if isinstance(model, str):
        from jaxdd.models.registry import create_network

        if num_classes is None:
            raise ValueError(f"building network {model!r} by name needs num_classes")
        return create_network(model, num_classes=num_classes, input_shape=input_shape)
    if isinstance(model, Network):
        if tuple(model.input_shape) != input_shape or (num_classes is not None and model.num_classes != num_classes):
            raise ValueError(f"network {model.name!r} is built for {model.num_classes} classes of {model.input_shape} "
                             f"inputs, not {num_classes} of {input_shape}; create it for this data")
        return model
    m = as_model(model)
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    try:
        logits = jax.eval_shape(lambda k, x: m.apply(m.init(k, x), x), jax.random.key(0), x)
    except ValueError:  # ours (e.g. linen_model's state check) and flax's, which name the problem
        raise
    except Exception as e:  # other errors of the user's model: name the input shape
        raise ValueError(f"model {m.name!r} does not run on inputs of shape (batch, {', '.join(map(str, input_shape))})"
                         f" after init: {type(e).__name__}: {e}") from e
    if len(logits.shape) != 2 or logits.shape[0] != 1:
        raise ValueError(f"model {m.name!r} must return logits of shape (batch, classes), got {logits.shape} for one "
                         "input")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"model {m.name!r} gives {logits.shape[1]} logits per input, the data has {num_classes} "
                         "classes")
    return ModelNetwork(name=name or m.name, module=None, input_shape=input_shape, num_classes=int(logits.shape[1]),
                        model=m)


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
