"""DC, DSA and DM as ``init`` / ``update`` pairs over a synthetic-image state, with SDC
(Wang et al. 2024, arXiv 2408.12483) as a plug-in.

* **DC** (Zhao, Mopuri & Bilen, ICLR 2021): each iteration samples a fresh network; ``outer_loop``
  times: match per-class gradients of the real batch (``batch_real`` per class) and the synthetic
  images (:func:`~jaxdd.distill.losses.gradient_match_loss`), take one SGD step on the images
  (``lr_img`` 0.1, momentum 0.5), then (except after the last outer loop) train the network on
  the synthetic set for ``inner_loop`` epochs (SGD ``lr_net`` 0.01, no momentum, minibatches of
  ``batch_train``). (outer, inner) by IPC: 1→(1,1), 10→(10,50), 20→(20,25), 30→(30,20),
  40→(40,15), 50→(50,10); other IPCs take the nearest entry (ties: the smaller IPC).
* **DSA** (Zhao & Bilen, ICML 2021) = DC with one siamese DSA draw per class applied to the
  real and the synthetic batch inside the matching, and per-sample DSA in the inner training.
* **DM** (Zhao & Bilen, WACV 2023): each iteration a fresh untrained network; loss
  Σ_c ‖mean φ(DSA(T_c)) − mean φ(DSA(S_c))‖² (:func:`~jaxdd.distill.losses.distribution_match_loss`);
  SGD on the images, ``lr_img`` 1.0, momentum 0.5; 20,000 iterations; real init.

All three optionally add SDC, ``λ · penalty`` with :func:`~jaxdd.difficulty.sdc.sdc_penalty`
evaluated with the network state of the matching loss on the synthetic images exactly as the
matching loss sees them (DSA-augmented for DSA/DM): DC/DSA in inference mode with the BatchNorm
statistics set from real images, DM with BatchNorm normalising by the statistics of the whole
synthetic batch (``train=True``, as DM's embedding); and use per-real-example difficulty weights
(``RealData.weights``) in the real gradient (DC/DSA) or the real class means (DM).

Everything runs for all classes at once: per-class losses are vmapped; the outer and inner loops
are ``lax.scan``s, so one ``jax.jit(method.update)`` compiles the whole iteration. Memory: when
``class_batch`` is None, the first trace of ``update`` plans the matching step from XLA's compiled
memory estimate against the available memory (:meth:`_ImageMethod.memory_plan`, printed): how
many classes are vmapped together (``lax.map`` over class batches) and how many real images go
through the network per call (the real gradient / features accumulated over chunks); a set
``class_batch`` skips the plan. On CPU, where XLA's convolutions run faster on small batches,
DC/DSA match one class per call (:data:`CPU_CLASS_BATCH`) and all methods send the real images
through the network 64 at a time (:data:`CPU_REAL_CHUNK`). The plan changes the summation order
only, not the result. BatchNorm networks follow the reference: before each matching step the
running statistics are set by one train-mode pass over 16 real images per class, and matching runs
in inference mode.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxdd.augment import DSAParams, default_strategy, dsa, parse_strategy
from jaxdd.difficulty.sdc import SDC_MODES, sdc_penalty
from jaxdd.distill import losses, sharding
from jaxdd.distill.base import (INITS, MEMORY_FRACTION, ImageOptimizer, RealData, available_memory_bytes,
                                choose_class_batch, compiled_memory_bytes, image_optimizer, init_images,
                                register_method, start_images)
from jaxdd.models import Network
from jaxdd.train import Trainer, TrainConfig, epoch_batches, epoch_tail

# (ipc, outer_loop, inner_loop): the reference ``get_loops`` table
DC_LOOPS = ((1, 1, 1), (10, 10, 50), (20, 20, 25), (30, 30, 20), (40, 40, 15), (50, 50, 10))
BN_IMAGES_PER_CLASS = 16  # reference BN_size_pc
#: Real images per network call on CPU (DM's embedding, DC/DSA's real gradient), where XLA's
#: convolutions run faster on small batches than on the 2,560 images of IPC 10 at once
#: (``benchmarks/distill.py --real-chunks``, ``benchmarks/dc_profile.py --plans``).
CPU_REAL_CHUNK = 64
#: Most classes per matching call of DC/DSA on CPU (None: as many as fit): one class at a time
#: with real chunks of 64 runs DC's matching step 1.46x faster than 8 classes at once
#: (``benchmarks/dc_profile.py --plans 1:64,8:0``), in a fraction of the memory.
CPU_CLASS_BATCH = 1
#: Below this many real images per matching step the memory plan is skipped (all classes at
#: once): small problems fit anywhere and need no extra compilation.
PLAN_MIN_REAL_IMAGES = 1024


def dc_loops(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) for ``ipc``: the reference table, nearest entry otherwise."""
    _, outer, inner = min(DC_LOOPS, key=lambda row: (abs(row[0] - ipc), row[0]))
    return outer, inner


