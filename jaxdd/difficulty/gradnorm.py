"""Exact per-example gradient norms, fast: one forward and one batched backward pass.

GraNd (Paul et al., 2021, "Deep Learning on a Data Diet") scores an example by
``||∇_θ ℓ(f_θ(x_i), y_i)||₂``. ``vmap(grad)`` materialises one full gradient per example;
:func:`grad_norms` instead captures, in one forward pass, every layer's input ``a`` and — through
zero perturbations added to every layer's output — in one batched backward pass every layer's
output gradient ``g_i = ∂ℓ_i/∂y_i`` (Goodfellow, 2015; Rochette et al., 2019; Li et al., 2022
"ghost clipping"). The per-example squared norm is then assembled layer by layer:

* ``Dense`` on one vector per example: ``||∇W||² = ||a_i||² ||g_i||²``, ``||∇b||² = ||g_i||²``.
* ``Dense`` on sequences and ``Conv`` (positions ``p``, im2col patches ``a_p``):
  ``∇W_i = Σ_p a_p g_pᵀ``; either formed directly (per kernel offset, a batched matmul,
  cost P·K·O) or by the Gram ("ghost") identity ``||∇W_i||² = Σ_{p,q} (a_p·a_q)(g_p·g_q)``
  (cost P²·(K+O); for a conv, the patch Gram ``a_p·a_q`` also as the sum over kernel offsets d of
  the shifted pixel Gram ``ã_{p+d}·ã_{q+d}``, cost N²·Cin + kh·kw·P² for N input pixels); the
  cheaper one is chosen per layer. ``||∇b_i||² = ||Σ_p g_p||²``.
* ``GroupNorm`` / ``LayerNorm`` / ``BatchNorm`` (inference statistics) with affine
  ``y = x̂·s + b``: ``∇s_i = Σ_p g_p ⊙ x̂_p``, ``∇b_i = Σ_p g_p`` over the positions p outside the
  affine's (trailing) feature axes: channels for GroupNorm/BatchNorm, and none for a LayerNorm whose
  affine spans (H, W, C) (``jaxdd.models.layers.Norm("layernorm")``).

The recognised layers are jaxdd's own (:mod:`jaxdd.models.layers`) and the standard
``flax.linen`` ``Dense``, ``Conv`` (2-D, any strides, ``SAME``/``VALID``/explicit padding; not
dilated or grouped), ``GroupNorm``, ``LayerNorm`` and ``BatchNorm``; they are found with
``nn.intercept_methods`` wherever the model's ``apply_fn`` calls them, and a layer's parameters
are matched to the leaves of ``params`` by identity, so any ``apply_fn(params, x)`` that feeds its
parameters to such layers unchanged takes the fast path.

The squared contributions are summed over layers and square-rooted. A layer called several times
(shared weights) sums its per-example gradients over calls before the norm. Parameters that no
recognised layer owns (e.g. a ViT's position embedding) are handled exactly by ``vmap(grad)``
restricted to those parameters, which adds one batched backward pass but no per-example copy of
the rest of the model; a :class:`FallbackWarning` naming those layers is issued once. A recognised
layer's parameter must not also be read outside that layer's call (weight tying through another
module), or its norm would miss that use.

BatchNorm in training mode mixes the examples of a batch, so a per-example gradient is not
defined. All functions here run networks in inference mode (``train=False``: BatchNorm uses its
running statistics) and raise ``ValueError`` if a BatchNorm layer is nevertheless asked to use
batch statistics.

The loss is the per-example cross-entropy ``ℓ_i`` (integer labels, or soft-label rows
``y ∈ R^{B×C}`` with soft cross-entropy); the gradient is that of ``ℓ_i``, not of the batch mean.
The model is a jaxdd ``Network`` with its variables, a :class:`jaxdd.models.adapters.Model` or a
plain ``apply_fn(params, x) -> logits`` with its params (:func:`jaxdd.models.adapters.bind`).
Everything is a pure jittable function of ``(variables, x, y)`` (and differentiable w.r.t. ``x``,
as SDC's gradient-norm penalty needs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import warnings
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdd.models.adapters import ApplyFn, Model, bind
from jaxdd.models.layers import Conv, Dense
from jaxdd.models.network import Network
from jaxdd.utils.labels import cross_entropy

CONV_METHODS = ("auto", "direct", "ghost")
_NORM_TYPES = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm)
_LAYER_TYPES = (Conv, Dense, nn.Conv, nn.Dense, *_NORM_TYPES)
ModelLike = Network | Model | ApplyFn


class FallbackWarning(UserWarning):
    """Per-example gradient norms of some parameters use the slower ``vmap(grad)`` fallback."""


_WARNED: set[tuple[str, ...]] = set()  # layer sets already warned about (once each per process)


def _check_batch(x: jax.Array, y: jax.Array) -> None:
    if x.ndim < 2 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"images {x.shape} and labels {y.shape} must share the leading batch axis; "
                         "pass one label (or soft-label row) per image")


# ---------------------------------------------------------------------- capturing layer records

@dataclasses.dataclass(frozen=True)
class _Call:
    """One recognised layer call seen in the forward pass (static description)."""

    key: str              # unique per call: "<module path>#<call index>"
    path: tuple[str, ...]  # module path (within the outermost module applied)
    kind: str             # "conv", "dense" or "norm"
    params: tuple[str, ...]  # parameter names owned by the layer ("kernel", "bias", "scale")
    config: tuple = ()    # conv: (kernel_size, strides, ((top, bottom), (left, right))); norm: (feature axes,)
    leaves: tuple[int, ...] = ()  # index of each of ``params`` among the leaves of the model's params


def _pairs(v, n: int, default: int) -> tuple[int, ...] | None:
    """An int or a length-n sequence of ints as an n-tuple (None if it is neither)."""
    v = default if v is None else v
    if isinstance(v, int):
        return (v,) * n
    v = tuple(v)
    return v if len(v) == n and all(isinstance(a, int) for a in v) else None


def _conv_config(module, x, standard_op: bool) -> tuple | None:
    """(kernel_size, strides, explicit pads) of a standard 2-D ``flax.linen`` / ``flax.nnx`` ``Conv``,
    None for other variants (dilated, grouped, masked, circular/causal padding, custom convolution,
    no batch axis)."""
    ks = _pairs(module.kernel_size, 2, 0)
    if (ks is None or x.ndim != 4 or not standard_op or module.feature_group_count != 1 or module.mask is not None
            or _pairs(module.input_dilation, 2, 1) != (1, 1) or _pairs(module.kernel_dilation, 2, 1) != (1, 1)):
        return None
    strides = _pairs(module.strides, 2, 1)
    pad = module.padding
    if strides is None:
        return None
    if isinstance(pad, str):
        if pad.upper() not in ("SAME", "VALID", "SAME_LOWER"):
            return None
        pads = tuple(tuple(p) for p in jax.lax.padtype_to_pads(x.shape[1:3], ks, strides, pad.upper()))
    elif isinstance(pad, int):
        pads = ((pad, pad), (pad, pad))
    else:
        pad = tuple(pad)
        if len(pad) != 2:
            return None
        pads = tuple((p, p) if isinstance(p, int) else tuple(p) for p in pad)
    if any(len(p) != 2 or min(p) < 0 for p in pads):
        return None
    return ks, strides, pads


def _classify(module: nn.Module, args, kwargs):
    """(kind, config) for a layer whose per-example gradients we can form, else None."""
    if isinstance(module, Conv):
        known = {"features", "kernel_size", "strides", "padding", "use_bias", "weight_init", "parent", "name"}
        extra = {f.name for f in dataclasses.fields(module)} - known
        if extra or not isinstance(module.padding, int):
            return None  # a Conv variant this code does not know: exact fallback instead
        p = int(module.padding)
        return "conv", (tuple(module.kernel_size), tuple(module.strides), ((p, p), (p, p)))
    if type(module) is nn.Conv:
        config = _conv_config(module, args[0], module.conv_general_dilated is None
                              and module.conv_general_dilated_cls is None)
        return None if config is None else ("conv", config)
    if isinstance(module, Dense) or (type(module) is nn.Dense and module.dot_general is None
                                     and module.dot_general_cls is None):
        return "dense", ()
    if isinstance(module, nn.BatchNorm):
        ura = nn.merge_param("use_running_average", module.use_running_average,
                             kwargs.get("use_running_average", args[1] if len(args) > 1 else None))
        if not ura:
            raise ValueError(
                f"BatchNorm layer {'/'.join(module.path)} runs in training mode, where it mixes the "
                "examples of a batch and per-example gradients are undefined; score the network in "
                "inference mode (train=False, running statistics)")
        return ("norm", (1,)) if module.axis in (-1, (-1,)) else None
    if isinstance(module, nn.GroupNorm):
        return "norm", (1,)
    if isinstance(module, nn.LayerNorm):
        ndim = args[0].ndim
        canon = lambda a: tuple(sorted(i % ndim for i in ((a,) if isinstance(a, int) else a)))  # noqa: E731
        feat = canon(module.feature_axes)
        trailing = feat == tuple(range(ndim - len(feat), ndim)) and 0 not in feat
        return ("norm", (len(feat),)) if trailing and canon(module.reduction_axes) == feat else None
    return None


def _normalized_input(module: nn.Module, args, kwargs) -> jax.Array:
    """``x̂`` of a normalisation layer: the same layer without its affine scale and bias."""
    bare = module.clone(parent=None, use_scale=False, use_bias=False)
    others = {k: v for k, v in module.variables.items() if k != "params"}
    return bare.apply(others, *args, **kwargs)


def _affine(x_hat: jax.Array, own: dict, dtype) -> jax.Array:
    """``x̂·scale + bias`` of a normalisation layer with parameters ``own`` (trailing feature axes),
    cast to the layer's ``dtype`` if it sets one."""
    out = x_hat * own["scale"] if "scale" in own else x_hat
    out = out + own["bias"] if "bias" in own else out
    return out if dtype is None else out.astype(dtype)


