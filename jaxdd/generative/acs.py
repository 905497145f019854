"""ACS: adversary-guided curriculum sampling (Zou et al., "Enhancing Diffusion-based Dataset
Distillation via Adversary-Guided Curriculum Sampling", ICME 2025, arXiv 2508.01264).

The IPC images of every class are generated in K curricula of ``B = IPC / K`` images per class.
Curriculum 1 is plain DDIM with classifier-free guidance. Before curriculum k > 1 a discriminator
D (a classifier over the classes) is trained *from scratch* on all images generated so far; while
sampling curriculum k, inside the step window,

    z_{t'} <- z_{t'} - rho_t(g_adv) g_adv - rho_t(g_dev) g_dev,
    g_adv = grad_{x_t} -CE(D(decode(x0_hat(x_t))), y),   g_dev = grad_{x_t} cos(x_t, m*)

(:mod:`jaxdd.generative.guidance`), so the new samples are hard for a model trained on the earlier
curricula and far from the nearest earlier latent m* of their class. The output is ordered by
curriculum within each class: the first IPC' images of a class are the earliest curricula, so a
smaller IPC is a prefix (MinimaxDiffusion's ``igd_sample_curriculum.py`` evaluates it that way).

State: :class:`ACSState` (``init`` / ``update`` pair: ``update`` generates one curriculum), with
D's :class:`jaxdd.train.TrainState` inside, checkpointed after every curriculum by
:func:`run_acs`; curriculum k draws everything from ``fold_in(key, k)``, so a run killed between
curricula and resumed is bit-identical to an uninterrupted one.

Choices the paper leaves open (settings of :class:`ACSConfig`):

* ``discriminator="convnet"``, trained with the one trainer (:mod:`jaxdd.train`) by the DC
  evaluation protocol (SGD 0.01, momentum 0.9, wd 5e-4, lr x0.1 at half) for
  ``disc_epochs=300`` with DSA augmentation: D then resembles the model the distilled set will be
  scored with; the precursor code retrains a ResNet-18 with CutMix on ImageNet subsets, too slow
  here and for 28x28 images.
* ``scale=0.05``: the adversarial step relative to the noise prediction, the same bound as DAG's
  (:mod:`jaxdd.sample.guided`: at most 0.8 of the noise level over the default window; IGD's
  0.0075 for DiT-XL/2 bounds it at 0.12). ``deviation=0.02``: a companion term, kept below
  the adversarial step so that it diversifies without dominating. ``memory=100`` (IGD's
  memory size); the window of :func:`jaxdd.generative.sampling.default_window`. K (``curricula``)
  has no default in the paper; 2 here (the smallest that uses D). None of these is tuned on a
  trained prior yet.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.generative.guidance import DEFAULT_MEMORY, adversarial_term, deviation_term, latent_memory
from jaxdd.generative.prior import DiffusionPrior
from jaxdd.generative.sampling import DEFAULT_CFG, DEFAULT_STEPS, generate, window_steps
from jaxdd.models import Network, create_network
from jaxdd.train import Trainer, TrainConfig, TrainState, fit
from jaxdd.utils.labels import cross_entropy


@dataclasses.dataclass(frozen=True)
class ACSConfig:
    """ACS settings (module docstring for the choices)."""

    ipc: int
    curricula: int = 2
    scale: float = 0.05
    deviation: float = 0.02
    memory: int = DEFAULT_MEMORY
    steps: int = DEFAULT_STEPS
    cfg_scale: float = DEFAULT_CFG
    window: tuple[int, int] | None = None
    discriminator: str = "convnet"
    disc_epochs: int = 300
    disc_batch: int = 256
    disc_lr: float = 0.01
    augment: str | None = "auto"  # DSA strategy for D; "auto" = the dataset's default; None = off
    batch_size: int = 100
    pad_to_batch: bool = False  # pad every sampling batch to batch_size (one compilation for every block size)

    def __post_init__(self):
        if self.window is not None:
            object.__setattr__(self, "window", tuple(int(v) for v in self.window))
        if self.ipc < 1 or self.curricula < 1:
            raise ValueError(f"ACS needs ipc >= 1 and curricula >= 1, got ipc={self.ipc}, curricula={self.curricula}")
        if self.ipc % self.curricula:
            raise ValueError(f"the number of curricula K={self.curricula} must divide IPC={self.ipc} (each curriculum "
                             f"generates IPC / K images per class); choose K among "
                             f"{[k for k in range(1, self.ipc + 1) if self.ipc % k == 0]}")
        if self.scale < 0 or self.deviation < 0 or self.memory < 1:
            raise ValueError(f"ACS needs scale >= 0, deviation >= 0 and memory >= 1, got {self.scale}, "
                             f"{self.deviation}, {self.memory}")
        window_steps(self.steps, self.window)

    @property
    def block(self) -> int:
        """Images per class and curriculum, IPC / K."""
        return self.ipc // self.curricula


class ACSState(NamedTuple):
    curriculum: jax.Array   # () int32: curricula done
    images: jax.Array       # (C, IPC, H, W, Ch) generated images (prior's normalisation), a prefix filled
    latents: jax.Array      # (C, IPC, *latent) their clean latents (the deviation memory)
    disc: TrainState        # the discriminator trained before the latest curriculum (one model)
    disc_loss: jax.Array    # (K, 2) D's training loss, first and last epoch, per curriculum (nan: none)
    adv_loss: jax.Array     # (K,) D's cross-entropy on the curriculum's new samples (nan: no D)


@dataclasses.dataclass(frozen=True)
class ACS:
    """ACS for ``prior`` (hashable): ``state = acs.init(key)``; ``state, info = acs.update(state, key, params)``."""

    prior: DiffusionPrior
    config: ACSConfig
    dataset: str = ""

    @property
    def num_classes(self) -> int:
        return self.prior.num_classes

    @property
    def net(self) -> Network:
        return create_network(self.config.discriminator, num_classes=self.num_classes,
                              input_shape=tuple(self.prior.image_shape))

    @property
    def trainer(self) -> Trainer:
        cfg = self.config
        augment = cfg.augment
        if augment == "auto":
            from jaxdd.augment.dsa import default_strategy

            augment = default_strategy(self.dataset or int(self.prior.image_shape[2]))
        return Trainer(self.net, TrainConfig(lr=cfg.disc_lr, batch_size=cfg.disc_batch, epochs=cfg.disc_epochs,
                                             augment=augment))

    def init(self, key: jax.Array) -> ACSState:
        """Empty output buffers and an untrained discriminator (its shape for checkpoint templates)."""
        c, cfg = self.num_classes, self.config
        return ACSState(curriculum=jnp.zeros((), jnp.int32),
                        images=jnp.zeros((c, cfg.ipc, *self.prior.image_shape), jnp.float32),
                        latents=jnp.zeros((c, cfg.ipc, *self.prior.latent_shape), jnp.float32),
                        disc=self.trainer.init(jax.random.fold_in(key, 0), num_models=1),
                        disc_loss=jnp.full((cfg.curricula, 2), jnp.nan, jnp.float32),
                        adv_loss=jnp.full((cfg.curricula,), jnp.nan, jnp.float32))

    def train_discriminator(self, key: jax.Array, images: np.ndarray, labels: np.ndarray,
                            progress: bool = False) -> tuple[TrainState, list[dict]]:
        """D from scratch on ``images``/``labels`` (the init/update pair of :class:`jaxdd.train.Trainer`)."""
        trainer = self.trainer
        k_init, k_fit = jax.random.split(key)
        state = trainer.init(k_init, num_models=1)
        return fit(trainer, state, images, labels, k_fit, progress=progress, desc="discriminator")

    def update(self, state: ACSState, key: jax.Array, params: Any, progress: bool = True) -> tuple[ACSState, dict]:
        """Generate curriculum ``state.curriculum`` (0-based) from ``fold_in(key, k)``; before k > 0 train D
        on the k earlier blocks. Returns the new state and ``{"curriculum", "disc_loss", "adv_loss"}``."""
        cfg, c, b = self.config, self.num_classes, self.config.block
        k = int(state.curriculum)
        if k >= cfg.curricula:
            raise ValueError(f"all {cfg.curricula} curricula are done")
        k_disc, k_gen = jax.random.split(jax.random.fold_in(key, k))
        labels = np.repeat(np.arange(c), b)
        terms, aux, disc, disc_loss = (), None, state.disc, state.disc_loss
        if k > 0:
            seen = np.asarray(state.images[:, :k * b]).reshape(-1, *self.prior.image_shape)
            seen_labels = np.repeat(np.arange(c), k * b)
            disc, history = self.train_discriminator(k_disc, seen, seen_labels, progress=progress)
            disc_loss = disc_loss.at[k].set(jnp.asarray([history[0]["loss"][0], history[-1]["loss"][0]]))
            variables = disc.model_variables(0)
            terms = (adversarial_term(self.net.logits, cfg.scale), deviation_term(cfg.deviation))
            seen_latents = np.asarray(state.latents[:, :k * b]).reshape(-1, *self.prior.latent_shape)
            aux = {"adversarial": variables, "deviation": latent_memory(seen_latents, seen_labels, c, cfg.memory)}
        images, latents = generate(self.prior, params, labels, k_gen, steps=cfg.steps, cfg_scale=cfg.cfg_scale,
                                   guidance=terms, window=cfg.window, aux=aux, batch_size=cfg.batch_size,
                                   progress=f"curriculum {k + 1}/{cfg.curricula}" if progress else None,
                                   return_latents=True, pad_to_batch=cfg.pad_to_batch)
        adv = float("nan")
        if k > 0:
            adv = float(discriminator_loss(self.net, disc.model_variables(0), images, labels))
        new = state._replace(
            curriculum=jnp.asarray(k + 1, jnp.int32),
            images=state.images.at[:, k * b:(k + 1) * b].set(jnp.asarray(images).reshape(c, b, *images.shape[1:])),
            latents=state.latents.at[:, k * b:(k + 1) * b].set(jnp.asarray(latents).reshape(c, b, *latents.shape[1:])),
            disc=disc, disc_loss=disc_loss, adv_loss=state.adv_loss.at[k].set(adv))
        return new, {"curriculum": k + 1, "disc_loss": np.asarray(disc_loss[k]).tolist(), "adv_loss": adv}

    def output(self, state: ACSState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(images, labels, latents)`` of the curricula done, class by class, each class in curriculum order."""
        n = int(state.curriculum) * self.config.block
        images = np.asarray(state.images[:, :n]).reshape(-1, *self.prior.image_shape)
        latents = np.asarray(state.latents[:, :n]).reshape(-1, *self.prior.latent_shape)
        return images, np.repeat(np.arange(self.num_classes), n).astype(np.int32), latents