@flax.struct.dataclass
class ImageState:
    """State of a method that learns synthetic images directly."""

    images: jax.Array  # (C * ipc, H, W, Ch), grouped by class
    labels: jax.Array  # (C * ipc,) int32
    opt_state: Any  # optax SGD-with-momentum state of the images
    key: jax.Array  # typed PRNG key, split every update
    step: jax.Array  # int32 iterations done


@dataclasses.dataclass(frozen=True)
class MatchingConfig:
    """Settings shared by DC, DSA and DM (the per-method defaults are the authors')."""

    ipc: int = 1
    iterations: int = 1000
    init: str = "real"  # "real" or "noise"
    lr_img: float = 0.1
    momentum: float = 0.5
    batch_real: int = 256  # real images per class per matching step
    dsa: bool = False
    dsa_strategy: str | None = None  # None: by dataset (build_method(dataset=...)), else with flip
    sdc: float = 0.0  # SDC λ
    sdc_mode: str = "mean"  # "mean" per-example norms or "batch" gradient norm
    sdc_squared: bool = False
    class_batch: int | None = None  # classes vmapped together (None: all)

    def __post_init__(self):
        def bad(msg):
            raise ValueError(f"{type(self).__name__}: {msg}")

        if not isinstance(self.ipc, int) or isinstance(self.ipc, bool) or self.ipc < 1:
            bad(f"ipc must be a positive integer, got {self.ipc!r}")
        if not isinstance(self.iterations, int) or self.iterations < 0:
            bad(f"iterations must be a non-negative integer, got {self.iterations!r}")
        if self.init not in INITS:
            bad(f"init must be one of {INITS}, got {self.init!r}")
        if not self.lr_img > 0:
            bad(f"lr_img must be > 0, got {self.lr_img}")
        if not 0 <= self.momentum < 1:
            bad(f"momentum must lie in [0, 1), got {self.momentum}")
        if not isinstance(self.batch_real, int) or self.batch_real < 1:
            bad(f"batch_real must be a positive integer, got {self.batch_real!r}")
        if not self.sdc >= 0:
            bad(f"sdc (the SDC weight λ) must be >= 0, got {self.sdc}")
        if self.sdc_mode not in SDC_MODES:
            bad(f"sdc_mode must be one of {SDC_MODES}, got {self.sdc_mode!r}")
        if self.class_batch is not None and (not isinstance(self.class_batch, int) or self.class_batch < 1):
            bad(f"class_batch must be a positive integer or None, got {self.class_batch!r}")
        if self.dsa_strategy is not None:
            parse_strategy(self.dsa_strategy)


@dataclasses.dataclass(frozen=True)
class DCConfig(MatchingConfig):
    outer_loop: int | None = None  # None: from the IPC table
    inner_loop: int | None = None
    lr_net: float = 0.01
    batch_train: int = 256
    metric: str = "ours"

    def __post_init__(self):
        super().__post_init__()
        outer, inner = dc_loops(self.ipc)
        if self.outer_loop is None:
            object.__setattr__(self, "outer_loop", outer)
        if self.inner_loop is None:
            object.__setattr__(self, "inner_loop", inner)
        if self.outer_loop < 1 or self.inner_loop < 0:
            raise ValueError(f"DCConfig: outer_loop must be >= 1 and inner_loop >= 0, got "
                             f"{self.outer_loop}, {self.inner_loop}")
        if not self.lr_net > 0 or self.batch_train < 1:
            raise ValueError(f"DCConfig: lr_net must be > 0 and batch_train >= 1, got {self.lr_net}, {self.batch_train}")
        if self.metric not in losses.METRICS:
            raise ValueError(f"DCConfig: metric must be one of {losses.METRICS}, got {self.metric!r}")


