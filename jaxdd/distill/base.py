"""The distillation-method protocol, the method registry and the real-data record methods read.

See the package docstring (``jaxdd.distill``) for the protocol a method implements.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, NamedTuple, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdd.data.sampler import ClassIndex, class_sample_indices
from jaxdd.models import Network
from jaxdd.models.adapters import as_network
from jaxdd.utils.mesh import DATA_AXIS

INITS = ("real", "noise")


# ----------------------------------------------------------------------------------- real data

@flax.struct.dataclass
class RealData:
    """The real training images a method matches, with optional per-example difficulty weights.

    A pytree (pass it to jitted updates as an argument); ``num_classes`` and ``counts`` are static.
    Build it with :meth:`from_dataset` (a pruned ``Dataset.subset`` works the same) or
    :meth:`from_arrays`.
    """

    images: jax.Array  # (N, H, W, Ch) float32, normalised
    labels: jax.Array  # (N,) int32
    class_index: ClassIndex
    weights: jax.Array | None = None  # (N,) float32 >= 0, or None (uniform)
    num_classes: int = flax.struct.field(pytree_node=False, default=0)
    counts: tuple[int, ...] = flax.struct.field(pytree_node=False, default=())

    @classmethod
    def from_arrays(cls, images: Any, labels: Any, num_classes: int, weights: Any = None) -> "RealData":
        images = np.asarray(images, np.float32)
        labels = np.asarray(labels)
        if images.ndim != 4:
            raise ValueError(f"real images must be (N, H, W, C), got shape {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"need one integer class label per real image: {len(images)} images, "
                             f"labels {labels.dtype} {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"real labels must lie in [0, {num_classes}) (the dataset's classes), got "
                             f"[{labels.min()}, {labels.max()}]; check the labels or --dataset")
        if not np.all(np.isfinite(images)):
            raise ValueError("real images contain NaN or inf; check the dataset files")
        counts = np.bincount(labels, minlength=num_classes)
        if weights is not None:
            weights = np.asarray(weights, np.float32)
            if weights.shape != labels.shape:
                raise ValueError(f"need one difficulty weight per real image: {len(labels)} images, weights "
                                 f"of shape {weights.shape} (subset the weights together with the data)")
            if not np.all(np.isfinite(weights)) or weights.min() < 0:
                raise ValueError("difficulty weights must be finite and >= 0")
            per_class = np.bincount(labels, weights=weights, minlength=num_classes)
            if np.any((per_class <= 0) & (counts > 0)):
                raise ValueError(f"classes {np.flatnonzero((per_class <= 0) & (counts > 0)).tolist()} have zero total "
                                 "difficulty weight; give every class some positive weight")
            weights = jnp.asarray(weights)
        index = ClassIndex.from_labels(labels, num_classes)  # raises naming empty classes
        return cls(images=jnp.asarray(images), labels=jnp.asarray(labels, jnp.int32), class_index=index,
                   weights=weights, num_classes=int(num_classes), counts=tuple(int(c) for c in counts))

    @classmethod
    def from_dataset(cls, dataset, weights: Any = None) -> "RealData":
        """The training split of a :class:`jaxdd.data.Dataset` (or of a pruned ``subset``)."""
        return cls.from_arrays(dataset.x_train, dataset.y_train, dataset.num_classes, weights)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def min_count(self) -> int:
        return min(self.counts)

    def check_ipc(self, ipc: int) -> None:
        """``ValueError`` unless every class has at least ``ipc`` real images (real init needs them)."""
        if not isinstance(ipc, (int, np.integer)) or isinstance(ipc, bool) or ipc < 1:
            raise ValueError(f"ipc (images per class) must be a positive integer, got {ipc!r}")
        small = [c for c, n in enumerate(self.counts) if n < ipc]
        if small:
            raise ValueError(f"ipc={ipc} is larger than class {small[0]}, which has {self.counts[small[0]]} real "
                             f"images (classes {small} are too small); use --ipc <= {self.min_count} or keep "
                             "more data when pruning")

    def batch_size(self, requested: int) -> int:
        """Real images per class per draw: ``min(requested, smallest class)`` (the reference takes
        ``permutation(class)[:n]``, fewer when a class is smaller)."""
        return int(min(requested, self.min_count))

    def sample(self, key: jax.Array, n: int, mesh: Mesh | None = None) -> tuple[jax.Array, jax.Array | None]:
        """``n`` distinct real images of every class: images (C, n, H, W, Ch) and their weights
        (C, n) (None without weights). Class c uses ``split(key, C)[c]`` (as
        ``jaxdd.data.sampler.sample_class_batches``). With ``mesh`` the ``n`` axis is split over
        the devices (``n`` must be a multiple of the mesh size)."""
        c = self.num_classes
        idx = jax.vmap(lambda k, cl: class_sample_indices(k, self.class_index, cl, n))(
            jax.random.split(key, c), jnp.arange(c))
        x = self.images[idx]
        w = None if self.weights is None else self.weights[idx]
        if mesh is not None:
            if n % mesh.size:
                raise ValueError(f"the real batch per class ({n}) must be a multiple of the {mesh.size} devices "
                                 "to shard it; choose batch_real accordingly or run without a mesh")
            x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, DATA_AXIS)))
            if w is not None:
                w = jax.lax.with_sharding_constraint(w, NamedSharding(mesh, P(None, DATA_AXIS)))
        return x, w


def init_images(key: jax.Array, real: RealData, ipc: int, init: str) -> tuple[jax.Array, jax.Array]:
    """Initial synthetic set, grouped by class: ``ipc`` distinct real images per class (``real``)
    or standard-normal noise in the normalised space (``noise``). Returns (images, labels)."""
    real.check_ipc(ipc)
    c = real.num_classes
    labels = jnp.repeat(jnp.arange(c, dtype=jnp.int32), ipc)
    if init == "real":
        x, _ = real.sample(key, ipc)
        return x.reshape((c * ipc,) + real.image_shape), labels
    if init == "noise":
        return jax.random.normal(key, (c * ipc,) + real.image_shape, jnp.float32), labels
    raise ValueError(f"unknown init {init!r}; choose one of {INITS}")


# ---------------------------------------------------------------------- the images' optimiser

def _no_start(key: jax.Array, images: jax.Array, opt_state: Any) -> tuple[jax.Array, Any]:
    return images, opt_state


class ImageOptimizer(NamedTuple):
    """The optimiser of a method's synthetic images: an ``optax.GradientTransformation``
    (``init(images)``, ``update(grads, opt_state, images) -> (updates, opt_state)``) plus
    ``start(key, images, opt_state) -> (images, opt_state)``, run once after ``init`` with the
    method's initialisation key (LD3M draws its latents there and regenerates the images; plain
    optimisers keep them). Methods take any ``optax.GradientTransformation`` (:func:`image_optimizer`)."""

    init: Callable[[jax.Array], Any]
    update: Callable[..., tuple[Any, Any]]
    start: Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]] = _no_start


def image_optimizer(tx: optax.GradientTransformation) -> ImageOptimizer:
    """``tx`` as an :class:`ImageOptimizer` (a plain transformation starts from the images as they are)."""
    return tx if isinstance(tx, ImageOptimizer) else ImageOptimizer(tx.init, tx.update)


def start_images(tx: ImageOptimizer, key: jax.Array, images: jax.Array) -> tuple[jax.Array, Any]:
    """``(images, opt_state)`` of a method's initial state: ``tx.start(key, images, tx.init(images))``."""
    return tx.start(key, images, tx.init(images))