def discriminator_loss(net: Network, variables: Any, images: Any, labels: Any) -> jax.Array:
    """Mean cross-entropy of D (one model's ``variables``) on ``images`` (inference mode)."""
    return jnp.mean(cross_entropy(net.logits(variables, jnp.asarray(images)), jnp.asarray(labels)))


def has_run(checkpoint_dir: str | Path) -> bool:
    """Whether ``checkpoint_dir`` holds an ACS checkpoint."""
    from jaxdd.utils.checkpoint import Checkpointer

    if not Path(checkpoint_dir).exists():
        return False
    with Checkpointer(checkpoint_dir) as ckpt:
        return ckpt.latest_step() is not None


def run_acs(acs: ACS, params: Any, key: jax.Array, checkpoint_dir: str | Path | None = None, *,
            resume: bool = False, stop_after: int | None = None, progress: bool = True,
            on_curriculum=None) -> ACSState:
    """All curricula (or up to ``stop_after``) on :func:`jaxdd.utils.run_loop.run_loop`,
    checkpointing the state after each one in ``checkpoint_dir``; ``resume=True`` continues from its
    latest checkpoint (refused when the ACS settings differ). ``on_curriculum(info)`` gets each
    curriculum's ``update`` info."""
    from jaxdd.utils.run_loop import Hook, RunConfig, run_loop

    loop = RunConfig(steps=acs.config.curricula, checkpoint_dir=checkpoint_dir, resume=resume, checkpoint_every=1,
                     record={"acs_config": dataclasses.asdict(acs.config)}, extendable=False,
                     not_extendable="IPC / K images per curriculum", stop_at=stop_after, unit="curriculum",
                     units="curricula", kind="an ACS run", desc="ACS", progress=False)
    hooks = [Hook(lambda k, st, info: info)]
    if on_curriculum is not None:
        hooks.append(Hook(lambda k, st, info: on_curriculum(info), after_checkpoint=True))
    return run_loop(lambda st, k: acs.update(st, key, params, progress=progress), acs.init(key), loop, hooks).state
