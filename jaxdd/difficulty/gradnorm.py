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
  (cost P²·(K+O)); the cheaper one is chosen per layer. ``||∇b_i||² = ||Σ_p g_p||²``.
* ``GroupNorm`` / ``LayerNorm`` / ``BatchNorm`` (inference statistics) with affine
  ``y = x̂·s + b``: ``∇s_i = Σ_p g_p ⊙ x̂_p``, ``∇b_i = Σ_p g_p`` over the positions p outside the
  affine's (trailing) feature axes: channels for GroupNorm/BatchNorm, and none for a LayerNorm whose
  affine spans (H, W, C) (``jaxdd.models.layers.Norm("layernorm")``).

The squared contributions are summed over layers and square-rooted. A layer called several times
(shared weights) sums its per-example gradients over calls before the norm. Parameters that no
recognised layer owns (e.g. a ViT's position embedding) are handled exactly by ``vmap(grad)``
restricted to those parameters, which adds one batched backward pass but no per-example copy of
the rest of the model.

BatchNorm in training mode mixes the examples of a batch, so a per-example gradient is not
defined. All functions here run networks in inference mode (``train=False``: BatchNorm uses its
running statistics) and raise ``ValueError`` if a BatchNorm layer is nevertheless asked to use
batch statistics.

The loss is the per-example cross-entropy ``ℓ_i`` (integer labels, or soft-label rows
``y ∈ R^{B×C}`` with soft cross-entropy); the gradient is that of ``ℓ_i``, not of the batch mean.
Everything is a pure jittable function of ``(variables, x, y)`` (and differentiable w.r.t. ``x``,
as SDC's gradient-norm penalty needs).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdd.models.layers import Conv, Dense
from jaxdd.models.network import Network, Variables
from jaxdd.utils.labels import cross_entropy

CONV_METHODS = ("auto", "direct", "ghost")
_NORM_TYPES = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm)


def _check_batch(x: jax.Array, y: jax.Array) -> None:
    if x.ndim < 2 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"images {x.shape} and labels {y.shape} must share the leading batch axis; "
                         "pass one label (or soft-label row) per image")


# ---------------------------------------------------------------------- capturing layer records

@dataclasses.dataclass(frozen=True)
class _Call:
    """One recognised layer call seen in the forward pass (static description)."""

    key: str              # unique per call: "<module path>#<call index>"
    path: tuple[str, ...]  # module path == path of its parameters in variables["params"]
    kind: str             # "conv", "dense" or "norm"
    params: tuple[str, ...]  # parameter names owned by the layer ("kernel", "bias", "scale")
    config: tuple = ()    # conv: (kernel_size, strides, padding); norm: (number of trailing feature axes,)


def _classify(module: nn.Module, args, kwargs):
    """(kind, config) for a layer whose per-example gradients we can form, else None."""
    if isinstance(module, Conv):
        known = {"features", "kernel_size", "strides", "padding", "use_bias", "weight_init", "parent", "name"}
        extra = {f.name for f in dataclasses.fields(module)} - known
        if extra or not isinstance(module.padding, int):
            return None  # a Conv variant this code does not know: exact fallback instead
        return "conv", (tuple(module.kernel_size), tuple(module.strides), int(module.padding))
    if isinstance(module, Dense):
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


def _traced_apply(net: Network, variables: Variables, x: jax.Array, perturb: dict | None):
    """Inference-mode logits, with ``perturb[key]`` added to each recognised layer's output.

    Returns ``(logits, calls, records, outputs)``: ``calls`` the static layer descriptions in call
    order, ``records[key]`` the layer input (conv/dense) or normalised input ``x̂`` (norm),
    ``outputs[key]`` the layer output.
    """
    calls: list[_Call] = []
    records: dict[str, jax.Array] = {}
    outputs: dict[str, jax.Array] = {}
    counts: dict[tuple, int] = {}
    busy = [False]

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if busy[0] or context.method_name != "__call__" or not isinstance(module, (Conv, Dense, *_NORM_TYPES)):
            return next_fun(*args, **kwargs)
        found = _classify(module, args, kwargs)
        if found is None:
            return next_fun(*args, **kwargs)
        path = tuple(module.path)
        n = counts.get(path, 0)
        counts[path] = n + 1
        key = "/".join(path) + f"#{n}"
        out = next_fun(*args, **kwargs)
        kind, config = found
        owned = tuple(sorted(module.variables.get("params", {}).keys()))
        calls.append(_Call(key=key, path=path, kind=kind, params=owned, config=config))
        if kind == "norm":
            busy[0] = True
            try:
                records[key] = _normalized_input(module, args, kwargs)
            finally:
                busy[0] = False
        else:
            records[key] = args[0]
        if perturb is not None:
            out = out + perturb[key]
        outputs[key] = out
        return out

    with nn.intercept_methods(interceptor):
        logits = net.module.apply(variables, x, train=False)
    return logits, calls, records, outputs


