"""A Flax module bound to its input shape, used through pure ``init`` / ``apply`` functions.

Variables are a plain dict ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` only for
networks with BatchNorm). ``apply`` always returns ``(logits, variables)`` so that training code
is the same for stateless and stateful networks: in train mode BatchNorm statistics are updated,
otherwise the variables come back unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Variables = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Network:
    name: str
    module: nn.Module
    input_shape: tuple[int, int, int]
    num_classes: int

    def init(self, key: jax.Array) -> Variables:
        """Fresh variables for one network (pure in ``key``)."""
        x = jnp.zeros((1, *self.input_shape), jnp.float32)
        return dict(self.module.init(key, x, train=False))

    @property
    def has_batch_stats(self) -> bool:
        shapes = jax.eval_shape(self.init, jax.random.key(0))
        return "batch_stats" in shapes

    def apply(self, variables: Variables, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, Variables]:
        """Logits for ``x`` and the (possibly updated) variables."""
        if train and "batch_stats" in variables:
            logits, updates = self.module.apply(variables, x, train=True, mutable=["batch_stats"])
            return logits, {**variables, **updates}
        return self.module.apply(variables, x, train=train), variables

    def logits(self, variables: Variables, x: jax.Array) -> jax.Array:
        """Inference-mode logits."""
        return self.module.apply(variables, x, train=False)

    def embed(self, variables: Variables, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Features before the classifier. In train mode BatchNorm uses batch statistics
        (its running-statistics update is discarded)."""
        if train and "batch_stats" in variables:
            feats, _ = self.module.apply(variables, x, train=True, method="embed", mutable=["batch_stats"])
            return feats
        return self.module.apply(variables, x, train=train, method="embed")

    def batch_statistics(self, variables: Variables, x: jax.Array) -> Variables:
        """``variables`` with every BatchNorm's ``batch_stats`` replaced by the mean and (biased)
        variance of its input in a train-mode pass over ``x``: in inference mode the network then
        normalises exactly as in train mode on this batch (same logits), with the statistics as
        constants of the parameters (differentiable w.r.t. ``x``). Unchanged without BatchNorm."""
        if "batch_stats" not in variables:
            return variables
        stats: dict[tuple, tuple[jax.Array, jax.Array]] = {}

        def record(next_fun, args, kwargs, context):
            module = context.module
            if isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
                x_in = jnp.asarray(args[0], jnp.promote_types(args[0].dtype, jnp.float32))
                feat = {a % x_in.ndim for a in ((module.axis,) if isinstance(module.axis, int) else module.axis)}
                axes = tuple(i for i in range(x_in.ndim) if i not in feat)
                mu = jnp.mean(x_in, axes)
                if module.use_fast_variance:  # the same formula as flax's BatchNorm
                    var = jnp.maximum(0.0, jnp.mean(jnp.square(x_in), axes) - jnp.square(mu))
                else:
                    var = jnp.mean(jnp.square(x_in - jnp.expand_dims(mu, axes)), axes)
                path = tuple(module.path)
                if path in stats:
                    raise ValueError(f"BatchNorm {'/'.join(path)} is called more than once per forward pass; "
                                     "its batch statistics are ambiguous")
                stats[path] = (mu, var)
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):
            self.module.apply(variables, x, train=True, mutable=["batch_stats"])
        new = jax.tree.map(lambda a: a, variables["batch_stats"])  # a copy to fill in

        def put(tree, path, value):
            return {**tree, path[0]: put(tree[path[0]], path[1:], value)} if path else value

        for path, (mu, var) in stats.items():
            new = put(new, path + ("mean",), mu)
            new = put(new, path + ("var",), var)
        return {**variables, "batch_stats": new}

    def num_params(self, variables: Variables | None = None) -> int:
        params = (variables or jax.eval_shape(self.init, jax.random.key(0)))["params"]
        return int(sum(x.size for x in jax.tree.leaves(params)))
