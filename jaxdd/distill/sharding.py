"""Per-class matching losses split over the devices by class (``jax.shard_map``).

DC/DSA (gradient matching, Zhao et al. ICLR 2021; Zhao & Bilen ICML 2021) and DM (distribution
matching, Zhao & Bilen WACV 2023) sum independent per-class terms::

    L = Σ_c ℓ_c(S_c, T_c)      DC/DSA: ℓ_c = D(∇θ ℓ(S_c), ∇θ ℓ(T_c));  DM: ℓ_c = ‖mean φ(T_c) − mean φ(S_c)‖²

For large class counts (CIFAR-100, ImageNet-1K) the classes, not the images of one class, are
the natural unit to split: with ``k`` devices on the mesh axis ``data``, the C classes are padded
to ``C' = k ⌈C/k⌉`` (padding rows copy class 0, so every term stays finite, and are masked out),
device ``j`` evaluates classes ``j C'/k … (j+1) C'/k − 1`` (DC/DSA: vmapped over its classes; DM:
one ``embed`` call over its classes' images, as the unsplit loss), and one ``psum`` adds the k
partial sums. Parameters are replicated. The result equals the unsplit loss up to summation order.
DM is split only for networks without BatchNorm: with BatchNorm the reference embeds all classes
in one train-mode batch, whose statistics span the classes.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from jaxdd.distill import losses
from jaxdd.models import Network
from jaxdd.utils.mesh import DATA_AXIS


def class_split_blocks(block_sum: Callable, mesh: Mesh, class_arrays: tuple, shared: tuple = ()) -> jax.Array:
    """``Σ_j block_sum(mask_j, arrays_j, shared)`` over the devices ``j`` of the mesh axis ``data``
    (``shard_map``): ``arrays_j`` are device ``j``'s block of classes of every array in
    ``class_arrays`` (padded as in the module docstring), ``mask_j`` (its class count,) is 1 for a
    real class and 0 for a padding row; ``shared`` (a tuple of pytrees) is replicated. ``block_sum``
    returns the block's masked sum."""
    c = class_arrays[0].shape[0]
    k = mesh.shape[DATA_AXIS]
    pad = -c % k
    mask = (jnp.arange(c + pad) < c).astype(jnp.float32)
    padded = tuple(jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a for a in class_arrays)

    def block(mask_b, arrays_b, shared_b):
        # per device, the shared values enter its own classes' terms: mark them device-varying, or
        # a gradient w.r.t. them inside a term (DC's ∇θ) would be summed over the devices
        shared_b = jax.tree.map(lambda a: jax.lax.pcast(a, DATA_AXIS, to="varying"), shared_b)
        return jax.lax.psum(block_sum(mask_b, arrays_b, shared_b), DATA_AXIS)

    split = jax.shard_map(block, mesh=mesh, in_specs=(P(DATA_AXIS), P(DATA_AXIS), P()), out_specs=P())
    return split(mask, padded, shared)


def class_split_sum(per_class: Callable, mesh: Mesh, class_arrays: tuple, shared: tuple = ()) -> jax.Array:
    """``Σ_c per_class(*[a[c] for a in class_arrays], *shared)`` with the classes split over the
    mesh axis ``data`` (:func:`class_split_blocks`, each device's classes vmapped); ``class_arrays``
    share the leading class axis, ``shared`` (a tuple of pytrees, e.g. the network variables) is
    replicated."""

    def block_sum(mask_b, arrays_b, shared_b):
        terms = jax.vmap(lambda *a: per_class(*a, *shared_b))(*arrays_b)
        return jnp.sum(jnp.where(mask_b > 0, terms, 0.0))

    return class_split_blocks(block_sum, mesh, class_arrays, shared)


def _check_mesh(mesh: Mesh | None) -> Mesh:
    if mesh is None or DATA_AXIS not in mesh.shape:
        raise ValueError("class_split needs a device mesh (jaxdd.utils.mesh.data_mesh); build the method with "
                         "mesh=data_mesh(N) or leave class_split off")
    return mesh


def distribution_match_loss(net: Network, variables, x_real: jax.Array, x_syn: jax.Array,
                            real_weights: jax.Array | None, mesh: Mesh, train: bool = True,
                            real_chunk: int | None = None) -> jax.Array:
    """:func:`jaxdd.distill.losses.distribution_match_loss` with the classes split over ``mesh``."""
    if "batch_stats" in variables:
        raise ValueError(f"DM cannot split the classes of {net.name!r} over devices: its BatchNorm statistics span "
                         "all classes of the batch; use a network without BatchNorm (e.g. convnet, instance "
                         "norm) or leave class_split off")
    mesh = _check_mesh(mesh)

    def block_sum(mask_b, arrays_b, shared_b):
        # one embed call for the device's classes (as the unsplit loss), padding classes weighted 0
        xr, xs, w = arrays_b if real_weights is not None else (*arrays_b, None)
        return losses.distribution_match_loss(net, shared_b[0], xr, xs, w, train=train, real_chunk=real_chunk,
                                              class_weights=mask_b)

    arrays = (x_real, x_syn) + (() if real_weights is None else (real_weights,))
    return class_split_blocks(block_sum, mesh, arrays, (variables,))


def gradient_match_loss(net: Network, variables, x_real: jax.Array, x_syn: jax.Array, metric: str,
                        real_weights: jax.Array | None, mesh: Mesh, real_chunk: int | None = None) -> jax.Array:
    """:func:`jaxdd.distill.losses.gradient_match_loss` with the classes split over ``mesh``."""
    mesh = _check_mesh(mesh)
    c, n, m = x_real.shape[0], x_real.shape[1], x_syn.shape[1]
    w = jnp.ones((c, n), jnp.float32) if real_weights is None else real_weights

    def one(xr, xs, label, wc, v):
        return losses.class_gradient_match_loss(net, v, xr, jnp.full((n,), label), xs, jnp.full((m,), label),
                                                metric, wc, real_chunk)

    return class_split_sum(one, mesh, (x_real, x_syn, jnp.arange(c), w), (variables,))