def _nnx_classify(module, args):
    """(kind, config) for a standard ``flax.nnx`` ``Linear`` / 2-D ``Conv`` call, else None."""
    from flax import nnx

    if type(module) is nnx.Linear:
        return ("dense", ()) if module.dot_general is jax.lax.dot_general else None
    if type(module) is nnx.Conv:
        config = _conv_config(module, args[0], module.conv_general_dilated is jax.lax.conv_general_dilated)
        return None if config is None else ("conv", config)
    return None


@contextlib.contextmanager
def _nnx_layers(handler):
    """While active, calls of ``flax.nnx`` ``Linear`` / ``Conv`` go through
    ``handler(module, args, kwargs, call)`` (nnx has no method interception; the two classes'
    ``__call__`` are wrapped for the duration of one trace and restored after)."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - nnx ships with flax
        yield
        return
    originals = {cls: cls.__dict__["__call__"] for cls in (nnx.Linear, nnx.Conv)}

    def wrap(orig):
        def __call__(self, *args, **kwargs):
            return handler(self, args, kwargs, lambda *a, **k: orig(self, *a, **k))
        return __call__

    try:
        for cls, orig in originals.items():
            cls.__call__ = wrap(orig)
        yield
    finally:
        for cls, orig in originals.items():
            cls.__call__ = orig


def _nnx_params(module) -> dict:
    """{name: array} of an nnx layer's parameters (the arrays themselves, for identity matching)."""
    out = {}
    for name in ("kernel", "bias"):
        var = getattr(module, name, None)
        if var is not None:
            out[name] = var.get_value() if hasattr(var, "get_value") else var.value
    return out