@dataclasses.dataclass(frozen=True)
class DSAConfig(DCConfig):
    dsa: bool = True


@dataclasses.dataclass(frozen=True)
class DMConfig(MatchingConfig):
    iterations: int = 20000
    lr_img: float = 1.0
    dsa: bool = True


@dataclasses.dataclass(frozen=True)
class _ImageMethod:
    """Shared parts of methods whose state is :class:`ImageState`."""

    network: Network
    config: MatchingConfig
    mesh: Mesh | None = None
    name: str = ""
    real_chunk: int | None = None  # real images per network call (None: the method's default, see memory_plan)
    class_split: bool = False  # split the per-class losses over the mesh by class (jaxdd.distill.sharding)
    image_tx: optax.GradientTransformation | None = None  # None: SGD (config.lr_img, config.momentum)

    extendable = True

    def __post_init__(self):
        if self.config.dsa and self.config.dsa_strategy is None:  # record the strategy actually used
            strategy = default_strategy(int(self.network.input_shape[-1]))
            object.__setattr__(self, "config", dataclasses.replace(self.config, dsa_strategy=strategy))

    @property
    def eval_preset(self) -> str:
        """The DC evaluation protocol, with DSA when the method distils with it."""
        return "dc-dsa" if self.config.dsa else "dc"

    def for_dataset(self, dataset) -> "_ImageMethod":
        return self

    def _optimizer(self) -> ImageOptimizer:
        """The images' optimiser: ``image_tx``, else SGD with momentum (the reference)."""
        if self.image_tx is not None:
            return image_optimizer(self.image_tx)
        return image_optimizer(optax.sgd(self.config.lr_img, momentum=self.config.momentum or None))

    def _check_real(self, real: RealData) -> None:
        if tuple(real.image_shape) != tuple(self.network.input_shape) or real.num_classes != self.network.num_classes:
            raise ValueError(f"real data ({real.num_classes} classes of {real.image_shape} images) does not fit "
                             f"network {self.network.name!r} ({self.network.num_classes} classes of "
                             f"{self.network.input_shape}); create the network for this dataset")

    def init(self, key: jax.Array, real: RealData) -> ImageState:
        """Synthetic images (real or noise init), their labels, optimiser state, PRNG key."""
        self._check_real(real)
        k_init, k_state = jax.random.split(key)
        images, labels = init_images(k_init, real, self.config.ipc, self.config.init)
        images, opt_state = start_images(self._optimizer(), key, images)
        return ImageState(images=images, labels=labels, opt_state=opt_state, key=k_state,
                          step=jnp.zeros((), jnp.int32))

    def synthetic(self, state: ImageState) -> tuple[jax.Array, jax.Array, None]:
        return state.images, state.labels, None

    def _real_batch(self, key: jax.Array, real: RealData) -> tuple[jax.Array, jax.Array | None]:
        # split by class (class_split: the loss's shard_map places the classes) or by image
        return real.sample(key, real.batch_size(self.config.batch_real), None if self.class_split else self.mesh)

    def _siamese(self, key: jax.Array, x_real: jax.Array, x_syn: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One DSA draw per class (key ``split(key, C)[c]``) applied to both stacks of class c."""
        if not self.config.dsa:
            return x_real, x_syn
        keys = jax.random.split(key, x_real.shape[0])
        aug = jax.vmap(lambda k, x: dsa(k, x, self.config.dsa_strategy, DSAParams(), siamese=True))
        return aug(keys, x_real), aug(keys, x_syn)

    def _default_real_chunk(self, total: int) -> int | None:
        """First real chunk the plan tries for ``total`` real images per call (None: all at once):
        ``real_chunk``, else :data:`CPU_REAL_CHUNK` on CPU when ``total`` exceeds it."""
        if self.real_chunk is not None:
            return self.real_chunk
        return CPU_REAL_CHUNK if jax.default_backend() == "cpu" and total > CPU_REAL_CHUNK else None

    def _class_batch_cap(self, num_classes: int) -> int:
        """Most classes per matching call the plan considers: :data:`CPU_CLASS_BATCH` on CPU."""
        if jax.default_backend() == "cpu" and CPU_CLASS_BATCH is not None:
            return min(num_classes, CPU_CLASS_BATCH)
        return num_classes

    def _plan_classes(self) -> bool:
        """Whether the matching step can process the classes in batches (DM embeds all at once)."""
        return True

    def memory_plan(self, real: RealData) -> tuple[int, int | None]:
        """(class batch, real chunk) of the matching step for ``real``.

        ``config.class_batch`` set (or a mesh): that class batch and the default chunk, no check.
        Otherwise, for at least :data:`PLAN_MIN_REAL_IMAGES` real images per step,
        :func:`~jaxdd.distill.base.choose_class_batch` against :data:`MEMORY_FRACTION` of
        :func:`~jaxdd.distill.base.available_memory_bytes` with the memory that XLA's compiled
        estimate gives for the gradient of :meth:`matching_loss` (printed once per shape); raises
        :class:`~jaxdd.distill.base.MemoryPlanError` when one class does not fit.
        """
        c, n = real.num_classes, real.batch_size(self.config.batch_real)
        total = n if self._plan_classes() else c * n
        if self.config.class_batch is not None or self.mesh is not None or c * n < PLAN_MIN_REAL_IMAGES:
            return min(self.config.class_batch or c, c), self._default_real_chunk(total)
        return _memory_plan(self, c, n, tuple(real.image_shape), real.weights is not None)

    def _estimate_bytes(self, k: int, n: int, chunk: int | None, shape: tuple, weighted: bool) -> int | None:
        """XLA's compiled memory of ``grad(matching_loss)`` for ``k`` classes of ``n`` real images."""
        sds = jax.ShapeDtypeStruct
        m = k * self.config.ipc
        args = (sds((m,) + shape, jnp.float32), sds((m,), jnp.int32), jax.eval_shape(self.network.init, jax.random.key(0)),
                sds((k, n) + shape, jnp.float32), sds((k, n), jnp.float32) if weighted else None,
                jax.eval_shape(lambda: jax.random.key(0)))

        def step(images, labels, variables, x_real, w, key):
            return jax.grad(lambda im: self.matching_loss(im, labels, variables, x_real, w, key, (k, chunk))[0])(images)

        return compiled_memory_bytes(jax.jit(step).lower(*args).compile())

    def _with_sdc(self, match: jax.Array, variables, x_syn: jax.Array, labels: jax.Array, train: bool = False):
        """``match + λ·SDC`` and the metrics; ``x_syn`` (C, m, ...) as the matching loss saw it (one
        batch of all classes; ``train``: BatchNorm on its batch statistics, as the matching loss)."""
        num_classes = x_syn.shape[0]
        metrics = {"loss": match / num_classes}
        if self.config.sdc > 0:
            flat = x_syn.reshape((-1,) + x_syn.shape[2:])
            pen = sdc_penalty(self.network, variables, flat, labels, self.config.sdc_mode,
                                     self.config.sdc_squared, train=train)
            metrics["sdc"] = pen
            return match + self.config.sdc * pen, metrics
        return match, metrics

    def _step_images(self, state_images, opt_state, grads):
        updates, opt_state = self._optimizer().update(grads, opt_state, state_images)
        return optax.apply_updates(state_images, updates), opt_state


@dataclasses.dataclass(frozen=True)
class GradientMatching(_ImageMethod):
    """DC, and DSA when ``config.dsa``."""

    config: DCConfig = DCConfig()

    def _trainer(self) -> Trainer:
        cfg = self.config
        return Trainer(self.network, TrainConfig(
            lr=cfg.lr_net, momentum=0.0, weight_decay=0.0, batch_size=cfg.batch_train, epochs=max(cfg.inner_loop, 1),
            schedule="constant", augment=cfg.dsa_strategy if cfg.dsa else None))

    def train_network(self, variables, images: jax.Array, labels: jax.Array, key: jax.Array):
        """``inner_loop`` epochs of SGD (lr_net, no momentum) on the synthetic set (reference
        ``epoch('train', ...)`` over a shuffling ``DataLoader``); epoch e uses ``split(key,
        inner_loop)[e]`` for its order and per-sample DSA. Minibatches follow
        ``jaxdd.train.epoch_batches`` and ``epoch_tail`` (a shorter last batch, as the reference)."""
        trainer = self._trainer()
        n = images.shape[0]
        b, steps = trainer.batch_layout(n)
        lr = jnp.float32(self.config.lr_net)

        def step(carry, inp):
            idx, k_step = inp
            v, opt_state, _ = trainer.model_step(*carry, images[idx], labels[idx], k_step, lr)
            return (v, opt_state), None

        def epoch(carry, k):
            k_perm, k_aug = jax.random.split(k)
            aug = jax.random.split(k_aug, steps)
            full = epoch_batches(k_perm, n, b, "short")
            carry = jax.lax.scan(step, carry, (full, aug[: full.shape[0]]))[0]
            if trainer.tail_size(n):
                carry = step(carry, (epoch_tail(k_perm, n, b), aug[-1]))[0]
            return carry, None

        opt_state = trainer.config.optimizer(lr).init(variables["params"])
        (variables, _), _ = jax.lax.scan(epoch, (variables, opt_state), jax.random.split(key, self.config.inner_loop))
        return variables

    def set_batch_stats(self, variables, x_real: jax.Array):
        """BatchNorm networks: one train-mode pass over 16 real images per class (reference)."""
        if "batch_stats" not in variables:
            return variables
        xb = x_real[:, :BN_IMAGES_PER_CLASS]
        _, variables = self.network.apply(variables, xb.reshape((-1,) + xb.shape[2:]), train=True)
        return variables

    def matching_loss(self, images: jax.Array, labels: jax.Array, variables, x_real: jax.Array,
                      real_weights: jax.Array | None, key: jax.Array, plan: tuple | None = None):
        """Σ_c D(∇ℓ(S_c), ∇ℓ(T_c)) (+ λ·SDC) for all classes; returns (loss, metrics).
        ``plan`` = (class batch, real chunk) (default: ``config.class_batch``, no chunking)."""
        c = x_real.shape[0]
        class_batch, real_chunk = plan or (self.config.class_batch, None)
        x_syn = images.reshape((c, -1) + images.shape[1:])
        x_real, x_syn = self._siamese(key, x_real, x_syn)
        if self.class_split:
            match = sharding.gradient_match_loss(self.network, variables, x_real, x_syn, self.config.metric,
                                                 real_weights, self.mesh, real_chunk=real_chunk)
        else:
            match = losses.gradient_match_loss(self.network, variables, x_real, x_syn, self.config.metric,
                                               real_weights, class_batch=class_batch, real_chunk=real_chunk)
        return self._with_sdc(match, variables, x_syn, labels)

    def update(self, state: ImageState, real: RealData) -> tuple[ImageState, dict[str, jax.Array]]:
        cfg = self.config
        plan = self.memory_plan(real)
        key, k_net, k_loop = jax.random.split(state.key, 3)
        variables = self.network.init(k_net)

        def outer(carry, inp):
            images, opt_state, variables = carry
            ol, k = inp
            k_real, k_aug, k_train = jax.random.split(k, 3)
            x_real, w = self._real_batch(k_real, real)
            variables = self.set_batch_stats(variables, x_real)
            grads, metrics = jax.grad(self.matching_loss, has_aux=True)(images, state.labels, variables, x_real, w,
                                                                         k_aug, plan)
            images, opt_state = self._step_images(images, opt_state, grads)
            if cfg.inner_loop > 0 and cfg.outer_loop > 1:
                variables = jax.lax.cond(ol < cfg.outer_loop - 1,
                                         lambda v: self.train_network(v, images, state.labels, k_train),
                                         lambda v: v, variables)
            return (images, opt_state, variables), metrics

        (images, opt_state, _), metrics = jax.lax.scan(
            outer, (state.images, state.opt_state, variables),
            (jnp.arange(cfg.outer_loop), jax.random.split(k_loop, cfg.outer_loop)))
        state = state.replace(images=images, opt_state=opt_state, key=key, step=state.step + 1)
        return state, jax.tree.map(jnp.mean, metrics)


@dataclasses.dataclass(frozen=True)
class DistributionMatching(_ImageMethod):
    """DM."""

    config: DMConfig = DMConfig()

    def _plan_classes(self) -> bool:
        return False

    def matching_loss(self, images: jax.Array, labels: jax.Array, variables, x_real: jax.Array,
                      real_weights: jax.Array | None, key: jax.Array, plan: tuple | None = None):
        """Σ_c ‖mean φ(T_c) − mean φ(S_c)‖² (+ λ·SDC); returns (loss, metrics). ``plan`` =
        (class batch, real chunk): the real images are embedded ``real chunk`` at a time."""
        c = x_real.shape[0]
        x_syn = images.reshape((c, -1) + images.shape[1:])
        x_real, x_syn = self._siamese(key, x_real, x_syn)
        real_chunk = (plan or (None, None))[1]
        if self.class_split:
            match = sharding.distribution_match_loss(self.network, variables, x_real, x_syn, real_weights, self.mesh,
                                                     train=True, real_chunk=real_chunk)
        else:
            match = losses.distribution_match_loss(self.network, variables, x_real, x_syn, real_weights, train=True,
                                                   real_chunk=real_chunk)
        return self._with_sdc(match, variables, x_syn, labels, train=True)

    def update(self, state: ImageState, real: RealData) -> tuple[ImageState, dict[str, jax.Array]]:
        plan = self.memory_plan(real)
        key, k_net, k_real, k_aug = jax.random.split(state.key, 4)
        variables = self.network.init(k_net)
        x_real, w = self._real_batch(k_real, real)
        grads, metrics = jax.grad(self.matching_loss, has_aux=True)(state.images, state.labels, variables, x_real,
                                                                     w, k_aug, plan)
        images, opt_state = self._step_images(state.images, state.opt_state, grads)
        return state.replace(images=images, opt_state=opt_state, key=key, step=state.step + 1), metrics


@functools.lru_cache(maxsize=16)
def _memory_plan(method: _ImageMethod, c: int, n: int, shape: tuple, weighted: bool) -> tuple[int, int | None]:
    """:meth:`_ImageMethod.memory_plan`, computed once per method and shape (it compiles)."""
    classes = method._plan_classes()
    total = n if classes else c * n
    first = method._default_real_chunk(total)
    avail = available_memory_bytes()
    if avail is None:
        k = method._class_batch_cap(c) if classes else c
        print(f"{method.name}: the backend reports no free memory; {k} of {c} classes per call, real chunk {first}")
        return k, first

    def estimate(k, chunk):
        return method._estimate_bytes(k if classes else c, n, chunk, shape, weighted)

    k, chunk, used = choose_class_batch(estimate, method._class_batch_cap(c) if classes else 1, total,
                                        int(MEMORY_FRACTION * avail), first_chunk=first)
    k = k if classes else c
    real = "all at once" if chunk is None or chunk >= total else f"{chunk} at a time"
    est = "no estimate" if used is None else f"XLA estimate {used / 2**30:.2f} GiB"
    print(f"{method.name}: {k} of {c} classes per call, real images {real} ({est}, "
          f"{avail / 2**30:.1f} GiB available; --class-batch overrides)", flush=True)
    return k, chunk


@register_method("dc", DCConfig, "gradient matching, Zhao et al. ICLR 2021")
def _build_dc(network: Network, config: DCConfig, mesh: Mesh | None = None) -> GradientMatching:
    return GradientMatching(network, config, mesh, "dc")


@register_method("dsa", DSAConfig, "gradient matching with siamese augmentation, Zhao & Bilen ICML 2021")
def _build_dsa(network: Network, config: DSAConfig, mesh: Mesh | None = None) -> GradientMatching:
    return GradientMatching(network, config, mesh, "dsa")


@register_method("dm", DMConfig, "distribution matching, Zhao & Bilen WACV 2023")
def _build_dm(network: Network, config: DMConfig, mesh: Mesh | None = None) -> DistributionMatching:
    return DistributionMatching(network, config, mesh, "dm")