# ------------------------------------------------------------------------------ memory planning

#: Fraction of the available memory a method's matching step may plan to use (the rest is left
#: for the arrays outside it, XLA's compiler, other processes and the estimate's error: DC at
#: IPC 10 planned at 4.4 GiB reached 7.9 GB resident on CPU).
MEMORY_FRACTION = 0.5


class MemoryPlanError(ValueError):
    """Even the smallest matching step does not fit the available memory."""


def compiled_memory_bytes(compiled: Any) -> int | None:
    """Arguments + outputs + temporaries of a compiled XLA program (``memory_analysis()``), or
    None where the backend does not report it."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
    except Exception:  # not every backend reports it
        return None


def available_memory_bytes(device: Any = None) -> int | None:
    """Memory free for a new computation on ``device`` (default: the first device): on CPU
    ``MemAvailable`` of ``/proc/meminfo``; on accelerators ``bytes_limit - bytes_in_use`` of
    ``device.memory_stats()``; None where neither is reported."""
    device = jax.devices()[0] if device is None else device
    if device.platform == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def choose_class_batch(estimate: Callable[[int, int | None], int | None], num_classes: int, batch: int,
                       budget: int, min_chunk: int = 8,
                       first_chunk: int | None = None) -> tuple[int, int | None, int | None]:
    """The matching step's (class batch, real chunk, estimated bytes) that fits ``budget`` bytes.

    ``estimate(k, r)`` is the compiled memory of one matching step over ``k`` classes whose real
    batches (``batch`` images per class) go through the network ``r`` at a time (None: all at
    once), or None if the backend reports none. Preference: all classes with real chunk
    ``first_chunk``; else the largest class batch that fits (interpolated linearly between the
    estimates at ``num_classes`` and 1 classes, then checked); else one class at a time with the
    real batch halved until it fits (down to ``min_chunk``). Raises :class:`MemoryPlanError`
    when one class with the smallest chunk does not fit.
    """
    full = estimate(num_classes, first_chunk)
    if full is None or full <= budget:
        return num_classes, first_chunk, full
    one = estimate(1, first_chunk) if num_classes > 1 else full
    if one <= budget:
        per_class = max((full - one) / max(num_classes - 1, 1), 1.0)
        k = int(max(1, min(num_classes - 1, 1 + (budget - one) // per_class)))
        while k > 1:
            m = estimate(k, first_chunk)
            if m <= budget:
                return k, first_chunk, m
            k = max(1, k // 2)
        return 1, first_chunk, one
    chunk, m = min(first_chunk or batch, batch), one
    while chunk // 2 >= min_chunk:
        chunk //= 2
        m = estimate(1, chunk)
        if m <= budget:
            return 1, chunk, m
    raise MemoryPlanError(
        f"one class of the matching step needs about {m / 2**30:.2f} GiB (real batch {batch} in chunks of {chunk}) "
        f"but only {budget / 2**30:.2f} GiB may be used ({MEMORY_FRACTION:.0%} of the available memory); free "
        "memory, lower the real batch (--real-batch-size) or the IPC, or set --class-batch to force a class batch "
        "without this check")


# --------------------------------------------------------------------------------- the protocol

class Method(Protocol):
    """Everything the driver uses of a distillation method (see ``jaxdd.distill`` docstring).

    ``config`` is a frozen dataclass with at least ``ipc``, ``iterations``, ``lr_img`` (named in
    the NaN guard's advice) and ``sdc`` (reported in the results table); ``network`` is the
    network the set is distilled (and evaluated) with; ``eval_preset`` the evaluation preset
    that fits the sets it makes (``dc``, ``dc-dsa``, ``mtt``); ``extendable`` is False when
    ``update`` depends on the total ``config.iterations`` (resume then refuses a changed total).
    """

    name: str
    config: Any
    network: Network
    eval_preset: str
    extendable: bool

    def for_dataset(self, dataset: Any) -> "Method":
        """The method to run on ``dataset`` (the one its test split and normalisation come from):
        ``ValueError`` when it does not fit (an expert buffer or prior made for another dataset),
        else itself or a copy set up for it. Called once by the driver before ``init``."""
        ...

    def init(self, key: jax.Array, real: RealData) -> Any: ...

    def update(self, state: Any, real: RealData) -> tuple[Any, dict[str, jax.Array]]: ...

    def synthetic(self, state: Any) -> tuple[jax.Array, jax.Array, jax.Array | None]: ...


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    config_cls: type
    build: Callable[..., Method]  # build(network, config, mesh=None) -> Method
    description: str


_METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, config_cls: type, description: str = ""):
    """Decorator registering ``build(network, config, mesh=None) -> Method`` under ``name``."""
    def wrap(build):
        _METHODS[name] = MethodSpec(name, config_cls, build, description)
        return build
    return wrap


def available_methods() -> list[str]:
    return sorted(_METHODS)


def method_spec(name: str) -> MethodSpec:
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown distillation method {name!r}.{hint} Available: {', '.join(available_methods())}")
    return _METHODS[name]


def method_config(name: str, **overrides: Any) -> Any:
    """The config dataclass of method ``name`` with ``overrides`` (unknown fields raise)."""
    spec = method_spec(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"method {name!r} has no setting(s) {bad}; its settings are {sorted(fields)}")
    return spec.config_cls(**overrides)


def build_method(name: str, network: Any, mesh: Mesh | None = None, dataset: Any = None,
                 **overrides: Any) -> Method:
    """``build_method("dc", net, ipc=10, sdc=0.1)``: the registered method with its config.

    ``network``: a jaxdd ``Network``, or an own model that can initialise fresh networks (a
    ``jaxdd.models.adapters.Model`` with ``init``, a ``flax.linen`` module, an nnx constructor
    ``lambda rngs: ...``; see ``jaxdd.models.adapters.as_network``), which needs ``dataset`` as a
    ``Dataset`` (or ``RealData``) for the image shape and class count. ``dataset`` (a ``Dataset`` or
    its name) also picks the reference DSA strategy of a method with ``dsa`` and no ``dsa_strategy``
    given (``jaxdd.augment.default_strategy``: no ``flip`` for digit datasets); without it such a
    method falls back on its own default."""
    config = method_config(name, **overrides)
    if not isinstance(network, Network):
        if not hasattr(dataset, "image_shape"):
            raise ValueError(f"building {name!r} on an own model needs the image shape and class count: pass "
                             "dataset= the Dataset (or RealData), or a Network from "
                             "jaxdd.models.adapters.as_network(model, input_shape)")
        network = as_network(network, dataset.image_shape, dataset.num_classes)
    if isinstance(dataset, RealData):  # shapes only; it has no name for the DSA strategy
        dataset = None
    if (dataset is not None and getattr(config, "dsa", False) and getattr(config, "dsa_strategy", "") is None
            and not isinstance(dataset, int)):
        from jaxdd.augment import default_strategy

        config = dataclasses.replace(config, dsa_strategy=default_strategy(dataset))
    return method_spec(name).build(network, config, mesh=mesh)


def config_dict(config: Any) -> dict:
    """A method config as a JSON-ready dict (recorded in every output)."""
    return dataclasses.asdict(config)
