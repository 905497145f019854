"""The one SGD trainer: several independently seeded networks trained at once with ``jax.vmap``.

Used by evaluation (train fresh networks on a distilled set), difficulty ensembles (K seeded
models scored at chosen epochs through ``fit(on_epoch=...)``), MTT expert trajectories (save the
parameters after every epoch) and DGS's difficulty classifier::

    trainer = Trainer(net, TrainConfig(lr=0.01, epochs=300))
    state = trainer.init(key, num_models=5)            # every leaf has a leading model axis M
    state, history = fit(trainer, state, x, y, key)    # or trainer.train_epoch(...) per epoch
    acc = evaluate_accuracy(net, state.variables, x_test, y_test)   # (M,)

**Update** (PyTorch ``torch.optim.SGD`` with momentum μ, dampening 0, weight decay λ, as in the
DC/DSA/MTT reference evaluation code), the optax chain :meth:`TrainConfig.optimizer`
``add_decayed_weights(λ)``, ``trace(μ)``, ``scale_by_learning_rate(η_e)``::

    d = g + λ θ;   b ← μ b + d;   θ ← θ − η_e b

Weight decay applies to every parameter (kernels, biases, norm scales), never to BatchNorm
running statistics. The momentum buffer starts at zero (so the first step is b = d, as PyTorch).
The loss is the mean cross-entropy :func:`jaxdd.utils.labels.cross_entropy`.

**Schedule** (``TrainConfig.schedule``; η the base lr, ``E = config.epochs``; an optax
schedule over epochs, :meth:`TrainConfig.lr_schedule`):

* ``"reference"`` (default): the DC/DSA/DM/MTT/DATM reference ``evaluate_synset``
  (VICO-UoE/DatasetCondensation and GeorgeCazenavette/mtt-distillation ``utils.py``): it loops
  ``for ep in range(Epoch + 1)`` and, right after the epoch ``ep == Epoch // 2 + 1``, multiplies
  the lr by 0.1 and re-creates the optimiser. So ``E + 1`` epochs are trained
  (:attr:`TrainConfig.total_epochs`), epochs ``0 … E//2 + 1`` at η and epochs from
  ``E//2 + 2`` on (:attr:`TrainConfig.decay_epoch`) at 0.1 η with the momentum buffer zeroed at
  the start of that epoch (301 epochs, 152 at η, for E = 300).
* ``"half"``: ``E`` epochs, 0.1 η from epoch ``E // 2`` on (none when ``E // 2 == 0``), momentum
  kept (jaxdd's schedule before it followed the reference; reproduces older results).
* ``"constant"``: ``E`` epochs at η (experts, difficulty ensembles, DC's inner loop).

``lr`` given to ``train_epoch``/``train_step``/``fit`` overrides ``config.lr`` (MTT's learned
synthetic lr); it may be a scalar or one value per model (the lr grid trains one model per
candidate in one vmap). The momentum reset happens in ``train_epoch`` (so in ``fit``), not in
``train_step``.

**Batches**: each model has its own data order and augmentation keys. The batch size is
``B = min(batch_size, N)`` (distilled sets are often smaller than a batch). An epoch of N examples
is a random permutation cut into batches of B; the remainder ``r = N mod B`` is handled by
``last_batch``: ``"short"`` (default, the reference's ``DataLoader(shuffle=True)``): a last,
shorter batch of the r remaining examples (``ceil(N / B)`` steps, every example exactly once);
``"wrap"``: the last batch is completed with the first examples of the same permutation (static
shapes, some examples seen twice); ``"drop"``: the remainder is skipped that epoch. The epoch's
reported loss/accuracy is the mean over its steps weighted by their batch sizes (as the reference).

**Keys**: ``key`` is one PRNG key (split into M per-model keys) or an array of M keys (model i uses
``keys[i]`` only, so training model i alone with ``keys[i:i+1]`` gives the same numbers). Within an
epoch, model key k gives ``k_perm, k_aug = split(k)``; the data order is
``epoch_batches(k_perm, ...)`` (then ``epoch_tail(k_perm, ...)`` for a short last batch) and step
s augments with ``split(k_aug, steps)[s]``. ``fit`` uses
``fold_in(key, epoch)`` as the epoch key, so a resumed run repeats the uninterrupted one.

**Loops**: ``Trainer(loop=...)`` says how ``train_epoch`` iterates; all compute the same steps with
the same keys. ``"scan"``: one jitted ``lax.scan`` over the epoch, models vmapped (best on GPU/TPU).
``"steps"``: one jitted call per step, models vmapped. ``"models"``: one jitted call per step and
model, models one after the other. ``"auto"`` (default) takes ``scan`` on accelerators and ``models``
on CPU, where XLA runs backward convolutions inside loops ~20x slower (jax-ml/jax#12868) and
vmapped convolutions (grouped over models) several times slower than separate ones
(``benchmarks/train_step.py``).

**Mesh**: with ``mesh`` (``jaxdd.utils.mesh.data_mesh``) the state and the training images are
replicated and every minibatch is split over the ``data`` axis; XLA inserts the gradient (and
BatchNorm statistics) reductions, so results match one device up to summation order. With
``jaxdd.utils.mesh.models_mesh`` the M models are split over the ``models`` axis instead (M a
multiple of its size; the vmapped ``scan``/``steps`` loops keep each model on its device) and
the images are replicated: no cross-device reductions, the same numbers as one device.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdd.models.network import Network, Variables
from jaxdd.utils.labels import cross_entropy, hard_labels, is_soft, label_rows
from jaxdd.utils.mesh import DATA_AXIS, MODELS_AXIS, axis_size, place_models, replicate, shard_batch

LAST_BATCH = ("short", "wrap", "drop")
SCHEDULES = ("reference", "half", "constant")
LOOPS = ("auto", "scan", "steps", "models")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """SGD hyper-parameters. Defaults are the DC evaluation protocol (Zhao et al., 2021) with the
    reference ``evaluate_synset`` schedule (module docstring)."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    epochs: int = 300
    schedule: str = "reference"  # "reference", "half" or "constant" (see the module docstring)
    augment: str | None = None  # DSA strategy string (per-sample, non-siamese) or None
    soft_labels: bool = False  # train with soft cross-entropy on (N, C) label rows
    last_batch: str = "short"  # "short", "wrap" or "drop" (see the module docstring)

    def __post_init__(self):
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 0):
            raise ValueError(f"epochs must be a non-negative integer, got {self.epochs!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES} ('reference': the DC/MTT evaluate_synset "
                             f"schedule), got {self.schedule!r}")
        if self.last_batch not in LAST_BATCH:
            raise ValueError(f"last_batch must be one of {LAST_BATCH}, got {self.last_batch!r}")
        if self.augment is not None and not isinstance(self.augment, str):
            raise ValueError(f"augment must be a DSA strategy string such as 'color_crop_cutout_flip_scale_"
                             f"rotate' or None, got {self.augment!r}")

    @property
    def total_epochs(self) -> int:
        """Epochs ``fit`` trains by default: ``epochs + 1`` under the reference schedule."""
        return self.epochs + 1 if self.schedule == "reference" else self.epochs

    @property
    def decay_epoch(self) -> int | None:
        """The first (0-based) epoch at 0.1 lr, or None: ``epochs // 2 + 2`` (reference; only
        reached when ``epochs >= 3``), ``epochs // 2`` (half; None when 0), None (constant)."""
        if self.schedule == "reference":
            return self.epochs // 2 + 2
        if self.schedule == "half" and self.epochs // 2 > 0:
            return self.epochs // 2
        return None

    def lr_schedule(self, lr: Any) -> optax.Schedule:
        """η_e as a function of the epoch e: ``lr`` until :attr:`decay_epoch`, ``0.1 lr`` from there
        (``optax.join_schedules`` of two constant schedules; ``lr`` a scalar or one per model)."""
        lr, d = jnp.asarray(lr, jnp.float32), self.decay_epoch
        if d is None:
            return optax.constant_schedule(lr)
        return optax.join_schedules([optax.constant_schedule(lr), optax.constant_schedule(0.1 * lr)], [d])

    def lr_at(self, lr: Any, epoch: Any) -> jax.Array:
        """η_e at ``epoch`` (:meth:`lr_schedule`), broadcast against ``epoch``."""
        return self.lr_schedule(lr)(jnp.asarray(epoch)) * jnp.ones_like(epoch, jnp.float32)

    def optimizer(self, lr: Any) -> optax.GradientTransformation:
        """PyTorch SGD at step size ``lr`` as optax: ``add_decayed_weights(λ)`` then
        ``sgd(lr, momentum=μ)`` (= ``trace(μ)``, ``scale_by_learning_rate(lr)``): d = g + λθ,
        b ← μb + d, θ ← θ − lr·b. Its state (the buffer b) does not depend on ``lr``, so the trainer
        builds it once per step at that epoch's η_e (as PyTorch sets ``param_group["lr"]``)."""
        return optax.chain(optax.add_decayed_weights(self.weight_decay), optax.sgd(lr, momentum=self.momentum))

    def resets_momentum(self, epoch: Any) -> jax.Array:
        """Whether the momentum buffer is zeroed before ``epoch`` (the reference re-creates its
        optimiser at the decay)."""
        d = self.decay_epoch
        if self.schedule != "reference" or d is None:
            return jnp.zeros_like(jnp.asarray(epoch), bool)
        return jnp.asarray(epoch) == d