def _traced_apply(apply: ApplyFn, params: Any, x: jax.Array, perturb: dict | None):
    """``apply(params, x)``, with ``perturb[key]`` added to each recognised layer's output.

    Returns ``(logits, calls, records, outputs)``: ``calls`` the static layer descriptions in call
    order, ``records[key]`` the layer input (conv/dense) or normalised input ``x̂`` (norm),
    ``outputs[key]`` the layer output (a norm layer's as ``x̂·scale + bias``). A layer counts as
    recognised only when each of its parameters is a leaf of ``params`` (matched by identity).
    """
    calls: list[_Call] = []
    records: dict[str, jax.Array] = {}
    outputs: dict[str, jax.Array] = {}
    counts: dict[tuple, int] = {}
    busy = [False]
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    leaf_index = {id(leaf): i for i, (_, leaf) in enumerate(flat)}

    def record(found, own: dict, path, args, kwargs, call, module=None):
        """Run one layer call, recording it if recognised with parameters taken from ``params``."""
        owned = tuple(sorted(own.keys()))
        leaves = tuple(leaf_index.get(id(own[k]), -1) for k in owned)
        if found is None or -1 in leaves:  # not a layer we know, or parameters not taken from params
            return call(*args, **kwargs)
        if path is None:  # nnx: the layer's place in params
            path = _path_of(flat[leaves[0]][0])[:-1]
        n = counts.get(path, 0)
        counts[path] = n + 1
        key = "/".join(path) + f"#{n}"
        kind, config = found
        calls.append(_Call(key=key, path=path, kind=kind, params=owned, config=config, leaves=leaves))
        if kind == "norm":
            busy[0] = True
            try:
                records[key] = _normalized_input(module, args, kwargs)
            finally:
                busy[0] = False
            # the layer's output as x̂·scale + bias from the recorded x̂ (the layer's own formula up to
            # rounding), so that the normalisation is computed, and differentiated, once
            out = _affine(records[key], own, module.dtype)
        else:
            out = call(*args, **kwargs)
            records[key] = args[0]
        if perturb is not None:
            out = out + perturb[key]
        outputs[key] = out
        return out

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if busy[0] or context.method_name != "__call__" or not isinstance(module, _LAYER_TYPES):
            return next_fun(*args, **kwargs)
        found = _classify(module, args, kwargs)
        return record(found, module.variables.get("params", {}) if found else {}, tuple(module.path), args, kwargs,
                      next_fun, module)

    def nnx_handler(module, args, kwargs, call):
        found = _nnx_classify(module, args)
        return record(found, _nnx_params(module) if found else {}, None, args, kwargs, call)

    with nn.intercept_methods(interceptor), _nnx_layers(nnx_handler):
        logits = apply(params, x)
    return logits, calls, records, outputs


