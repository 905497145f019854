"""MTT (trajectory matching) as a distillation method of the ``jaxdd.distill`` protocol.

Cazenavette et al., "Dataset Distillation by Matching Training Trajectories" (CVPR 2022), after the
authors' ``distill.py``. Each iteration (one ``update``, pure and jittable):

1. draw an expert ``i ~ U{0..K-1}`` and a start epoch ``t ~ U{lo..hi-1}`` from the state's key
   (MTT: ``lo = min_start_epoch = 0``, ``hi = max_start_epoch``; DATM grows ``hi``, see
   :mod:`jaxdd.distill.datm`); the reference cycles through a shuffled buffer instead;
2. read ``θ*_t`` and ``θ*_{t+M}`` of expert i (M = ``expert_epochs``) from the expert buffer on
   disk through a ``jax.pure_callback`` (two memory-mapped rows: the buffer is streamed, never
   loaded whole);
3. compute :func:`jaxdd.distill.trajectory.trajectory_loss` (N = ``syn_steps`` student steps with
   the learnable lr α, per-sample DSA, optional SDC ``λ·mean_i P(θ_i)``) in the chosen memory mode
   and its gradient w.r.t. the images and α (and soft labels for DATM);
4. SGD with momentum 0.5 on the images (``lr_img``) and on α (``lr_lr``), as the reference.

Synthetic images start from random real images of each class (``init="real"``) or noise; α starts
at ``lr_teacher`` (the experts' lr). The distilled set stores the learned α; evaluate it with the
``mtt`` preset (the set's lr, DSA, 1000 epochs). Unset hyper-parameters come from
:mod:`jaxdd.distill.trajectory_configs` (the authors' row for the buffer's dataset and the IPC).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxdd.distill.base import INITS, RealData, image_optimizer, init_images, register_method, start_images
from jaxdd.difficulty.sdc import SDC_MODES
from jaxdd.distill.trajectory import MEMORY_MODES, resolve_checkpoint_every, trajectory_loss
from jaxdd.distill.trajectory_configs import authors_defaults
from jaxdd.experts.buffer import ExpertBuffer, vector_to_params
from jaxdd.models import Network

# fields filled from the authors' table when left at None
TABLE_FIELDS = ("syn_steps", "expert_epochs", "max_start_epoch", "min_start_epoch", "lr_img", "lr_lr", "lr_teacher")


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@dataclasses.dataclass(frozen=True)
class MTTConfig:
    """MTT settings. ``None`` fields are resolved from the authors' table (the row of ``defaults``,
    else of the buffer's dataset, at the nearest IPC) when the method is built; the resolved values
    and the row used (``defaults_source``) are what every output records."""

    ipc: int = 1
    iterations: int = 5000
    buffer: str | None = None  # expert buffer folder (`jaxdd experts`), required
    defaults: str | None = None  # dataset whose authors' row fills unset fields (None: the buffer's)
    syn_steps: int | None = None  # N student steps per iteration
    expert_epochs: int | None = None  # M: target = expert epoch t + M
    max_start_epoch: int | None = None  # start epoch t < max_start_epoch
    min_start_epoch: int | None = None
    lr_img: float | None = None
    lr_lr: float | None = None  # lr of the learnable step size α
    lr_teacher: float | None = None  # initial α
    momentum: float = 0.5  # SGD momentum of the images and of α (reference)
    batch_syn: int | None = None  # student mini-batch (None: the whole synthetic set)
    init: str = "real"
    dsa: bool = True
    dsa_strategy: str | None = None  # None: jaxdd.augment.default_strategy(the buffer's dataset)
    memory: str = "remat"  # unroll | remat | tesla (same gradient, different memory)
    checkpoint_every: int | str | None = "sqrt"  # tesla: stored student states every K steps
    max_experts: int | None = None  # use only the first experts of the buffer
    sdc: float = 0.0  # SDC λ: gradient-norm penalty of the synthetic batch inside the student steps
    sdc_mode: str = "mean"
    sdc_squared: bool = False
    eval_preset: str = "mtt"  # how the driver evaluates the set (the learned lr, DSA)
    defaults_source: str = ""  # filled when resolved: which authors' row was used

    def __post_init__(self):
        def bad(msg):
            raise ValueError(f"{type(self).__name__}: {msg}")

        if not _positive_int(self.ipc):
            bad(f"ipc must be a positive integer, got {self.ipc!r}")
        if not isinstance(self.iterations, int) or self.iterations < 0:
            bad(f"iterations must be a non-negative integer, got {self.iterations!r}")
        if self.buffer is not None and not isinstance(self.buffer, str):
            bad(f"buffer must be the path of an expert buffer folder, got {self.buffer!r}")
        for f in ("syn_steps", "expert_epochs", "max_start_epoch", "batch_syn", "max_experts"):
            v = getattr(self, f)
            if v is not None and not _positive_int(v):
                bad(f"{f} must be a positive integer, got {v!r}")
        if self.min_start_epoch is not None and (not isinstance(self.min_start_epoch, int) or self.min_start_epoch < 0):
            bad(f"min_start_epoch must be a non-negative integer, got {self.min_start_epoch!r}")
        for f in ("lr_img", "lr_lr", "lr_teacher"):
            v = getattr(self, f)
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                bad(f"{f} must be > 0, got {v!r}")
        if not 0 <= self.momentum < 1:
            bad(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.init not in INITS:
            bad(f"init must be one of {INITS}, got {self.init!r}")
        if self.memory not in MEMORY_MODES:
            bad(f"memory must be one of {MEMORY_MODES}, got {self.memory!r}")
        resolve_checkpoint_every(self.checkpoint_every, 1)
        if not self.sdc >= 0:
            bad(f"sdc (the SDC weight λ) must be >= 0, got {self.sdc}")
        if self.sdc_mode not in SDC_MODES:
            bad(f"sdc_mode must be one of {SDC_MODES}, got {self.sdc_mode!r}")
        if self.dsa_strategy is not None:
            from jaxdd.augment import parse_strategy

            parse_strategy(self.dsa_strategy)

    method: ClassVar[str] = "mtt"  # the row family of the authors' table
    TABLE_FIELDS: ClassVar[tuple[str, ...]] = TABLE_FIELDS


def resolve_config(config: MTTConfig, buffer: ExpertBuffer) -> MTTConfig:
    """Fill ``None`` table fields from the authors' row (``config.defaults`` or the buffer's
    dataset), the DSA strategy from the buffer's dataset (``jaxdd.augment.default_strategy``), and
    ``lr_teacher`` from the authors' row."""
    fields, source = authors_defaults(config.method, config.defaults or buffer.index["dataset"]["name"], config.ipc)
    changes = {f: fields[f] for f in type(config).TABLE_FIELDS if getattr(config, f) is None and f in fields}
    if config.dsa and config.dsa_strategy is None:
        from jaxdd.augment import default_strategy

        changes["dsa_strategy"] = default_strategy(buffer.index["dataset"])
    changes["defaults_source"] = source
    return dataclasses.replace(config, **changes)