class TrainState(NamedTuple):
    """M stacked models: every leaf has a leading model axis."""

    variables: Variables  # {"params": ..., ["batch_stats": ...]}
    opt_state: Any  # optax state of TrainConfig.optimizer: the SGD momentum buffer
    step: jax.Array  # (M,) int32 optimiser steps taken
    epoch: jax.Array  # (M,) int32 epochs completed

    @property
    def num_models(self) -> int:
        return int(self.step.shape[0])

    def select(self, models: Any) -> "TrainState":
        """The state of some models only (an index array or slice keeps the model axis)."""
        return jax.tree.map(lambda a: a[models], self)

    def model_variables(self, i: int) -> Variables:
        """Variables of model ``i`` without the model axis (for ``net.apply`` / ``net.logits``)."""
        return jax.tree.map(lambda a: a[i], self.variables)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of argmax predictions equal to the labels (argmax of soft-label rows), over the
    example axis: logits (..., N, C) -> (...)."""
    return jnp.mean(logits.argmax(-1) == hard_labels(jnp.asarray(labels), logits.ndim - 1), axis=-1)


def epoch_batches(key: jax.Array, n: int, batch_size: int, last_batch: str = "wrap") -> jax.Array:
    """(steps, B) example indices of one epoch: a random permutation of ``range(n)`` cut into
    batches of ``B = min(batch_size, n)``; the last partial batch is wrapped or dropped; with
    ``"short"`` only the full batches are returned (the short one is :func:`epoch_tail`)."""
    b = min(batch_size, n)
    perm = jax.random.permutation(key, n)
    if last_batch in ("drop", "short"):
        steps = n // b
        return perm[: steps * b].reshape(steps, b)
    steps = -(-n // b)
    return jnp.concatenate([perm, perm[: steps * b - n]]).reshape(steps, b)


def epoch_tail(key: jax.Array, n: int, batch_size: int) -> jax.Array:
    """The ``n mod B`` indices of the short last batch that follows ``epoch_batches(key, n,
    batch_size, "short")`` (same permutation; empty when B divides n)."""
    b = min(batch_size, n)
    return jax.random.permutation(key, n)[(n // b) * b:]


def _on_cpu(mesh: Mesh | None) -> bool:
    """Whether the computation runs on CPU devices (the mesh's, or the default backend)."""
    return (mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()) == "cpu"


def _typed_key(key: Any) -> jax.Array:
    """A typed PRNG key (array); legacy ``jax.random.PRNGKey`` uint32 keys are wrapped."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
        return jax.random.wrap_key_data(key)
    raise ValueError(f"expected a PRNG key from jax.random.key(seed), got dtype {key.dtype}")


def _as_keys(key: Any, num_models: int | None) -> jax.Array:
    """One key -> ``num_models`` split keys; an array of keys -> itself (checked against M)."""
    key = _typed_key(key)
    if key.ndim == 0:
        if num_models is None:
            raise ValueError("a single key needs num_models; or pass an array of one key per model")
        return jax.random.split(key, num_models)
    if key.ndim != 1 or (num_models is not None and key.shape[0] != num_models):
        raise ValueError(f"expected one key or {num_models} keys (one per model), got key shape {key.shape}")
    return key


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Trains M stacked copies of ``net`` with ``config`` (hashable: used as a static jit argument)."""

    net: Network
    config: TrainConfig = TrainConfig()
    mesh: Mesh | None = None
    loop: str = "auto"  # "scan", "steps", "models" or "auto" (see the module docstring)

    def __post_init__(self):
        if self.loop not in LOOPS:
            raise ValueError(f"loop must be one of {LOOPS}, got {self.loop!r}")

    @property
    def epoch_loop(self) -> str:
        """The loop ``train_epoch`` uses (``auto`` resolved: ``models`` on CPU, ``scan`` elsewhere)."""
        if self.loop != "auto":
            return self.loop
        return "models" if _on_cpu(self.mesh) else "scan"

    # ----------------------------------------------------------------------------------------- init
    def init(self, key: jax.Array, num_models: int | None = None) -> TrainState:
        """Fresh state for ``num_models`` networks: model i is ``net.init(split(key, M)[i])``
        (or ``net.init(key[i])`` when ``key`` is an array of M keys)."""
        if num_models is not None and num_models < 1:
            raise ValueError(f"num_models must be >= 1, got {num_models}")
        keys = _as_keys(key, num_models)
        # one compiled init per network, reused for any M (vmap would recompile for every M)
        per_model = [_jit_init(self.net, k) for k in keys]
        variables = jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_model)
        m = keys.shape[0]
        opt_state = self.config.optimizer(self.config.lr).init(variables["params"])
        state = TrainState(variables=variables, opt_state=opt_state, step=jnp.zeros((m,), jnp.int32),
                           epoch=jnp.zeros((m,), jnp.int32))
        return place_models(state, self.mesh)

    # ------------------------------------------------------------------------------ single model
    def model_step(self, variables: Variables, opt_state: Any, xb: jax.Array, yb: jax.Array, key: jax.Array,
                   lr: jax.Array):
        """One SGD step of ONE model (no model axis) on batch ``xb, yb`` at step size ``lr``.
        DSA (``config.augment``) draws per-sample parameters from ``key``. Returns
        (variables, opt_state, {"loss", "acc"}); BatchNorm statistics are updated (train mode)."""
        grads, new_vars, metrics = self.model_grads(variables, xb, yb, key)
        updates, opt_state = self.config.optimizer(lr).update(grads, opt_state, variables["params"])
        return {**new_vars, "params": optax.apply_updates(variables["params"], updates)}, opt_state, metrics

    def model_grads(self, variables: Variables, xb: jax.Array, yb: jax.Array, key: jax.Array):
        """Gradient of the mean cross-entropy of ONE model on batch ``xb, yb`` (DSA from ``key``
        when ``config.augment``). Returns (grads, variables with updated BatchNorm statistics,
        {"loss", "acc"})."""
        if self.config.augment:
            from jaxdd.augment import dsa

            xb = dsa(key, xb, self.config.augment, siamese=False)

        def loss_fn(params):
            logits, new_vars = self.net.apply({**variables, "params": params}, xb, train=True)
            return jnp.mean(cross_entropy(logits, yb)), (logits, new_vars)

        (loss, (logits, new_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        return grads, new_vars, {"loss": loss, "acc": accuracy(logits, yb)}

    def _stacked_step(self, state: TrainState, xb: jax.Array, yb: jax.Array, keys: jax.Array,
                      base_lr: jax.Array) -> tuple[TrainState, dict]:
        d = axis_size(self.mesh, DATA_AXIS)
        k = axis_size(self.mesh, MODELS_AXIS)
        if k > 1 and xb.shape[0] % k == 0:  # (M, B, ...): each device the batches of its own models
            spec = NamedSharding(self.mesh, P(MODELS_AXIS))
            xb, yb = jax.lax.with_sharding_constraint(xb, spec), jax.lax.with_sharding_constraint(yb, spec)
        elif d > 1 and xb.shape[1] % d == 0:  # (M, B, ...): split the batch axis
            spec = NamedSharding(self.mesh, P(None, DATA_AXIS))
            xb = jax.lax.with_sharding_constraint(xb, spec)
            yb = jax.lax.with_sharding_constraint(yb, spec)
        lr = self.config.lr_at(base_lr, state.epoch)
        variables, opt_state, metrics = jax.vmap(self.model_step)(state.variables, state.opt_state, xb, yb, keys, lr)
        return TrainState(variables, opt_state, state.step + 1, state.epoch), metrics

    # ------------------------------------------------------------------------------ public API
    def train_step(self, state: TrainState, xb: Any, yb: Any, key: jax.Array, lr: Any = None):
        """One step of every model on its own batch: ``xb`` (M, B, H, W, C), ``yb`` (M, B) or
        (M, B, C). Returns (state, {"loss": (M,), "acc": (M,)}). Jitted."""
        m = state.num_models
        xb, yb = self._check_data(xb, yb, batch_axes=2)
        if xb.shape[0] != m:
            raise ValueError(f"train_step needs one batch per model: {m} models, batches of shape {xb.shape}")
        if xb.shape[1] % axis_size(self.mesh, DATA_AXIS):
            raise ValueError(f"batch size {xb.shape[1]} is not a multiple of the {axis_size(self.mesh, DATA_AXIS)} "
                             "devices in the mesh: choose a divisible batch size, or use mesh=None")
        keys = _as_keys(key, m)
        return _jit_step(self, state, xb, yb, keys, self._base_lr(lr, m))

    def train_epoch(self, state: TrainState, x: Any, y: Any, key: jax.Array, lr: Any = None):
        """One epoch of every model over (x, y): a ``lax.scan`` over the epoch's minibatches, each
        model with its own data order and augmentation. Returns (state, per-model mean
        {"loss": (M,), "acc": (M,)} over the epoch's steps). Jitted."""
        m = state.num_models
        x, y = self._check_data(x, y, batch_axes=1)
        self.batch_layout(x.shape[0])
        keys = _as_keys(key, m)
        x, y = replicate((x, y), self.mesh)
        loop = self.epoch_loop
        if loop == "scan":
            return _jit_epoch(self, state, x, y, keys, self._base_lr(lr, m))
        return _python_epoch(self, state, x, y, keys, self._base_lr(lr, m), per_model=loop == "models")

    def batch_layout(self, n: int) -> tuple[int, int]:
        """(batch size, steps per epoch) for a training set of ``n`` examples (with
        ``last_batch="short"`` the last of the steps has :meth:`tail_size` examples when that is
        non-zero)."""
        if n < 1:
            raise ValueError("cannot train on an empty set: pass at least one image")
        b = min(self.config.batch_size, n)
        if b % axis_size(self.mesh, DATA_AXIS):
            raise ValueError(f"batch size {b} (min(batch_size, N={n})) is not a multiple of the {self.mesh.size} "
                             "devices in the mesh: choose batch_size (and N) divisible by it, or use mesh=None")
        steps = n // b if self.config.last_batch == "drop" else -(-n // b)
        return b, steps

    def tail_size(self, n: int) -> int:
        """Examples in the short last batch of an epoch of ``n`` (0 unless ``last_batch="short"``;
        with a mesh that batch is not split over the devices when they do not divide it)."""
        b = min(self.config.batch_size, n)
        return n % b if self.config.last_batch == "short" else 0

    def _base_lr(self, lr: Any, m: int) -> jax.Array:
        lr = self.config.lr if lr is None else lr
        lr = jnp.broadcast_to(jnp.asarray(lr, jnp.float32), (m,)) if np.ndim(lr) in (0, 1) else None
        if lr is None:
            raise ValueError(f"lr must be a scalar or one value per model ({m},)")
        return lr

    def _check_data(self, x: Any, y: Any, batch_axes: int):
        x = jnp.asarray(x, jnp.float32)
        y = jnp.asarray(y)
        shape = tuple(self.net.input_shape)
        if x.ndim != batch_axes + 3 or tuple(x.shape[batch_axes:]) != shape:
            lead = "(M, B" if batch_axes == 2 else "(N"
            raise ValueError(f"images must have shape {lead}, {', '.join(map(str, shape))}) for network "
                             f"{self.net.name!r}, got {x.shape}")
        if y.shape[:batch_axes] != x.shape[:batch_axes]:
            raise ValueError(f"need one label per image: images {x.shape}, labels {y.shape}")
        soft = is_soft(y, batch_axes)
        if soft and y.shape[-1] != self.net.num_classes:
            raise ValueError(f"soft labels have {y.shape[-1]} columns but the network has {self.net.num_classes} "
                             "classes")
        if soft and not self.config.soft_labels:
            raise ValueError("labels are soft (one row per image) but TrainConfig.soft_labels is False: set "
                             "soft_labels=True or pass hard class indices (e.g. labels.argmax(-1))")
        if not soft and y.ndim != batch_axes:
            raise ValueError(f"labels must be class indices of shape {x.shape[:batch_axes]} or soft rows, got "
                             f"{y.shape}")
        if not soft:
            if jnp.issubdtype(y.dtype, jnp.floating):
                raise ValueError("hard labels must be integer class indices, got floats")
            y = y.astype(jnp.int32)
            if y.size and (int(y.min()) < 0 or int(y.max()) >= self.net.num_classes):
                raise ValueError(f"labels must lie in [0, {self.net.num_classes}) for a {self.net.num_classes}-class "
                                 f"network, got [{int(y.min())}, {int(y.max())}]")
            if self.config.soft_labels:  # one-hot rows: soft CE equals hard CE on them
                y = label_rows(y, self.net.num_classes, batch_axes)
        else:
            y = y.astype(jnp.float32)
        return x, y


def _plan(keys: jax.Array, n: int, b: int, steps: int, last_batch: str):
    """Per-model example indices of one epoch's full batches (M, S, B), of its short last batch
    (M, r) (r = 0 unless ``last_batch="short"``) and the step augmentation keys (M, steps)."""
    def plan(k):
        k_perm, k_aug = jax.random.split(k)
        tail = epoch_tail(k_perm, n, b) if last_batch == "short" else jnp.zeros((0,), jnp.int32)
        return epoch_batches(k_perm, n, b, last_batch), tail, jax.random.split(k_aug, steps)

    return jax.vmap(plan)(keys)


def _begin_epoch(trainer: Trainer, state: TrainState) -> TrainState:
    """A fresh optimiser state (zero momentum) for the models whose next epoch is the reference
    decay epoch (the reference re-creates its optimiser there)."""
    reset = trainer.config.resets_momentum(state.epoch)  # (M,)
    fresh = trainer.config.optimizer(trainer.config.lr).init(state.variables["params"])
    opt_state = jax.tree.map(lambda f, v: jnp.where(reset.reshape((-1,) + (1,) * (v.ndim - 1)), f, v),
                             fresh, state.opt_state)
    return state._replace(opt_state=opt_state)


def _weighted_metrics(metrics: dict, sizes: list[int]) -> dict:
    """Per-model epoch means of per-step metrics (steps, M), weighted by the steps' batch sizes."""
    w = jnp.asarray(sizes, jnp.float32)[:, None]
    return jax.tree.map(lambda v: jnp.sum(v * w, 0) / jnp.sum(w), metrics)


def _epoch_impl(trainer: Trainer, state: TrainState, x: jax.Array, y: jax.Array, keys: jax.Array,
                base_lr: jax.Array):
    b, steps = trainer.batch_layout(x.shape[0])
    idx, tail, aug_keys = _plan(keys, x.shape[0], b, steps, trainer.config.last_batch)
    state = _begin_epoch(trainer, state)

    def body(st, inp):
        idx_s, keys_s = inp
        return trainer._stacked_step(st, x[idx_s], y[idx_s], keys_s, base_lr)

    full = idx.shape[1]
    state, metrics = jax.lax.scan(body, state, (idx.swapaxes(0, 1), aug_keys[:, :full].swapaxes(0, 1)))
    sizes = [b] * full
    if tail.shape[1]:
        state, m = trainer._stacked_step(state, x[tail], y[tail], aug_keys[:, full], base_lr)
        metrics = jax.tree.map(lambda a, v: jnp.concatenate([a, v[None]]), metrics, m)
        sizes.append(tail.shape[1])
    state = state._replace(epoch=state.epoch + 1)
    return state, _weighted_metrics(metrics, sizes)


def _gather_step(trainer: Trainer, state: TrainState, x, y, idx, aug_keys, s, base_lr):
    return trainer._stacked_step(state, x[idx[:, s]], y[idx[:, s]], aug_keys[:, s], base_lr)


def _tail_step(trainer: Trainer, state: TrainState, x, y, tail, aug_key, base_lr):
    return trainer._stacked_step(state, x[tail], y[tail], aug_key, base_lr)


def _python_epoch(trainer: Trainer, state: TrainState, x: jax.Array, y: jax.Array, keys: jax.Array,
                  base_lr: jax.Array, per_model: bool):
    """The same epoch as :func:`_epoch_impl` with one jitted call per step (of all models, or of
    each model in turn when ``per_model``): the loops that are fast on CPU (module docstring)."""
    b, steps = trainer.batch_layout(x.shape[0])
    idx, tail, aug_keys = _jit_plan(keys, x.shape[0], b, steps, trainer.config.last_batch)
    state = _jit_begin_epoch(trainer, state)
    full = idx.shape[1]
    sizes = [b] * full + ([tail.shape[1]] if tail.shape[1] else [])
    groups = [slice(i, i + 1) for i in range(state.num_models)] if per_model else [slice(None)]
    states, metrics = [], []
    for g in groups:
        st, i, t, a, lr = state.select(g), idx[g], tail[g], aug_keys[g], base_lr[g]
        per_step = []
        for s in range(full):
            st, m = _jit_gather_step(trainer, st, x, y, i, a, s, lr)
            per_step.append(m)
        if t.shape[1]:
            st, m = _jit_tail_step(trainer, st, x, y, t, a[:, full], lr)
            per_step.append(m)
        states.append(st)
        metrics.append(_weighted_metrics(jax.tree.map(lambda *v: jnp.stack(v), *per_step), sizes))
    if per_model:
        state = jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *states)
        metrics = jax.tree.map(lambda *v: jnp.concatenate(v), *metrics)
    else:
        state, metrics = states[0], metrics[0]
    return state._replace(epoch=state.epoch + 1), metrics


_jit_init = jax.jit(lambda net, key: net.init(key), static_argnums=0)
_jit_epoch = jax.jit(_epoch_impl, static_argnums=0)
_jit_step = jax.jit(lambda trainer, *a: trainer._stacked_step(*a), static_argnums=0)
_jit_plan = jax.jit(_plan, static_argnums=(1, 2, 3, 4))  # shared by every trainer
_jit_gather_step = jax.jit(_gather_step, static_argnums=0)
_jit_tail_step = jax.jit(_tail_step, static_argnums=0)
_jit_begin_epoch = jax.jit(_begin_epoch, static_argnums=0)


def fit(trainer: Trainer, state: TrainState, x: Any, y: Any, key: jax.Array, *, lr: Any = None,
        epochs: int | None = None, on_epoch: Callable[[int, TrainState, dict], Any] | None = None,
        progress: bool = True, desc: str = "train") -> tuple[TrainState, list[dict]]:
    """Train until ``state.epoch == epochs`` (default ``config.total_epochs``: ``config.epochs + 1``
    under the reference schedule; a resumed state continues).

    ``epochs`` only says where to stop: the lr schedule always follows ``config`` (so a
    difficulty score "at epoch 20" of a 200-epoch run stops there with the 200-epoch schedule).

    Epoch e uses key ``fold_in(key, e)`` (per model when ``key`` holds M keys). After each epoch,
    ``on_epoch(e + 1, state, metrics)`` is called (e.g. to save expert parameters or score
    difficulty at chosen epochs). Returns (state, history), history[i] = {"epoch", "loss": (M,),
    "acc": (M,)} as numpy arrays. Shows a tqdm bar unless ``progress=False``.
    """
    from tqdm.auto import tqdm

    epochs = trainer.config.total_epochs if epochs is None else epochs
    m = state.num_models
    keys = _typed_key(key)
    if keys.ndim:
        keys = _as_keys(keys, m)
    x, y = trainer._check_data(x, y, batch_axes=1)
    x, y = replicate((x, y), trainer.mesh)
    start = int(state.epoch[0])
    history = []
    bar = tqdm(range(start, epochs), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for e in bar:
        if keys.ndim == 0:
            ek = jax.random.fold_in(keys, e)
        else:
            ek = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, e)
        state, metrics = trainer.train_epoch(state, x, y, ek, lr=lr)
        metrics = {k: np.asarray(v) for k, v in metrics.items()}
        history.append({"epoch": e + 1, **metrics})
        bar.set_postfix(loss=f"{metrics['loss'].mean():.3f}", acc=f"{metrics['acc'].mean():.3f}")
        if on_epoch is not None:
            on_epoch(e + 1, state, metrics)
    return state, history


_jit_predict = jax.jit(lambda net, variables, xb: jax.vmap(lambda v: net.logits(v, xb))(variables),
                       static_argnums=0)


#: Default inference batches of :func:`predict_logits`. XLA:CPU convolutions lose
#: efficiency at large batches: on 2 CPU cores a ConvNet-w128 pass over 10k Fashion-MNIST images
#: took 8.5 s at batch 16 and 14.4 s at batch 500 (``benchmarks/inference.py``, RESULTS.md).
CPU_INFERENCE_BATCH = 16
ACCELERATOR_INFERENCE_BATCH = 500


def default_inference_batch(mesh: Mesh | None = None) -> int:
    """The inference batch :func:`predict_logits` uses when none is given."""
    return CPU_INFERENCE_BATCH if _on_cpu(mesh) else ACCELERATOR_INFERENCE_BATCH


def predict_logits(net: Network, variables: Variables, x: Any, batch_size: int | None = None,
                   mesh: Mesh | None = None, loop: str = "auto") -> jax.Array:
    """Inference logits (M, N, C) of M stacked models (leading model axis on ``variables``) for
    images ``x`` (N, H, W, C), in batches (the last one padded, so one compilation) of
    ``batch_size`` (default :func:`default_inference_batch`). With ``mesh`` each batch is split
    over the ``data`` axis (batch_size is rounded up to a multiple). ``loop``: ``"vmap"`` (all
    models in one call), ``"models"`` (one call per model) or ``"auto"`` (``models`` on CPU, where
    vmapped convolutions are slow; see :class:`Trainer`)."""
    if loop not in ("auto", "vmap", "models"):
        raise ValueError(f"loop must be 'auto', 'vmap' or 'models', got {loop!r}")
    x = np.asarray(x, np.float32) if not isinstance(x, jax.Array) else x
    n = x.shape[0]
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(net.input_shape):
        raise ValueError(f"images must have shape (N, {', '.join(map(str, net.input_shape))}), got {x.shape}")
    if batch_size is None:
        batch_size = default_inference_batch(mesh)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    b = min(batch_size, n)
    d = axis_size(mesh, DATA_AXIS)
    b = -(-b // d) * d
    variables = place_models(variables, mesh)
    m = jax.tree.leaves(variables)[0].shape[0]
    per_model = loop == "models" or (loop == "auto" and _on_cpu(mesh))
    groups = [jax.tree.map(lambda a: a[i:i + 1], variables) for i in range(m)] if per_model else [variables]
    out = []
    for i in range(0, n, b):
        xb = x[i:i + b]
        k = xb.shape[0]
        if k < b:
            xb = jnp.concatenate([jnp.asarray(xb), jnp.zeros((b - k, *xb.shape[1:]), jnp.float32)])
        xb = shard_batch(jnp.asarray(xb), mesh)
        out.append(jnp.concatenate([_jit_predict(net, v, xb)[:, :k] for v in groups]))
    return jnp.concatenate(out, axis=1)


def evaluate_accuracy(net: Network, variables: Variables, x: Any, y: Any, batch_size: int | None = None,
                      mesh: Mesh | None = None) -> np.ndarray:
    """Test accuracy (fraction in [0, 1]) of each of M stacked models: shape (M,)."""
    logits = predict_logits(net, variables, x, batch_size=batch_size, mesh=mesh)
    return np.asarray(accuracy(logits, jnp.asarray(y)))