def layer_calls(model: ModelLike, variables: Any, x: jax.Array) -> list[_Call]:
    """The recognised layer calls of ``model`` on inputs shaped like ``x`` (in call order)."""
    b = bind(model, variables)
    return _discover(b.apply, b.params, x)[0]


def fallback_layers(model: ModelLike, variables: Any, x: jax.Array) -> tuple[str, ...]:
    """Names of the layers whose parameters no recognised layer owns: their per-example norms go
    through ``vmap(grad)`` (empty: the whole model takes the fast path)."""
    b = bind(model, variables)
    calls, _ = _discover(b.apply, b.params, x)
    covered = {i for c in calls for i in c.leaves}
    return _layer_names([p for i, p in enumerate(_param_paths(b.params)) if i not in covered])


def _discover(apply: ApplyFn, params: Any, x: jax.Array):
    """(calls, {key: ShapeDtypeStruct of the layer output}) without running the network."""
    holder = {}

    def run(p, xx):
        _, calls, _, outputs = _traced_apply(apply, p, xx, None)
        holder["calls"] = calls
        return outputs

    shapes = jax.eval_shape(run, params, x)
    return holder["calls"], shapes


# -------------------------------------------------------------------- per-layer squared norms

def _sq(v: jax.Array) -> jax.Array:
    """Per-example sum of squares over all but the leading axis."""
    return jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1)


def _patch_gram_costs(a_shape, out_hw, kernel_size) -> dict[str, float]:
    """Multiply-adds per example of a conv's patch Gram ``(a_p·a_q)`` (:func:`_patch_gram`) from
    im2col patches (``P²·K``) and from the pixel Gram (``N²·Cin + kh·kw·P²``, N input pixels)."""
    p, n = math.prod(out_hw), math.prod(a_shape[1:-1])
    taps = math.prod(kernel_size)
    return {"patches": p * p * taps * a_shape[-1], "pixels": n * n * a_shape[-1] + taps * p * p}


def _conv_shifted_inputs(a: jax.Array, kernel_size, strides, padding, out_hw):
    """For each kernel offset (dy, dx): the input pixels it multiplies, shaped like the output.
    ``padding`` is ((top, bottom), (left, right))."""
    (kh, kw), (sh, sw), (ho, wo) = kernel_size, strides, out_hw
    ap = jnp.pad(a, ((0, 0), *padding, (0, 0))) if any(map(any, padding)) else a
    for dy in range(kh):
        for dx in range(kw):
            yield jax.lax.slice(ap, (0, dy, dx, 0), (ap.shape[0], dy + sh * (ho - 1) + 1,
                                                    dx + sw * (wo - 1) + 1, ap.shape[3]), (1, sh, sw, 1))


def _conv_patches(a: jax.Array, kernel_size, strides, padding, out_hw) -> jax.Array:
    """im2col patches (B, P, kh·kw·Cin) from the shifted inputs (faster on XLA CPU than
    ``conv_general_dilated_patches``); the feature order is irrelevant for norms."""
    pat = jnp.concatenate(list(_conv_shifted_inputs(a, kernel_size, strides, padding, out_hw)), axis=-1)
    return pat.reshape(pat.shape[0], -1, pat.shape[-1])


