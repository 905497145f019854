"""DATM (difficulty-aligned trajectory matching) on top of :mod:`jaxdd.distill.mtt`.

Guo et al., "Towards Lossless Dataset Distillation via Difficulty-Aligned Trajectory Matching"
(ICLR 2024), NUS-HPC-AI-Lab/DATM. Differences from MTT:

(a) **Growing start-epoch window** (:func:`start_window`): at iteration ``it`` the start epoch is
    drawn from ``min_start_epoch .. hi-1`` with
    ``hi = min(current_max_start_epoch + ⌊(max_start_epoch − current_max_start_epoch) · it /
    expansion_end_epoch⌋, max_start_epoch)``: early trajectories (easy patterns) first, later ones
    (hard patterns) added as distillation goes on; small IPC should keep the window early.
(b) **Soft labels**: one row of label logits per synthetic image, learned by SGD (``lr_y``,
    ``momentum_y``); the student trains with soft cross-entropy on ``softmax(logits)`` (the
    reference ``SoftCrossEntropy``) and the distilled set stores those probability rows. Images are
    initialised from real samples the expert ``label_expert`` (at ``label_epoch``, default the last)
    classifies correctly: per class, ``init_pool`` random real images are scored, correctly
    classified ones are taken in random order; if fewer than ``ipc`` are correct the rest are the
    remaining ones with the highest probability of their class (the reference keeps drawing batches
    and experts instead). The label logits start as in the reference ``DATM.py``
    (``pix_init="samples_predicted_correctly"``): the logits of every expert at ``label_epoch`` are
    computed on each selected image and averaged over the experts that classify it correctly,
    :func:`average_correct_logits` (an image no expert gets right, possible only through the fallback
    above, takes the mean over all experts).
(c) **Skipped updates**: if the iteration's loss exceeds ``skip_threshold`` (default 1.0, the
    ``threshold`` of the DATM configs; 1.1 in their CIFAR-10 IPC 1 config) the images, labels, lr and
    optimiser states stay unchanged (the key and the step counter advance), as the reference's
    ``if grand_loss <= args.threshold: step()``.
Evaluated with the ``datm`` preset (soft cross-entropy, the learned lr, batch 128).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxdd.distill.base import RealData, register_method
from jaxdd.distill.mtt import TABLE_FIELDS, MTTConfig, TrajectoryMatching, TrajectoryState
from jaxdd.models import Network


def average_correct_logits(logits: Any, labels: Any) -> np.ndarray:
    """DATM's initial soft labels: ``logits`` (K experts, n, C) averaged, per image, over the experts
    whose argmax equals ``labels`` (n,): ``Σ_k m_ki z_ki / Σ_k m_ki`` with ``m_ki = [argmax z_ki = y_i]``
    (reference ``DATM.py``); images no expert gets right take the mean over all K experts."""
    logits = np.asarray(logits, np.float64)
    correct = logits.argmax(-1) == np.asarray(labels)[None]  # (K, n)
    count = correct.sum(0)
    avg = np.einsum("kn,knc->nc", correct, logits) / np.maximum(count, 1)[:, None]
    return np.where((count > 0)[:, None], avg, logits.mean(0)).astype(np.float32)


def start_window(step: Any, min_start_epoch: int, current_max_start_epoch: int, max_start_epoch: int,
                 expansion_end_epoch: int) -> tuple[Any, Any]:
    """DATM's window ``(lo, hi)`` at iteration ``step`` (start epochs ``lo..hi-1``; see module doc).
    Works on Python ints and on (traced) int arrays."""
    grow = (max_start_epoch - current_max_start_epoch) * step // expansion_end_epoch
    hi = jnp.minimum(current_max_start_epoch + grow, max_start_epoch) if isinstance(step, jax.Array) else \
        min(current_max_start_epoch + grow, max_start_epoch)
    return min_start_epoch, hi


@dataclasses.dataclass(frozen=True)
class DATMConfig(MTTConfig):
    iterations: int = 10000
    current_max_start_epoch: int | None = None  # initial upper end of the window
    expansion_end_epoch: int | None = None  # iteration at which the window reaches max_start_epoch
    lr_y: float | None = None  # lr of the soft-label logits
    momentum_y: float = 0.9  # (open) SGD momentum of the label logits
    label_expert: int = 0  # expert that selects the correctly classified initial images
    label_epoch: int | None = None  # epoch of the experts whose logits give the labels (None: the last)
    init_pool: int = 256  # real images per class scored to find correctly classified ones
    skip_threshold: float | None = 1.0  # skip the update when the loss exceeds it (None: never)
    eval_preset: str = "datm"

    method: ClassVar[str] = "datm"
    TABLE_FIELDS: ClassVar[tuple[str, ...]] = TABLE_FIELDS + ("current_max_start_epoch", "expansion_end_epoch",
                                                              "lr_y")

    def __post_init__(self):
        super().__post_init__()
        if self.init != "real":
            raise ValueError("DATMConfig: DATM initialises images from correctly classified real samples; init must "
                             f"be 'real', got {self.init!r}")
        for f in ("current_max_start_epoch", "expansion_end_epoch", "init_pool"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"DATMConfig: {f} must be a positive integer, got {v!r}")
        if self.lr_y is not None and not self.lr_y > 0:
            raise ValueError(f"DATMConfig: lr_y must be > 0, got {self.lr_y}")
        if not 0 <= self.momentum_y < 1:
            raise ValueError(f"DATMConfig: momentum_y must lie in [0, 1), got {self.momentum_y}")
        if not isinstance(self.label_expert, int) or self.label_expert < 0:
            raise ValueError(f"DATMConfig: label_expert must be a non-negative integer, got {self.label_expert!r}")
        if self.skip_threshold is not None and not self.skip_threshold > 0:
            raise ValueError(f"DATMConfig: skip_threshold must be > 0 or None (never skip), got {self.skip_threshold}")
        if self.label_epoch is not None and (not isinstance(self.label_epoch, int) or self.label_epoch < 0):
            raise ValueError(f"DATMConfig: label_epoch must be a non-negative integer or None, got {self.label_epoch!r}")


@dataclasses.dataclass(frozen=True)
class DATM(TrajectoryMatching):
    config: DATMConfig = DATMConfig()
    name: str = "datm"

    def _check_epochs(self) -> None:
        super()._check_epochs()
        cfg = self.config
        if not cfg.min_start_epoch < cfg.current_max_start_epoch <= cfg.max_start_epoch:
            raise ValueError(f"DATM's window needs min_start_epoch < current_max_start_epoch <= max_start_epoch, got "
                             f"{cfg.min_start_epoch}, {cfg.current_max_start_epoch}, {cfg.max_start_epoch}")
        if cfg.label_expert >= self.buffer.num_experts:
            raise ValueError(f"label_expert {cfg.label_expert} does not exist: the buffer has {self.buffer.num_experts} "
                             "experts")
        if cfg.label_epoch is not None and cfg.label_epoch > self.buffer.num_epochs:
            raise ValueError(f"label_epoch {cfg.label_epoch} is beyond the buffer's epochs 0..{self.buffer.num_epochs}")

    def start_window(self, step: jax.Array) -> tuple[Any, Any]:
        cfg = self.config
        return start_window(step, cfg.min_start_epoch, cfg.current_max_start_epoch, cfg.max_start_epoch,
                            cfg.expansion_end_epoch)

    def _label_optimizer(self):
        return optax.sgd(self.config.lr_y, momentum=self.config.momentum_y or None)

    def expert_variables(self, expert: int) -> dict:
        """Expert ``expert``'s variables at ``label_epoch`` (non-parameter collections zero: the
        buffer stores parameters only)."""
        cfg = self.config
        epoch = self.buffer.num_epochs if cfg.label_epoch is None else cfg.label_epoch
        params = self.buffer.params(expert, epoch, self.network)
        shapes = jax.eval_shape(self.network.init, jax.random.key(0))
        rest = {k: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), v) for k, v in shapes.items() if k != "params"}
        return {**rest, "params": params}

    def label_expert_variables(self) -> dict:
        """The variables of ``label_expert`` (which selects the initial images)."""
        return self.expert_variables(self.config.label_expert)

    def init(self, key: jax.Array, real: RealData) -> TrajectoryState:
        """Correctly classified real images per class and the experts' averaged logits on them."""
        self._check_real(real)
        cfg = self.config
        real.check_ipc(cfg.ipc)
        k_pool, k_state = jax.random.split(key)
        c = real.num_classes
        n = int(min(real.min_count, max(cfg.init_pool, cfg.ipc)))
        pool, _ = real.sample(k_pool, n)  # (C, n, ...) distinct images per class, random order
        # train mode, as the student steps (BatchNorm: batch statistics; the buffer stores no running ones)
        expert = jax.jit(lambda v, x: self.network.apply(v, x, train=True)[0])
        variables = self.label_expert_variables()
        logits = np.stack([np.asarray(expert(variables, pool[cl])) for cl in range(c)])  # (C, n, C)
        images = []
        for cl in range(c):
            prob = np.asarray(jax.nn.softmax(logits[cl], -1))[:, cl]
            correct = logits[cl].argmax(-1) == cl
            # correct ones first (keeping the random order), then the others by decreasing p(class)
            order = np.lexsort((np.where(correct, 0.0, -prob), ~correct))[: cfg.ipc]
            images.append(np.asarray(pool[cl])[order])
        images = np.stack(images)  # (C, ipc, ...)
        all_logits = np.stack([np.concatenate([np.asarray(expert(self.expert_variables(k), images[cl]))
                                               for cl in range(c)]) for k in range(self.num_experts)])
        labels = np.repeat(np.arange(c), cfg.ipc)
        label_logits = jnp.asarray(average_correct_logits(all_logits, labels))
        images = jnp.asarray(images.reshape((c * cfg.ipc,) + images.shape[2:]), jnp.float32)
        return self._state(key, k_state, images, label_logits, self._label_optimizer().init(label_logits))

    def train_labels(self, labels: jax.Array) -> jax.Array:
        """The student's soft targets: ``softmax(label logits)``."""
        return jax.nn.softmax(labels, axis=-1)

    def _learnables(self, state: TrajectoryState) -> dict:
        return {"images": state.images, "lr": state.syn_lr, "labels": state.labels}

    def _apply(self, state: TrajectoryState, learn: dict, grads: dict) -> TrajectoryState:
        new = super()._apply(state, learn, grads)
        upd, opt_labels = self._label_optimizer().update(grads["labels"], state.opt_labels, learn["labels"])
        return new.replace(labels=optax.apply_updates(learn["labels"], upd), opt_labels=opt_labels)

    def _maybe_skip(self, old: TrajectoryState, new: TrajectoryState, loss: jax.Array):
        if self.config.skip_threshold is None:
            return new, jnp.zeros((), bool)
        skip = ~(loss <= self.config.skip_threshold)  # NaN losses are skipped too
        keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(skip, x, y), a, b)  # noqa: E731
        fields = ("images", "labels", "syn_lr", "opt_images", "opt_lr", "opt_labels")
        return new.replace(**{f: keep(getattr(old, f), getattr(new, f)) for f in fields}), skip


@register_method("datm", DATMConfig, "difficulty-aligned trajectory matching with soft labels, Guo et al. ICLR 2024 "
                 "(needs --set buffer=PATH)")
def _build_datm(network: Network, config: DATMConfig, mesh: Mesh | None = None) -> DATM:
    return DATM(network, config, mesh, "datm")
