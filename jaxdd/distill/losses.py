"""Matching losses: pure, jittable functions of a model and its parameters.

The model is a jaxdd :class:`~jaxdd.models.Network` with its variables (differentiated w.r.t.
``variables["params"]``), a :class:`jaxdd.models.adapters.Model` or a plain
``apply_fn(params, x) -> logits`` with its params (DM needs features: ``embed_fn(params, x)``);
see :func:`jaxdd.models.adapters.bind`. The SDC penalty and difficulty weights live in
:mod:`jaxdd.difficulty` (re-exported here).

Batched losses take the real and synthetic images of several classes at once as
``(C, n, H, W, Ch)`` / ``(C, m, H, W, Ch)`` arrays (``C`` classes, row ``c`` holds class
``classes[c]``) and return the sum over classes, as the reference implementations do.
Real-side quantities are constants (``stop_gradient``); the losses are differentiated w.r.t. the
synthetic images.

Sources: gradient matching and its per-output-channel distance, Zhao, Mopuri & Bilen, "Dataset
Condensation with Gradient Matching" (ICLR 2021, ``match_loss`` / ``distance_wb`` of the authors'
code); distribution matching, Zhao & Bilen, "Dataset Condensation with Distribution Matching"
(WACV 2023).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdd.difficulty.gradnorm import ModelLike
from jaxdd.difficulty.sdc import safe_norm
from jaxdd.models import Network
from jaxdd.models.adapters import ApplyFn, bind, require_embed
from jaxdd.utils.labels import cross_entropy

METRICS = ("ours", "mse", "cos")
EPS = 1e-6  # the reference code's epsilon in the cosine denominators


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown gradient-matching metric {metric!r}; choose one of {METRICS} "
                         "('ours' = the reference per-output-channel 1 - cos)")


def _channel_rows(g: jax.Array) -> jax.Array:
    """(out_channels, -1) rows of a kernel gradient; jaxdd kernels are HWIO / IO (output last)."""
    return jnp.moveaxis(g, -1, 0).reshape(g.shape[-1], -1)


def layer_distance(g_syn: jax.Array, g_real: jax.Array) -> jax.Array:
    """Σ over output channels of ``1 - cos(g_syn[o], g_real[o])`` for one parameter tensor.

    Rows are the flattened per-output-channel (last-axis) gradients, as ``distance_wb`` in the DC
    reference code: conv kernels (HWIO) and dense kernels (IO) give one row per output, a LayerNorm
    affine over a feature map ((H, W, C), the reference's (C, H, W)) one row of H·W per channel;
    1-D tensors (biases, per-channel norm scales) contribute 0.
    """
    if g_real.ndim <= 1:
        return jnp.zeros((), jnp.float32)
    a, b = _channel_rows(g_syn), _channel_rows(g_real)
    cos = jnp.sum(a * b, -1) / (safe_norm(a, -1) * safe_norm(b, -1) + EPS)
    return jnp.sum(1.0 - cos)


def gradient_distance(g_syn: Any, g_real: Any, metric: str = "ours") -> jax.Array:
    """Distance between two gradient pytrees of the same structure (DC's ``match_loss``).

    * ``ours``: Σ_layers :func:`layer_distance` (per-output-channel ``1 - cos``, 1-D skipped);
    * ``mse``: ``‖vec(g_syn) - vec(g_real)‖²`` over all tensors;
    * ``cos``: ``1 - cos(vec(g_syn), vec(g_real))`` over all tensors.
    """
    _check_metric(metric)
    ls, lr = jax.tree.leaves(g_syn), jax.tree.leaves(g_real)
    if len(ls) != len(lr):
        raise ValueError(f"gradient pytrees differ: {len(ls)} vs {len(lr)} tensors")
    if metric == "ours":
        return sum((layer_distance(s, r) for s, r in zip(ls, lr)), jnp.zeros((), jnp.float32))
    vs = jnp.concatenate([s.ravel() for s in ls])
    vr = jnp.concatenate([r.ravel() for r in lr])
    if metric == "mse":
        return jnp.sum(jnp.square(vs - vr))
    return 1.0 - jnp.sum(vs * vr) / (safe_norm(vs) * safe_norm(vr) + EPS)


def classifier_loss(net: ModelLike, params: Any, variables: Any, x: jax.Array, y: jax.Array,
                    weights: jax.Array | None = None) -> jax.Array:
    """(Weighted) mean cross-entropy of ``net`` with ``params`` in inference mode.

    ``weights`` (n,) give ``Σ w_i ℓ_i / Σ w_i``; other collections (BatchNorm statistics) are
    taken from ``variables`` unchanged (for a plain ``apply_fn`` only ``params`` is used).
    """
    losses = cross_entropy(bind(net, variables).apply(params, x), y)
    if weights is None:
        return jnp.mean(losses)
    return jnp.sum(weights * losses) / jnp.sum(weights)


def chunked_sum(fn, xs: Any, chunk: int) -> Any:
    """``Σ_j fn(xs[j·chunk : (j+1)·chunk])`` over consecutive chunks of the leading axis (the last
    one shorter when ``chunk`` does not divide it): a ``lax.scan`` that holds one chunk's
    intermediates at a time."""
    n = jax.tree.leaves(xs)[0].shape[0]
    full = n // chunk
    head = jax.tree.map(lambda a: a[: full * chunk].reshape((full, chunk) + a.shape[1:]), xs)
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                        jax.eval_shape(fn, jax.tree.map(lambda a: a[0], head)))
    total, _ = jax.lax.scan(lambda acc, x: (jax.tree.map(jnp.add, acc, fn(x)), None), zero, head)
    if n % chunk:
        total = jax.tree.map(jnp.add, total, fn(jax.tree.map(lambda a: a[full * chunk:], xs)))
    return total


def real_gradient(net: ModelLike, variables: Any, x: jax.Array, y: jax.Array,
                  weights: jax.Array | None = None, chunk: int | None = None) -> Any:
    """``∇_θ`` of the (weighted) mean cross-entropy of a real batch, as a constant (``stop_gradient``).

    With ``chunk`` the batch goes through the network ``chunk`` images at a time and the gradient
    is accumulated: ``Σ_j ∇_θ Σ_{i∈j} w_i ℓ_i / Σ_i w_i`` (``w = 1`` without weights), the same
    gradient up to float summation order with the activations of one chunk in memory.
    """
    bound = bind(net, variables)
    params = bound.params
    x = jax.lax.stop_gradient(x)
    if chunk is None or chunk >= x.shape[0]:
        g = jax.grad(classifier_loss, argnums=1)(net, params, variables, x, y, weights)
    else:
        w = jnp.ones(x.shape[:1], jnp.float32) if weights is None else weights

        def part(batch):
            xc, yc, wc = batch
            return jax.grad(lambda p: jnp.sum(wc * cross_entropy(bound.apply(p, xc), yc)))(params)

        total = jnp.sum(w)
        g = jax.tree.map(lambda a: a / total, chunked_sum(part, (x, y, w), chunk))
    return jax.lax.stop_gradient(g)


def class_gradient_match_loss(net: ModelLike, variables: Any, x_real: jax.Array, y_real: jax.Array,
                              x_syn: jax.Array, y_syn: jax.Array, metric: str = "ours",
                              real_weights: jax.Array | None = None, real_chunk: int | None = None) -> jax.Array:
    """Gradient-matching loss of one class (DC): ``D(∇_θ ℓ(S_c), ∇_θ ℓ(T_c))``.

    ``real_weights`` (n,) turn the real loss into a weighted mean (difficulty-weighted matching);
    ``real_chunk`` accumulates the real gradient over chunks of that many images
    (:func:`real_gradient`).
    """
    params = bind(net, variables).params
    g_real = real_gradient(net, variables, x_real, y_real, real_weights, real_chunk)
    g_syn = jax.grad(classifier_loss, argnums=1)(net, params, variables, x_syn, y_syn)
    return gradient_distance(g_syn, g_real, metric)


def _classes(classes: jax.Array | None, c: int) -> jax.Array:
    return jnp.arange(c, dtype=jnp.int32) if classes is None else jnp.asarray(classes, jnp.int32)


def _check_batched(x_real: jax.Array, x_syn: jax.Array, real_weights) -> None:
    if x_real.ndim != 5 or x_syn.ndim != 5 or x_real.shape[0] != x_syn.shape[0]:
        raise ValueError("batched matching losses take per-class stacks (C, n, H, W, Ch) and "
                         f"(C, m, H, W, Ch) with the same C; got {x_real.shape} and {x_syn.shape}")
    if real_weights is not None and tuple(real_weights.shape) != tuple(x_real.shape[:2]):
        raise ValueError(f"real_weights must have shape (C, n) = {x_real.shape[:2]}, got {real_weights.shape}")


def gradient_match_loss(net: ModelLike, variables: Any, x_real: jax.Array, x_syn: jax.Array,
                        metric: str = "ours", real_weights: jax.Array | None = None,
                        classes: jax.Array | None = None, class_batch: int | None = None,
                        real_chunk: int | None = None) -> jax.Array:
    """Σ_c :func:`class_gradient_match_loss` for all classes at once (vmapped over classes).

    ``x_real`` (C, n, ...), ``x_syn`` (C, m, ...), ``real_weights`` (C, n) or None; row c has
    label ``classes[c]`` (default ``c``). ``class_batch`` vmaps that many classes at a time
    (``lax.map``) to bound memory; None vmaps all. ``real_chunk``: see :func:`real_gradient`.
    """
    _check_metric(metric)
    _check_batched(x_real, x_syn, real_weights)
    c, n, m = x_real.shape[0], x_real.shape[1], x_syn.shape[1]
    labels = _classes(classes, c)

    def one(xr, xs, label, w):
        return class_gradient_match_loss(net, variables, xr, jnp.full((n,), label), xs,
                                         jnp.full((m,), label), metric, w, real_chunk)

    w = jnp.ones((c, n), jnp.float32) if real_weights is None else real_weights
    if class_batch is None or class_batch >= c:
        return jnp.sum(jax.vmap(one)(x_real, x_syn, labels, w))
    return jnp.sum(jax.lax.map(lambda a: one(*a), (x_real, x_syn, labels, w), batch_size=class_batch))


def weighted_mean(f: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean over axis -2 of features ``(..., n, D)``, weighted by ``weights (..., n)`` if given."""
    if weights is None:
        return jnp.mean(f, axis=-2)
    return jnp.sum(weights[..., None] * f, axis=-2) / jnp.sum(weights, axis=-1)[..., None]


def distribution_match_loss(net: ModelLike, variables: Any, x_real: jax.Array, x_syn: jax.Array,
                            real_weights: jax.Array | None = None, train: bool = True,
                            real_chunk: int | None = None, *, embed_fn: ApplyFn | None = None,
                            class_weights: jax.Array | None = None) -> jax.Array:
    """DM: ``Σ_c ‖mean_w φ(T_c) - mean φ(S_c)‖²`` on the features φ of the model's ``embed``
    (``net.embed`` of a jaxdd ``Network``; ``embed_fn(params, x)`` with a plain ``apply_fn``).

    ``x_real`` (C, n, ...), ``x_syn`` (C, m, ...). With ``real_weights`` (C, n) the real class
    mean is ``Σ w_i φ(x_i) / Σ w_i`` (difficulty-weighted class means). All classes go through
    one ``embed`` call, as the reference does for BatchNorm networks (``train=True``: BatchNorm
    uses the statistics of the whole real / synthetic batch). ``real_chunk`` embeds the real
    images that many at a time (``lax.map``; they need no gradient): the same features with less
    memory and, on CPU, faster convolutions; ignored for BatchNorm networks, whose statistics
    span the whole batch (a plain ``embed_fn`` must treat images independently to use it).
    ``train`` matters for a jaxdd ``Network`` only. ``class_weights`` (C,) scales each class's
    term (0 drops a class: the padding classes of ``jaxdd.distill.sharding``).

    The real images are flattened image-major, ``(n, C)``, so that a real batch split over devices
    along ``n`` (``jaxdd.distill.base.RealData.sample`` with a mesh) stays split in the one
    ``embed`` call (class-major flattening would merge a split minor axis and gather the batch).
    """
    _check_batched(x_real, x_syn, real_weights)
    bound = bind(net, variables, embed_fn=embed_fn, train=train)
    embed, params = require_embed(bound, "the distribution-matching loss"), bound.params
    c, n, m = x_real.shape[0], x_real.shape[1], x_syn.shape[1]
    flat = jax.lax.stop_gradient(jnp.swapaxes(x_real, 0, 1).reshape(n * c, *x_real.shape[2:]))
    if real_chunk is None or real_chunk >= c * n or (isinstance(net, Network) and "batch_stats" in variables):
        f_real = embed(params, flat)
    else:
        f_real = jax.lax.map(lambda xi: embed(params, xi[None])[0], flat, batch_size=real_chunk)
    f_syn = embed(params, x_syn.reshape(c * m, *x_syn.shape[2:]))
    mu_real = jax.lax.stop_gradient(weighted_mean(jnp.swapaxes(f_real.reshape(n, c, -1), 0, 1), real_weights))
    mu_syn = weighted_mean(f_syn.reshape(c, m, -1), None)
    if class_weights is not None:
        return jnp.sum(class_weights[:, None] * jnp.square(mu_real - mu_syn))
    return jnp.sum(jnp.square(mu_real - mu_syn))