def layer_calls(net: Network, variables: Variables, x: jax.Array) -> list[_Call]:
    """The recognised layer calls of ``net`` on inputs shaped like ``x`` (in call order)."""
    return _discover(net, variables, x)[0]


def _discover(net: Network, variables: Variables, x: jax.Array):
    """(calls, {key: ShapeDtypeStruct of the layer output}) without running the network."""
    holder = {}

    def run(v, xx):
        _, calls, _, outputs = _traced_apply(net, v, xx, None)
        holder["calls"] = calls
        return outputs

    shapes = jax.eval_shape(run, variables, x)
    return holder["calls"], shapes


# -------------------------------------------------------------------- per-layer squared norms

def _sq(v: jax.Array) -> jax.Array:
    """Per-example sum of squares over all but the leading axis."""
    return jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1)


def _conv_costs(a_shape, g_shape, kernel_size) -> tuple[float, float]:
    """Multiply-adds per example of the direct and the Gram form of a conv weight-gradient norm."""
    p = math.prod(g_shape[1:-1])
    k = math.prod(kernel_size) * a_shape[-1]
    o = g_shape[-1]
    return p * k * o, p * p * (k + o)


def _conv_shifted_inputs(a: jax.Array, kernel_size, strides, padding, out_hw):
    """For each kernel offset (dy, dx): the input pixels it multiplies, shaped like the output."""
    (kh, kw), (sh, sw), (ho, wo) = kernel_size, strides, out_hw
    ap = jnp.pad(a, ((0, 0), (padding, padding), (padding, padding), (0, 0))) if padding else a
    for dy in range(kh):
        for dx in range(kw):
            yield jax.lax.slice(ap, (0, dy, dx, 0), (ap.shape[0], dy + sh * (ho - 1) + 1,
                                                    dx + sw * (wo - 1) + 1, ap.shape[3]), (1, sh, sw, 1))


def _conv_patches(a: jax.Array, kernel_size, strides, padding, out_hw) -> jax.Array:
    """im2col patches (B, P, kh·kw·Cin) from the shifted inputs (faster on XLA CPU than
    ``conv_general_dilated_patches``); the feature order is irrelevant for norms."""
    pat = jnp.concatenate(list(_conv_shifted_inputs(a, kernel_size, strides, padding, out_hw)), axis=-1)
    return pat.reshape(pat.shape[0], -1, pat.shape[-1])


def _ghost_sq(a: jax.Array, g: jax.Array) -> jax.Array:
    """``||Σ_p a_p g_pᵀ||²_F = Σ_{p,q} (a_p·a_q)(g_p·g_q)`` per example; a (B,P,K), g (B,P,O)."""
    hp = jax.lax.Precision.HIGHEST
    return jnp.einsum("bpq,bpq->b", jnp.einsum("bpk,bqk->bpq", a, a, precision=hp),
                      jnp.einsum("bpo,bqo->bpq", g, g, precision=hp))


def _conv_weight_grads(a, g, kernel_size, strides, padding) -> jax.Array:
    """Per-example conv kernel gradients (B, kh·kw, Cin, O), one batched matmul per offset."""
    hp = jax.lax.Precision.HIGHEST
    return jnp.stack([jnp.einsum("bhwc,bhwo->bco", s, g, precision=hp)
                      for s in _conv_shifted_inputs(a, kernel_size, strides, padding, g.shape[1:3])], 1)


# Measured on XLA CPU (benchmarks/difficulty.py): per-offset batched matmuls beat im2col for wide
# inputs, im2col (one matmul with K = kh·kw·Cin) wins for narrow ones, and the Gram form only pays
# off when it needs several times fewer multiply-adds (its P×P products run less efficiently).
_NARROW_CIN = 16
_GHOST_ADVANTAGE = 4.0


