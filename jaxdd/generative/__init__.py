"""Generative priors for distillation: a class-conditional diffusion prior, DDIM with guidance
hooks and terms (DAG, ACS), and LD3M (latent dataset distillation with diffusion models).

Plugging in a pretrained model
------------------------------
Everything here (the one DDIM sampler :mod:`~jaxdd.generative.sampling` with the guidance terms of
:mod:`~jaxdd.generative.guidance` (DAG, ACS: :mod:`~jaxdd.generative.acs`), LD3M, ``jaxdd prior
sample``, ``jaxdd generate``, ``jaxdd distill --method ld3m``) talks to the model only through :class:`DiffusionPrior`, so a large pretrained
class-conditional model converted to Flax (a DiT, or a latent diffusion model as used at 256 px
on TPUs) plugs in without changing LD3M. It must provide, as a frozen hashable object (weights
kept apart in a ``params`` pytree, so that every function stays pure and jittable):

* ``eps(params, z_t, t, c)``: the epsilon prediction for latents ``z_t`` (N, h, w, c), integer
  timesteps ``t`` (N,) and class-embedding *vectors* ``c`` (N, D). It must accept any ``c``, not
  only table rows, because LD3M learns ``c``. (DiT predicts eps and a variance: return the eps half.)
* ``schedule``: a :class:`NoiseSchedule` with the model's ``alpha_bar`` over its T training steps.
* ``encode(params, x)`` / ``decode(params, z)``: images <-> latents, already multiplied / divided
  by the latent scale factor (0.18215 for Stable-Diffusion-style VAEs); identity for pixel-space
  models. ``decode`` must be differentiable.
* ``image_shape``, ``latent_shape``, ``num_classes``, ``embedding_dim``.
* ``embedding_table(params)``: (num_classes + 1, D) class embeddings, the last row being the
  null class of classifier-free guidance (DiT's ``LabelEmbedder`` table has exactly this layout).
* ``pixel_mean`` / ``pixel_std``: decoded images are ``(pixels - pixel_mean) / pixel_std`` with
  pixels in [0, 1] (0.5 / 0.5 for models that decode to [-1, 1]); outputs are re-normalised to
  the dataset's statistics (:func:`to_dataset_space`).

Register a loader for its folder format with :func:`register_prior_loader` so that ``--prior
FOLDER`` finds it. :class:`SmallPrior` (a UNet, optionally on the latents of a small KL
autoencoder) implements the same interface and is trainable offline on a CPU
(:func:`train_prior`, ``jaxdd prior train``).

LD3M as a distillation method (``jaxdd distill --method ld3m --prior FOLDER --match dm|dc|dsa|mtt``)
lives in :mod:`jaxdd.distill.ld3m`, registered when :mod:`jaxdd.distill` is imported;
``build_ld3m(network, config, prior=..., prior_params=...)`` takes an in-memory prior instead of
a folder.
"""

from jaxdd.generative.ddim import Guidance, GuidanceContext, ddim_sample, guided_eps, noise_to_last_step
from jaxdd.generative.ld3m import LD3MGenerator
from jaxdd.generative.prior import (DiffusionPrior, SmallPrior, check_compatible, class_embedding, load_prior,
                                    null_embedding, register_prior_loader, save_prior, to_dataset_space)
from jaxdd.generative.schedule import (NoiseSchedule, ddim_step, ddim_timesteps, ddim_update, make_schedule,
                                       predict_x0, q_sample)
from jaxdd.generative.sampling import default_window, generate, generate_batch, sample_latents
from jaxdd.generative.training import PriorTrainConfig, train_prior

__all__ = [
    "DiffusionPrior", "Guidance", "GuidanceContext", "LD3MGenerator", "NoiseSchedule", "PriorTrainConfig",
    "SmallPrior", "default_window", "generate", "generate_batch", "sample_latents", "train_prior",
    "check_compatible", "class_embedding", "ddim_sample", "ddim_step", "ddim_timesteps", "ddim_update",
    "guided_eps", "load_prior", "make_schedule", "noise_to_last_step", "null_embedding", "predict_x0",
    "q_sample", "register_prior_loader", "save_prior", "to_dataset_space",
]