def _gram(x: jax.Array) -> jax.Array:
    """Per-example Gram matrix ``x_p·x_q`` (B, P, P) of rows x (B, P, K)."""
    return jnp.einsum("bpk,bqk->bpq", x, x, precision=jax.lax.Precision.HIGHEST)


def _ghost_sq(a: jax.Array, g: jax.Array) -> jax.Array:
    """``||Σ_p a_p g_pᵀ||²_F = Σ_{p,q} (a_p·a_q)(g_p·g_q)`` per example; a (B,P,K), g (B,P,O)."""
    return _gram_sq(_gram(a), g)


def _gram_sq(gram_a: jax.Array, g: jax.Array) -> jax.Array:
    """``Σ_{p,q} gram_a[p,q] (g_p·g_q)`` per example; gram_a (B,P,P), g (B,P,O)."""
    return jnp.einsum("bpq,bpq->b", gram_a, _gram(g))


def _patch_gram(a: jax.Array, kernel_size, strides, padding, out_hw, form: str) -> jax.Array:
    """Gram matrix of a conv's im2col patches, ``(a_p·a_q)`` (B, P, P), for input a (B,H,W,Cin).

    ``"patches"`` forms the patches (P²·K multiply-adds); ``"pixels"`` uses
    ``a_p·a_q = Σ_{(dy,dx)} ã[σp+d]·ã[σq+d]`` (ã the zero-padded input, σ the stride): one Gram of
    the N input pixels (N²·Cin), zero-padded, summed over the kh·kw diagonal shifts; cheaper when
    N² < kh·kw·P², e.g. for stride-1 convs. Both give the same matrix (up to rounding)."""
    if form == "patches":
        return _gram(_conv_patches(a, kernel_size, strides, padding, out_hw))
    b, h, w, c = a.shape
    (kh, kw), (sh, sw), ((pt, pb), (pl, pr)), (ho, wo) = kernel_size, strides, padding, out_hw
    m = _gram(a.reshape(b, h * w, c)).reshape(b, h, w, h, w)
    m = jnp.pad(m, ((0, 0), (pt, pb), (pl, pr), (pt, pb), (pl, pr)))
    gram = 0.0
    for dy in range(kh):
        for dx in range(kw):
            stop = (dy + sh * (ho - 1) + 1, dx + sw * (wo - 1) + 1)
            gram = gram + jax.lax.slice(m, (0, dy, dx, dy, dx), (b, *stop, *stop), (1, sh, sw, sh, sw))
    return gram.reshape(b, ho * wo, ho * wo)


def _conv_weight_grads(a, g, kernel_size, strides, padding) -> jax.Array:
    """Per-example conv kernel gradients (B, kh·kw, Cin, O), one batched matmul per offset."""
    hp = jax.lax.Precision.HIGHEST
    return jnp.stack([jnp.einsum("bhwc,bhwo->bco", s, g, precision=hp)
                      for s in _conv_shifted_inputs(a, kernel_size, strides, padding, g.shape[1:3])], 1)


# Measured on XLA CPU (benchmarks/difficulty.py): per-offset batched matmuls beat im2col for wide
# inputs, im2col (one matmul with K = kh·kw·Cin) wins for narrow ones, and the Gram form only pays
# off when it needs several times fewer multiply-adds (its P×P products run less efficiently):
# 4x with the im2col patch Gram; 2x with the pixel Gram (``benchmarks/sdc_overhead.py --conv-forms``,
# batch 100: at 2.2x fewer multiply-adds, a 16x16 128->128 conv, the norms cost the same CPU time as
# the direct form's and their gradient 1.6-1.8x less; at 1.05x, 16x16 64->64, the direct form is
# 1.5x (gradient) to 3x (value) faster).
_NARROW_CIN = 16
_GHOST_ADVANTAGE = {"patches": 4.0, "pixels": 2.0}