def _conv_weight_sq(a, g, kernel_size, strides, padding, method) -> jax.Array:
    """``||∇K_i||²`` per example for a conv with input a (B,H,W,Cin) and output gradient g (B,Ho,Wo,O)."""
    if method == "auto":
        direct, ghost = _conv_costs(a.shape, g.shape, kernel_size)
        method = "ghost" if _GHOST_ADVANTAGE * ghost < direct else "direct"
    b, o = g.shape[0], g.shape[-1]
    g2 = g.reshape(b, -1, o)
    if method == "ghost":
        return _ghost_sq(_conv_patches(a, kernel_size, strides, padding, g.shape[1:3]), g2)
    hp = jax.lax.Precision.HIGHEST
    if a.shape[-1] < _NARROW_CIN:
        pat = _conv_patches(a, kernel_size, strides, padding, g.shape[1:3])
        return _sq(jnp.einsum("bpk,bpo->bko", pat, g2, precision=hp))
    total = 0.0
    for s in _conv_shifted_inputs(a, kernel_size, strides, padding, g.shape[1:3]):
        total = total + _sq(jnp.einsum("bpc,bpo->bco", s.reshape(b, -1, s.shape[-1]), g2, precision=hp))
    return total


def _dense_weight_sq(a, g, method) -> jax.Array:
    """``||Σ_p a_p g_pᵀ||²`` per example for a (B, P, K), g (B, P, O)."""
    p, k, o = a.shape[1], a.shape[2], g.shape[2]
    if p == 1:
        return _sq(a) * _sq(g)
    if method == "ghost" or (method == "auto" and _GHOST_ADVANTAGE * p * p * (k + o) < p * k * o):
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


def _layer_sq_norms(calls: Sequence[_Call], records, grads, method, batch: int) -> dict[tuple[str, ...], jax.Array]:
    """Per-example squared gradient norm of every parameter owned by a recognised layer.

    Keys are full parameter paths (module path + parameter name)."""
    by_path: dict[tuple, list[_Call]] = {}
    for c in calls:
        by_path.setdefault(c.path, []).append(c)
    hp = jax.lax.Precision.HIGHEST
    out: dict[tuple[str, ...], jax.Array] = {}
    for path, group in by_path.items():
        c0 = group[0]
        gs = [grads[c.key] for c in group]
        rs = [records[c.key] for c in group]
        feat = c0.config[0] if c0.kind == "norm" else 1
        if "bias" in c0.params:
            out[path + ("bias",)] = _sq(sum(_rows(g, batch, feat).sum(1) for g in gs))
        if c0.kind == "norm":
            if "scale" in c0.params:
                out[path + ("scale",)] = _sq(sum(_rows(g * r, batch, feat).sum(1) for g, r in zip(gs, rs)))
            continue
        if "kernel" not in c0.params:
            continue
        if len(group) == 1 and (c0.kind == "dense" or rs[0].shape[0] == batch):
            # the common case: choose the cheapest exact form
            if c0.kind == "conv":
                out[path + ("kernel",)] = _conv_weight_sq(rs[0], gs[0], *c0.config, method)
            else:
                out[path + ("kernel",)] = _dense_weight_sq(_rows(rs[0], batch), _rows(gs[0], batch), method)
            continue
        # shared weights or k rows per example: per-example gradients summed, then the norm
        total = 0.0
        for c, r, g in zip(group, rs, gs):
            if c.kind == "conv":
                w = _conv_weight_grads(r, g, *c.config)
                total = total + w.reshape(batch, -1, *w.shape[1:]).sum(1)
            else:
                total = total + jnp.einsum("bpk,bpo->bko", _rows(r, batch), _rows(g, batch), precision=hp)
        out[path + ("kernel",)] = _sq(total)
    return out


# ------------------------------------------------------------------------------- public API

