"""Coreset selection baselines: k-Center greedy and Herding, per class, on network features.

These are the selection baselines that dataset distillation papers report beside random real
images (DC, Zhao et al. ICLR 2021, Tab. 1; difficulty-guided sampling compares against K-Center):

* **k-Center greedy** (Sener & Savarese, ICLR 2018): start from the example nearest the class-mean
  feature, then repeatedly add ``argmax_i min_{c ∈ S} ‖f_i − f_c‖₂`` (the example farthest from the
  chosen set), so the largest distance from any example to its nearest chosen one shrinks greedily.
* **Herding** (Welling, ICML 2009; as in iCaRL, Rebuffi et al. CVPR 2017): with the class mean
  ``μ = mean_i f_i``, step ``t`` adds ``argmin_{i ∉ S} ‖μ − (f_i + Σ_{c ∈ S} f_c) / t‖₂``, so the
  chosen set's running mean follows ``μ``.

Ties go to the lowest index. Features ``f`` are ``net.embed`` of the normalised training images
under one ConvNet (:func:`embed_features`): **randomly initialised** by default (``epochs=0``; random
ConvNet features already separate the data well enough for distribution matching, Zhao & Bilen
WACV 2023), or **trained on the whole training split** for ``epochs`` epochs with the ``dc``
recipe, which is the setting of the coreset baselines in DC/DSA (features of a network trained on
the full data). The chosen setting is recorded by the callers.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

SELECTIONS = ("random", "kcenter", "herding")


def _check_k(features: Any, k: int) -> jax.Array:
    features = jnp.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if not 1 <= int(k) <= features.shape[0]:
        raise ValueError(f"cannot choose {k} of {features.shape[0]} examples; k must lie in [1, N] (lower the IPC)")
    return features


@functools.partial(jax.jit, static_argnums=1)
def _kcenter(f: jax.Array, k: int) -> jax.Array:
    first = jnp.argmin(jnp.sum((f - f.mean(0)) ** 2, -1))
    dist = jnp.sum((f - f[first]) ** 2, -1)

    def body(t, carry):
        chosen, dist = carry
        c = jnp.argmax(dist)  # first maximum: ties to the lowest index
        return chosen.at[t].set(c.astype(jnp.int32)), jnp.minimum(dist, jnp.sum((f - f[c]) ** 2, -1))

    chosen = jnp.zeros(k, jnp.int32).at[0].set(first.astype(jnp.int32))
    return jax.lax.fori_loop(1, k, body, (chosen, dist))[0]


def kcenter_greedy(features: Any, k: int) -> np.ndarray:
    """Indices (in selection order) of ``k`` k-Center greedy picks among the rows of ``features`` (N, D)."""
    return np.asarray(_kcenter(_check_k(features, k), int(k)))


@functools.partial(jax.jit, static_argnums=1)
def _herding(f: jax.Array, k: int) -> jax.Array:
    mu = f.mean(0)

    def body(t, carry):
        chosen, taken, total = carry
        gap = jnp.sum((mu - (f + total) / (t + 1)) ** 2, -1)
        c = jnp.argmin(jnp.where(taken, jnp.inf, gap))
        return chosen.at[t].set(c.astype(jnp.int32)), taken.at[c].set(True), total + f[c]

    init = (jnp.zeros(k, jnp.int32), jnp.zeros(f.shape[0], bool), jnp.zeros_like(mu))
    return jax.lax.fori_loop(0, k, body, init)[0]


def herding(features: Any, k: int) -> np.ndarray:
    """Indices (in selection order) of ``k`` Herding picks among the rows of ``features`` (N, D)."""
    return np.asarray(_herding(_check_k(features, k), int(k)))


def select_per_class(features: Any, labels: Any, ipc: int, method: str) -> np.ndarray:
    """Indices (into the rows of ``features``) of ``ipc`` examples per class chosen by ``method``
    (``kcenter`` or ``herding``) within each class; classes in ascending order."""
    pick: dict[str, Callable] = {"kcenter": kcenter_greedy, "herding": herding}
    if method not in pick:
        raise ValueError(f"unknown selection {method!r}; choose kcenter or herding (random: jaxdd.data.random_real)")
    labels = np.asarray(labels)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < ipc:
            raise ValueError(f"class {c} has {len(idx)} examples, fewer than the {ipc} per class asked; lower --ipc")
        out.append(idx[pick[method](np.asarray(features)[idx], ipc)])
    return np.concatenate(out)


def embed_features(dataset, arch: str, key: jax.Array, *, epochs: int = 0, batch_size: int = 256,
                   progress: bool = False) -> np.ndarray:
    """(N, D) float32 ``net.embed`` features of ``dataset.x_train`` under one ``arch`` network
    initialised from ``key``; with ``epochs > 0`` it is first trained for that many epochs on the
    whole training split with the ``dc`` recipe (SGD lr 0.01, momentum 0.9, batch 256)."""
    import dataclasses

    from jaxdd.evaluate.presets import get_preset
    from jaxdd.models import create_network
    from jaxdd.train import Trainer, fit

    if epochs < 0:
        raise ValueError(f"epochs must be >= 0 (0: a randomly initialised network), got {epochs}")
    net = create_network(arch, num_classes=dataset.num_classes, input_shape=dataset.image_shape)
    k_init, k_train = jax.random.split(key)
    if epochs:
        cfg = dataclasses.replace(get_preset("dc").config, epochs=int(epochs))
        trainer = Trainer(net, cfg)
        state, _ = fit(trainer, trainer.init(k_init, 1), dataset.x_train, dataset.y_train, k_train,
                       progress=progress, desc=f"{arch} features ({epochs} epochs)")
        variables = state.model_variables(0)
    else:
        variables = net.init(k_init)
    embed = jax.jit(lambda v, x: net.embed(v, x))
    x = np.asarray(dataset.x_train, np.float32)
    n, b = len(x), min(batch_size, len(x))
    out = []
    for i in range(0, n, b):  # the last batch is padded, so one compilation
        xb = x[i:i + b]
        xb = np.concatenate([xb, np.zeros((b - len(xb), *xb.shape[1:]), np.float32)]) if len(xb) < b else xb
        out.append(np.asarray(embed(variables, xb))[:min(b, n - i)])
    return np.concatenate(out).reshape(n, -1)


def coreset_sampler(method: str, arch: str = "convnet", *, epochs: int = 0, feature_key: jax.Array | None = None
                    ) -> Callable[[jax.Array, Any, int], tuple[np.ndarray, np.ndarray]]:
    """A ``sampler(key, dataset, ipc) -> (x, y)`` choosing ``ipc`` images per class of
    ``dataset``'s training split by ``method`` (``kcenter`` / ``herding``) on :func:`embed_features`;
    pass it as ``random_real_baseline(..., sampler=...)``. The feature network is initialised from
    ``feature_key`` (then the features are computed once per dataset and shared by every IPC) or,
    without it, from each call's ``key``."""
    if method not in ("kcenter", "herding"):
        raise ValueError(f"unknown selection {method!r}; choose one of {SELECTIONS}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0 (0: a randomly initialised feature network), got {epochs}")
    cache: dict[str, Any] = {}

    def sampler(key: jax.Array, dataset, ipc: int) -> tuple[np.ndarray, np.ndarray]:
        if feature_key is None:
            feats = embed_features(dataset, arch, key, epochs=epochs)
        else:
            if cache.get("dataset") is not dataset:
                cache.update(dataset=dataset, feats=embed_features(dataset, arch, feature_key, epochs=epochs))
            feats = cache["feats"]
        idx = select_per_class(feats, dataset.y_train, ipc, method)
        return dataset.x_train[idx], dataset.y_train[idx]

    return sampler