@flax.struct.dataclass
class TrajectoryState:
    """State of MTT / DATM: the learnables, their optimiser states, the PRNG key and the step."""

    images: jax.Array  # (C * ipc, H, W, Ch), grouped by class
    labels: jax.Array  # (C * ipc,) int32 (MTT) or (C * ipc, C) float32 label logits (DATM, learned)
    syn_lr: jax.Array  # () float32, the learnable student step size α
    opt_images: Any
    opt_lr: Any
    opt_labels: Any  # None for MTT
    key: jax.Array
    step: jax.Array  # () int32 iterations done


@dataclasses.dataclass(frozen=True)
class TrajectoryMatching:
    """MTT. ``buffer`` is opened from ``config.buffer`` (or passed in) and checked against the network."""

    network: Network
    config: MTTConfig = MTTConfig()
    mesh: Mesh | None = None
    name: str = "mtt"
    buffer: ExpertBuffer | None = dataclasses.field(default=None, compare=False, repr=False)
    image_tx: optax.GradientTransformation | None = None  # None: SGD (config.lr_img, config.momentum)

    extendable = True

    def __post_init__(self):
        buffer = self.buffer
        if buffer is None:
            if self.config.buffer is None:
                raise ValueError(f"{self.name} needs an expert buffer: set buffer=PATH (CLI: --set buffer=PATH), a "
                                 "folder made by `jaxdd experts --dataset NAME --num-experts N --epochs E --out PATH`")
            buffer = ExpertBuffer(self.config.buffer)
        buffer.check_compatible(self.network)
        config = self.config
        if config.buffer is None:
            config = dataclasses.replace(config, buffer=str(buffer.path))
        config = resolve_config(config, buffer)
        object.__setattr__(self, "buffer", buffer)
        object.__setattr__(self, "config", config)
        self._check_epochs()

    # -- settings ------------------------------------------------------------------------------
    def _check_epochs(self) -> None:
        cfg, e = self.config, self.buffer.num_epochs
        last = cfg.max_start_epoch - 1 + cfg.expert_epochs
        if last > e:
            raise ValueError(f"start epochs up to max_start_epoch - 1 = {cfg.max_start_epoch - 1} plus expert_epochs = "
                             f"{cfg.expert_epochs} need expert epoch {last}, but the buffer {self.buffer.path} holds "
                             f"epochs 0..{e}; lower max_start_epoch/expert_epochs or train longer experts (--epochs)")
        if cfg.min_start_epoch >= cfg.max_start_epoch:
            raise ValueError(f"min_start_epoch ({cfg.min_start_epoch}) must be below max_start_epoch "
                             f"({cfg.max_start_epoch})")

    @property
    def num_experts(self) -> int:
        n = self.buffer.num_experts
        return n if self.config.max_experts is None else min(n, self.config.max_experts)

    def start_window(self, step: jax.Array) -> tuple[Any, Any]:
        """``(lo, hi)``: the start epoch is drawn from ``lo..hi-1`` (MTT: fixed)."""
        return self.config.min_start_epoch, self.config.max_start_epoch

    @property
    def eval_preset(self) -> str:
        return self.config.eval_preset

    def for_dataset(self, dataset) -> "TrajectoryMatching":
        """Itself; ``ValueError`` unless the buffer was trained on ``dataset``."""
        self.buffer.check_compatible(self.network, dataset)
        return self

    def _check_real(self, real: RealData) -> None:
        if tuple(real.image_shape) != tuple(self.network.input_shape) or real.num_classes != self.network.num_classes:
            raise ValueError(f"real data ({real.num_classes} classes of {real.image_shape} images) does not fit "
                             f"network {self.network.name!r} and its expert buffer ({self.network.num_classes} classes "
                             f"of {self.network.input_shape}); use the dataset the buffer was trained on")
        n = real.num_classes * self.config.ipc
        b = n if self.config.batch_syn is None else min(self.config.batch_syn, n)
        if self.mesh is not None and b % self.mesh.size:
            raise ValueError(f"the student batch ({b} images) must be a multiple of the {self.mesh.size} devices; "
                             "set batch_syn (or ipc) accordingly or run without --devices")

    def _optimizers(self):
        """(the images' optimiser: ``image_tx`` or SGD, the learnable lr's SGD), as the reference."""
        cfg = self.config
        images = self.image_tx if self.image_tx is not None else optax.sgd(cfg.lr_img, momentum=cfg.momentum or None)
        return image_optimizer(images), optax.sgd(cfg.lr_lr, momentum=cfg.momentum or None)

    # -- protocol --------------------------------------------------------------------------------
    def init(self, key: jax.Array, real: RealData) -> TrajectoryState:
        """Real (or noise) images per class, int labels, α = lr_teacher."""
        self._check_real(real)
        k_init, k_state = jax.random.split(key)
        images, labels = init_images(k_init, real, self.config.ipc, self.config.init)
        return self._state(key, k_state, images, labels, None)

    def _state(self, init_key, key, images, labels, opt_labels) -> TrajectoryState:
        """The state from the initial images (``init_key``: the method's init key, for the images'
        optimiser's ``start``; ``key``: the state's PRNG key)."""
        opt_img, opt_lr = self._optimizers()
        images, opt_images = start_images(opt_img, init_key, images)
        lr = jnp.asarray(self.config.lr_teacher, jnp.float32)
        return TrajectoryState(images=images, labels=labels, syn_lr=lr, opt_images=opt_images,
                               opt_lr=opt_lr.init(lr), opt_labels=opt_labels, key=key, step=jnp.zeros((), jnp.int32))

    def synthetic(self, state: TrajectoryState) -> tuple[jax.Array, jax.Array, jax.Array]:
        return state.images, self.train_labels(state.labels), state.syn_lr

    def train_labels(self, labels: jax.Array) -> jax.Array:
        """Labels the student trains on (MTT: the int labels)."""
        return labels

    def _fetch(self, expert, start):
        return self.buffer.pair(expert, start, self.config.expert_epochs)

    def expert_pair(self, expert: jax.Array, start: jax.Array) -> tuple[Any, Any]:
        """(θ*_t, θ*_{t+M}) of ``expert`` as parameter pytrees, streamed from the buffer."""
        shape = jax.ShapeDtypeStruct((2, self.buffer.num_params), jnp.float32)
        pair = jax.pure_callback(self._fetch, shape, expert, start)
        return vector_to_params(pair[0], self.network), vector_to_params(pair[1], self.network)

    def matching_loss(self, learn: dict, state: TrajectoryState, start_params, target_params, key: jax.Array):
        cfg = self.config
        labels = self.train_labels(learn.get("labels", state.labels))
        return trajectory_loss(self.network, learn["images"], labels, learn["lr"], start_params, target_params, key,
                               syn_steps=cfg.syn_steps, batch_syn=cfg.batch_syn,
                               dsa_strategy=cfg.dsa_strategy if cfg.dsa else None, memory=cfg.memory,
                               checkpoint_every=cfg.checkpoint_every, sdc=cfg.sdc, sdc_mode=cfg.sdc_mode,
                               sdc_squared=cfg.sdc_squared, mesh=self.mesh)

    def _apply(self, state: TrajectoryState, learn: dict, grads: dict) -> TrajectoryState:
        opt_img, opt_lr = self._optimizers()
        upd, opt_images = opt_img.update(grads["images"], state.opt_images, learn["images"])
        images = optax.apply_updates(learn["images"], upd)
        upd, opt_lr_state = opt_lr.update(grads["lr"], state.opt_lr, learn["lr"])
        lr = optax.apply_updates(learn["lr"], upd)
        return state.replace(images=images, syn_lr=lr, opt_images=opt_images, opt_lr=opt_lr_state)

    def _learnables(self, state: TrajectoryState) -> dict:
        return {"images": state.images, "lr": state.syn_lr}

    def update(self, state: TrajectoryState, real: RealData) -> tuple[TrajectoryState, dict[str, jax.Array]]:
        key, k_expert, k_start, k_loss = jax.random.split(state.key, 4)
        expert = jax.random.randint(k_expert, (), 0, self.num_experts)
        lo, hi = self.start_window(state.step)
        start = jax.random.randint(k_start, (), lo, hi)
        start_params, target_params = self.expert_pair(expert, start)
        learn = self._learnables(state)
        (loss, aux), grads = jax.value_and_grad(self.matching_loss, has_aux=True)(learn, state, start_params,
                                                                                   target_params, k_loss)
        new = self._apply(state, learn, grads)
        new, skipped = self._maybe_skip(state, new, loss)
        new = new.replace(key=key, step=state.step + 1)
        metrics = {"loss": loss, "match": aux["match"], "syn_lr": new.syn_lr, "expert": expert.astype(jnp.float32),
                   "start_epoch": start.astype(jnp.float32), "max_start": jnp.asarray(hi, jnp.float32),
                   "skipped": skipped.astype(jnp.float32)}
        if self.config.sdc > 0:
            metrics["sdc"] = aux["sdc"]
        return new, metrics

    def _maybe_skip(self, old: TrajectoryState, new: TrajectoryState, loss: jax.Array):
        """MTT never skips (DATM overrides)."""
        return new, jnp.zeros((), bool)


@register_method("mtt", MTTConfig, "trajectory matching, Cazenavette et al. CVPR 2022 (needs --set buffer=PATH)")
def _build_mtt(network: Network, config: MTTConfig, mesh: Mesh | None = None) -> TrajectoryMatching:
    return TrajectoryMatching(network, config, mesh, "mtt")