def _param_paths(params) -> list[tuple[str, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return [tuple(str(getattr(k, "key", k)) for k in kp) for kp, _ in flat]


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree, path, value):
    if not path:
        return value
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def _fallback_sq(net: Network, variables: Variables, x, y, paths) -> jax.Array:
    """Exact per-example squared norms for parameters no recognised layer owns (vmap(grad))."""
    sub = [_get(variables["params"], p) for p in paths]

    def loss_one(sub_vals, xi, yi):
        params = variables["params"]
        for p, v in zip(paths, sub_vals):
            params = _set(params, p, v)
        return cross_entropy(net.logits({**variables, "params": params}, xi[None]), yi[None])[0]

    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(sub, x, y)
    return sum(_sq(g) for g in grads)


def grad_sq_norms_by_param(net: Network, variables: Variables, x: jax.Array, y: jax.Array, *,
                           method: str = "auto", layers: str | Sequence[str] = "all",
                           chunk_size: int | None = None) -> dict[str, jax.Array]:
    """Per-example squared gradient norms ``||∂ℓ_i/∂θ_k||²`` for each parameter ``θ_k``.

    Returns ``{"module/path/param": (B,) array}``. ``layers="all"`` covers every parameter
    (unrecognised ones through the exact ``vmap(grad)`` fallback); ``"last"`` only the last
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
            fn = functools.partial(grad_sq_norms_by_param, net, variables, method=method, layers=layers)
            return _chunked(fn, x, y, chunk_size)
    calls, shapes = _discover(net, variables, x)
    if isinstance(layers, str) and layers == "last":
        weighted = [c for c in calls if c.kind in ("conv", "dense")]
        if not weighted:
            raise ValueError(f"{net.name} has no Conv/Dense layer to call the last layer")
        chosen = {weighted[-1].path}
    elif isinstance(layers, str) and layers == "all":
        chosen = None
    else:
        wanted = {tuple(s.split("/")) if isinstance(s, str) else tuple(s) for s in layers}
        known = {c.path for c in calls}
        missing = wanted - known
        if missing:
            raise ValueError(f"layers {sorted('/'.join(m) for m in missing)} are not recognised layers of "
                             f"{net.name}; choose from {sorted('/'.join(k) for k in known)}")
        chosen = wanted
    used = [c for c in calls if chosen is None or c.path in chosen]
    keys = {c.key for c in used}

    def loss_sum(perturb):
        logits, _, records, _ = _traced_apply(net, variables, x, {**zeros_all, **perturb})
        return cross_entropy(logits, y).sum(), records

    zeros_all = {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}
    wrt = {k: zeros_all[k] for k in keys}
    grads, records = jax.grad(loss_sum, has_aux=True)(wrt)
    sq = _layer_sq_norms(used, records, grads, method, x.shape[0])
    out = {"/".join(k): v for k, v in sq.items()}
    if chosen is None:
        covered = set(sq)
        rest = [p for p in _param_paths(variables["params"]) if p not in covered]
        if rest:
            total = _fallback_sq(net, variables, x, y, rest)
            out["<other>"] = total
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


def grad_norms(net: Network, variables: Variables, x: jax.Array, y: jax.Array, *,
               method: str = "auto", layers: str | Sequence[str] = "all",
               chunk_size: int | None = None) -> jax.Array:
    """Exact per-example gradient norms ``||∇_θ ℓ(f_θ(x_i), y_i)||₂`` (GraNd), shape (B,).

    One forward + one batched backward pass plus per-layer products (module docstring).
    ``layers="last"`` gives the cheap last-layer GraNd variant (Paul et al., NeurIPS 2021); ``chunk_size``
    see :func:`grad_sq_norms_by_param`.
    """
    sq = grad_sq_norms_by_param(net, variables, x, y, method=method, layers=layers, chunk_size=chunk_size)
    return jnp.sqrt(sum(sq.values()))


def last_layer_grad_norms(net: Network, variables: Variables, x: jax.Array, y: jax.Array) -> jax.Array:
    """Norm of the gradient w.r.t. the last layer only: for a Dense classifier on features φ,
    ``||[∂ℓ/∂z, φ ⊗ ∂ℓ/∂z]|| = ||p − y||·sqrt(1 + ||φ||²)`` (Paul et al., 2021)."""
    return grad_norms(net, variables, x, y, layers="last")


def grand_reference(net: Network, variables: Variables, x: jax.Array, y: jax.Array,
                    param_filter: Callable[[tuple[str, ...]], bool] | None = None) -> jax.Array:
    """Reference implementation: ``vmap(grad)`` materialising every per-example gradient.

    ``param_filter(path) -> bool`` restricts the norm to some parameters (e.g. the last layer).
    """
    _check_batch(x, y)

    def loss_one(params, xi, yi):
        logits = net.logits({**variables, "params": params}, xi[None])
        return cross_entropy(logits, yi[None])[0]

    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(variables["params"], x, y)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    total = 0.0
    for kp, g in flat:
        path = tuple(str(getattr(k, "key", k)) for k in kp)
        if param_filter is None or param_filter(path):
            total = total + _sq(g)
    return jnp.sqrt(total)