def _conv_weight_sq(a, g, kernel_size, strides, padding, method) -> jax.Array:
    """``||∇K_i||²`` per example for a conv with input a (B,H,W,Cin) and output gradient g (B,Ho,Wo,O).

    ``direct``: the per-example kernel gradient (P·K·O multiply-adds); ``ghost``: the Gram form
    ``Σ_{p,q} (a_p·a_q)(g_p·g_q)`` (P²·O plus the patch Gram, :func:`_patch_gram`); ``auto``: the Gram
    form when it needs :data:`_GHOST_ADVANTAGE` times fewer multiply-adds."""
    b, o = g.shape[0], g.shape[-1]
    out_hw = g.shape[1:3]
    costs = _patch_gram_costs(a.shape, out_hw, kernel_size)
    form = min(costs, key=costs.get)
    if method == "auto":
        p = math.prod(out_hw)
        direct = p * math.prod(kernel_size) * a.shape[-1] * o
        method = "ghost" if _GHOST_ADVANTAGE[form] * (p * p * o + costs[form]) < direct else "direct"
    g2 = g.reshape(b, -1, o)
    if method == "ghost":
        return _gram_sq(_patch_gram(a, kernel_size, strides, padding, out_hw, form), g2)
    hp = jax.lax.Precision.HIGHEST
    if a.shape[-1] < _NARROW_CIN:
        pat = _conv_patches(a, kernel_size, strides, padding, out_hw)
        return _sq(jnp.einsum("bpk,bpo->bko", pat, g2, precision=hp))
    total = 0.0
    for s in _conv_shifted_inputs(a, kernel_size, strides, padding, out_hw):
        total = total + _sq(jnp.einsum("bpc,bpo->bco", s.reshape(b, -1, s.shape[-1]), g2, precision=hp))
    return total


def _dense_weight_sq(a, g, method) -> jax.Array:
    """``||Σ_p a_p g_pᵀ||²`` per example for a (B, P, K), g (B, P, O)."""
    p, k, o = a.shape[1], a.shape[2], g.shape[2]
    if p == 1:
        return _sq(a) * _sq(g)
    if method == "ghost" or (method == "auto" and _GHOST_ADVANTAGE["patches"] * p * p * (k + o) < p * k * o):
        return _ghost_sq(a, g)
    return _sq(jnp.einsum("bpk,bpo->bko", a, g, precision=jax.lax.Precision.HIGHEST))


def _rows(v: jax.Array, batch: int, feature_axes: int = 1) -> jax.Array:
    """(B, P, F) view of a layer array: every position of example i in row i, F the product of the
    last ``feature_axes`` axes.

    A leading axis of k·B (e.g. tokens flattened with ``reshape((-1, D))`` from (B, N, D)) is read
    batch-major: k consecutive rows per example."""
    if v.shape[0] % batch:
        raise ValueError(f"a layer saw a leading axis of {v.shape[0]}, not a multiple of the batch {batch}: "
                         "per-example gradients need layers whose inputs keep examples separate")
    return v.reshape(batch, -1, math.prod(v.shape[v.ndim - feature_axes:]))


def _layer_sq_norms(calls: Sequence[_Call], records, grads, method, batch: int) -> dict[int, jax.Array]:
    """Per-example squared gradient norm of every parameter owned by a recognised layer.

    Keys are the parameters' indices among the leaves of the model's params. Calls of the same
    parameters (a layer called several times) are grouped."""
    by_leaves: dict[tuple, list[_Call]] = {}
    for c in calls:
        by_leaves.setdefault(c.leaves, []).append(c)
    hp = jax.lax.Precision.HIGHEST
    out: dict[int, jax.Array] = {}
    for group in by_leaves.values():
        c0 = group[0]
        leaf = dict(zip(c0.params, c0.leaves))
        gs = [grads[c.key] for c in group]
        rs = [records[c.key] for c in group]
        feat = c0.config[0] if c0.kind == "norm" else 1
        if "bias" in leaf:
            out[leaf["bias"]] = _sq(sum(_rows(g, batch, feat).sum(1) for g in gs))
        if c0.kind == "norm":
            if "scale" in leaf:
                out[leaf["scale"]] = _sq(sum(_rows(g * r, batch, feat).sum(1) for g, r in zip(gs, rs)))
            continue
        if "kernel" not in leaf:
            continue
        if len(group) == 1 and (c0.kind == "dense" or rs[0].shape[0] == batch):
            # the common case: choose the cheapest exact form
            if c0.kind == "conv":
                out[leaf["kernel"]] = _conv_weight_sq(rs[0], gs[0], *c0.config, method)
            else:
                out[leaf["kernel"]] = _dense_weight_sq(_rows(rs[0], batch), _rows(gs[0], batch), method)
            continue
        # shared weights or k rows per example: per-example gradients summed, then the norm
        total = 0.0
        for c, r, g in zip(group, rs, gs):
            if c.kind == "conv":
                w = _conv_weight_grads(r, g, *c.config)
                total = total + w.reshape(batch, -1, *w.shape[1:]).sum(1)
            else:
                total = total + jnp.einsum("bpk,bpo->bko", _rows(r, batch), _rows(g, batch), precision=hp)
        out[leaf["kernel"]] = _sq(total)
    return out


# ------------------------------------------------------------------------------- public API

def _key_name(k) -> str:
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def _path_of(kp) -> tuple[str, ...]:
    """A pytree key path as strings (an nnx ``Variable``'s trailing ``value`` attribute dropped)."""
    path = tuple(_key_name(k) for k in kp)
    return path[:-1] if len(path) > 1 and path[-1] == "value" and hasattr(kp[-1], "name") else path


def _param_paths(params) -> list[tuple[str, ...]]:
    """The path of every leaf of ``params`` as strings."""
    return [_path_of(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _layer_names(paths: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    """Layer names (parameter paths without the parameter name), in order, without repeats."""
    return tuple(dict.fromkeys("/".join(p[:-1]) or "/".join(p) for p in paths))


def _fallback_sq(apply: ApplyFn, params: Any, x, y, indices: Sequence[int]) -> jax.Array:
    """Exact per-example squared norms for the leaves ``indices`` of ``params`` (vmap(grad))."""
    leaves, treedef = jax.tree.flatten(params)
    sub = [leaves[i] for i in indices]

    def loss_one(sub_vals, xi, yi):
        new = list(leaves)
        for i, v in zip(indices, sub_vals):
            new[i] = v
        return cross_entropy(apply(jax.tree.unflatten(treedef, new), xi[None]), yi[None])[0]

    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(sub, x, y)
    return sum(_sq(g) for g in grads)


def _warn_fallback(names: tuple[str, ...]) -> None:
    if names in _WARNED:
        return
    _WARNED.add(names)
    warnings.warn(f"per-example gradient norms: the parameters of {', '.join(names)} belong to no Dense / Conv / "
                  "GroupNorm / LayerNorm / BatchNorm layer the fast path recognises (or are used outside it); "
                  "they are computed exactly with the slower vmap(grad). Build them from standard flax.linen "
                  "layers to take the fast path.", FallbackWarning, stacklevel=3)


def grad_sq_norms_by_param(model: ModelLike, variables: Any, x: jax.Array, y: jax.Array, *,
                           method: str = "auto", layers: str | Sequence[str] = "all",
                           chunk_size: int | None = None) -> dict[str, jax.Array]:
    """Per-example squared gradient norms ``||∂ℓ_i/∂θ_k||²`` for each parameter ``θ_k``.

    ``model``: a jaxdd ``Network`` (``variables`` its variables), a ``Model`` or a plain
    ``apply_fn(params, x) -> logits`` (``variables`` its params). Returns
    ``{"module/path/param": (B,) array}``. ``layers="all"`` covers every parameter
    (unrecognised ones through the exact ``vmap(grad)`` fallback, in the entry ``"<other>"``, with
    a :class:`FallbackWarning` naming their layers once); ``"last"`` only the last
    Conv/Dense layer called in the forward pass (the classifier); a list of module paths
    (``"convs_0"``, ``"classifier"``) restricts to those layers. ``method`` picks the conv /
    sequence-dense form: ``"direct"``, ``"ghost"`` (Gram) or ``"auto"`` (fewer multiply-adds).
    ``chunk_size`` processes the batch ``chunk_size`` examples at a time (``lax.map``): bounded
    memory, and on CPU faster, because small chunks keep the activations in cache (see
    :data:`DEFAULT_CHUNK`); ``None`` does the whole batch at once.
    """
    if method not in CONV_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {CONV_METHODS}")
    _check_batch(x, y)
    if chunk_size is not None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        if x.shape[0] > chunk_size:
            fn = functools.partial(grad_sq_norms_by_param, model, variables, method=method, layers=layers)
            return _chunked(fn, x, y, chunk_size)
    bound = bind(model, variables)
    apply, params = bound.apply, bound.params
    name = model.name if isinstance(model, (Network, Model)) else "the model"
    calls, shapes = _discover(apply, params, x)
    if isinstance(layers, str) and layers == "last":
        weighted = [c for c in calls if c.kind in ("conv", "dense")]
        if not weighted:
            raise ValueError(f"{name} has no Conv/Dense layer to call the last layer")
        chosen = {weighted[-1].path}
    elif isinstance(layers, str) and layers == "all":
        chosen = None
    else:
        wanted = {tuple(s.split("/")) if isinstance(s, str) else tuple(s) for s in layers}
        known = {c.path for c in calls}
        missing = wanted - known
        if missing:
            raise ValueError(f"layers {sorted('/'.join(m) for m in missing)} are not recognised layers of "
                             f"{name}; choose from {sorted('/'.join(k) for k in known)}")
        chosen = wanted
    used = [c for c in calls if chosen is None or c.path in chosen]
    keys = {c.key for c in used}

    def loss_sum(perturb):
        logits, _, records, _ = _traced_apply(apply, params, x, {**zeros_all, **perturb})
        return cross_entropy(logits, y).sum(), records

    zeros_all = {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}
    wrt = {k: zeros_all[k] for k in keys}
    grads, records = jax.grad(loss_sum, has_aux=True)(wrt)
    sq = _layer_sq_norms(used, records, grads, method, x.shape[0])
    paths = _param_paths(params)
    out = {"/".join(paths[i]): v for i, v in sq.items()}
    if chosen is None:
        rest = [i for i in range(len(paths)) if i not in sq]
        if rest:
            _warn_fallback(_layer_names([paths[i] for i in rest]))
            out["<other>"] = _fallback_sq(apply, params, x, y, rest)
    return out


def _chunked(fn: Callable, x: jax.Array, y: jax.Array, chunk: int):
    """``fn(x, y)`` (a dict of (B,) arrays) evaluated ``chunk`` examples at a time.

    The batch is zero-padded to n·chunk and chunk j takes rows j, n + j, 2n + j, ... so that each
    chunk spans the whole batch: with the batch sharded over a device mesh every device keeps
    working on its own rows."""
    b = x.shape[0]
    n = -(-b // chunk)
    pad = n * chunk - b
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
        y = jnp.concatenate([y, jnp.zeros((pad, *y.shape[1:]), y.dtype)])
    xs = x.reshape(chunk, n, *x.shape[1:]).swapaxes(0, 1)
    ys = y.reshape(chunk, n, *y.shape[1:]).swapaxes(0, 1)
    out = jax.lax.map(lambda xy: fn(*xy), (xs, ys))  # each leaf (n, chunk)
    return jax.tree.map(lambda v: v.swapaxes(0, 1).reshape(n * chunk)[:b], out)


def grad_norms(model: ModelLike, variables: Any, x: jax.Array, y: jax.Array, *,
               method: str = "auto", layers: str | Sequence[str] = "all",
               chunk_size: int | None = None) -> jax.Array:
    """Exact per-example gradient norms ``||∇_θ ℓ(f_θ(x_i), y_i)||₂`` (GraNd), shape (B,).

    One forward + one batched backward pass plus per-layer products (module docstring).
    ``layers="last"`` gives the cheap last-layer GraNd variant (Paul et al., NeurIPS 2021); ``chunk_size``
    see :func:`grad_sq_norms_by_param`.
    """
    sq = grad_sq_norms_by_param(model, variables, x, y, method=method, layers=layers, chunk_size=chunk_size)
    return jnp.sqrt(sum(sq.values()))


def last_layer_grad_norms(model: ModelLike, variables: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """Norm of the gradient w.r.t. the last layer only: for a Dense classifier on features φ,
    ``||[∂ℓ/∂z, φ ⊗ ∂ℓ/∂z]|| = ||p − y||·sqrt(1 + ||φ||²)`` (Paul et al., 2021)."""
    return grad_norms(model, variables, x, y, layers="last")


def grand_reference(model: ModelLike, variables: Any, x: jax.Array, y: jax.Array,
                    param_filter: Callable[[tuple[str, ...]], bool] | None = None) -> jax.Array:
    """Reference implementation: ``vmap(grad)`` materialising every per-example gradient.

    ``param_filter(path) -> bool`` restricts the norm to some parameters (e.g. the last layer).
    """
    _check_batch(x, y)
    bound = bind(model, variables)

    def loss_one(params, xi, yi):
        return cross_entropy(bound.apply(params, xi[None]), yi[None])[0]

    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(bound.params, x, y)
    total = 0.0
    for path, g in zip(_param_paths(grads), jax.tree.leaves(grads)):
        if param_filter is None or param_filter(path):
            total = total + _sq(g)
    return jnp.sqrt(total)
