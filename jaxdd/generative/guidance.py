"""Guidance terms for DDIM sampling and their shared normalisation.

A term is a small pure function of a :class:`GuidanceInputs` (x_t, t, x̂0, ε̂, labels, key,
aux) returning ``g = ∇_{x_t} E``, the gradient of an energy ``E`` that the sampler *decreases*.
Inside the step window, after the DDIM update to z_{t'} (influence-guided diffusion, IGD:
Chen et al., "Influence-Guided Diffusion for Dataset Distillation", ICLR 2025, mchen725/DD_IGD,
``p_sample``)::

    z_{t'} <- z_{t'} - sum_k rho_t(g_k) g_k,
    rho_t(g) = s_k * RMS(eps_hat) / RMS(g) * sqrt(1 - alpha_bar_t)

per sample (IGD generates one image at a time, so its RMS is per image too). The normalisation
makes ``s`` a step size relative to the noise prediction, independent of the loss's units and of
the latent's size; IGD's value is ``0.0015 * k`` with ``k = 5`` for DiT-XL/2 (s = 0.0075).

Terms (``scale`` = s; a term with ``s = 0`` is dropped, so it leaves the samples bit-identical):

* :func:`difficulty_term` (DAG, Li et al., arXiv 2601.10090): ``E = (d(x) - d_target)^2`` with
  ``d = 1 - softmax(f(x))_y`` of a classifier ``f`` on ``x = decode(x̂0(x_t))``, per-sample targets.
* :func:`adversarial_term` (ACS, Zou et al., ICME 2025, arXiv 2508.01264): ``E = -CE(D(x), y)``:
  new samples become hard for the discriminator D trained on the earlier curricula.
* :func:`deviation_term` (IGD's diversity term, kept by ACS): ``E = cos(x_t, m*)`` with ``m*`` the
  most cosine-similar latent of the same class among the last M generated ones. IGD adds
  ``gamma * grad cos`` unnormalised (gamma = ``lambda_neg``); the raw gradient of a cosine scales
  like 1/dim(latent), so a fixed gamma would not carry over from DiT's 4096-dim latents to a
  small prior's; here it goes through the same rho_t as the others.
* Classifier-free guidance is not a gradient term: it changes ε̂ itself
  (``eps_u + w (eps_c - eps_u)``, :func:`jaxdd.generative.ddim.guided_eps`), which every term sees
  (``cfg_scale`` of :func:`jaxdd.generative.sampling.generate`).

``aux`` (shared across the batch) and ``sample_aux`` (leading sample axis) are dicts keyed by the
term's ``name``: classifier weights, per-sample targets, the latent memory. Keeping them as data,
not closure constants, lets one compiled sampler serve every curriculum and target.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxdd.utils.labels import cross_entropy

#: IGD's base factor of rho_t (``"l2": 0.0015 * rms(eps)``) times its DiT scale k = 5.
IGD_SCALE = 0.0015 * 5
#: Deviation weight: IGD / MinimaxDiffusion use gamma ~ 100-120 on the raw cosine gradient
#: (``--lambda-neg``); in normalised units the default is chosen separately (see deviation_term).
DEFAULT_MEMORY = 100


class GuidanceInputs(NamedTuple):
    x_t: jax.Array          # (N, *latent) current latent
    t: jax.Array            # () timestep
    step: jax.Array         # () index in sampling order (0 = noisiest)
    alpha_bar: jax.Array    # () alpha_bar_t
    x0_hat: jax.Array       # (N, *latent) predicted clean latent
    eps: jax.Array          # (N, *latent) (CFG-)guided noise prediction
    labels: jax.Array       # (N,) int class labels
    key: jax.Array          # PRNG key of this step
    aux: dict               # {term name: shared pytree}
    sample_aux: dict        # {term name: pytree with a leading N axis}
    x0_of: Callable[[jax.Array], jax.Array]     # x_t -> x0_hat, differentiable (through the model)
    decode: Callable[[jax.Array], jax.Array]    # latent -> image (the prior's normalisation)


@dataclasses.dataclass(frozen=True)
class Term:
    """A named guidance term: ``grad(inputs) -> ∇_{x_t} E`` and its scale ``s`` (module docstring)."""

    name: str
    grad: Callable[[GuidanceInputs], jax.Array]
    scale: float

    def __post_init__(self):
        if not self.scale >= 0:
            raise ValueError(f"guidance term {self.name!r}: scale must be >= 0, got {self.scale}")


def rms(x: jax.Array) -> jax.Array:
    """Per-sample root mean square over all but the first axis -> (N,)."""
    return jnp.sqrt(jnp.mean(jnp.square(x), axis=tuple(range(1, x.ndim))))


def normalised(g: jax.Array, eps: jax.Array, alpha_bar: jax.Array, scale: float) -> jax.Array:
    """``rho_t g`` with ``rho_t = s RMS(eps) / RMS(g) sqrt(1 - alpha_bar_t)`` per sample (0 where g = 0)."""
    rg = rms(g)
    rho = scale * rms(eps) * jnp.sqrt(1.0 - alpha_bar) / jnp.where(rg > 0, rg, 1.0)
    rho = jnp.where(rg > 0, rho, 0.0)
    return rho.reshape((-1,) + (1,) * (g.ndim - 1)) * g


def guidance_delta(terms: Sequence[Term], inputs: GuidanceInputs) -> jax.Array:
    """``-sum_k rho_t(g_k) g_k``: what the sampler adds to z_{t'} at a step inside the window."""
    delta = jnp.zeros_like(inputs.x_t)
    for k, term in enumerate(terms):
        g = term.grad(inputs._replace(key=jax.random.fold_in(inputs.key, k)))
        delta = delta - normalised(g.astype(inputs.x_t.dtype), inputs.eps, inputs.alpha_bar, term.scale)
    return delta


def grad_through_x0(inputs: GuidanceInputs, energy: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``∇_{x_t} sum_i energy(decode(x̂0(x_t)))_i``: back-propagated through the denoiser and decoder
    (as IGD and ACS do), ``energy`` mapping images (N, H, W, C) to per-sample energies (N,)."""
    return jax.grad(lambda z: jnp.sum(energy(inputs.decode(inputs.x0_of(z)))))(inputs.x_t)


def _log_probs(logits: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


@dataclasses.dataclass(frozen=True)
class _Difficulty:
    classifier_fn: Callable
    name: str

    def __call__(self, inp: GuidanceInputs) -> jax.Array:
        params, target = inp.aux[self.name], inp.sample_aux[self.name]

        def energy(images):
            logp = _log_probs(self.classifier_fn(params, images))
            d = 1.0 - jnp.exp(jnp.take_along_axis(logp, inp.labels[:, None], axis=-1)[:, 0])
            return jnp.square(d - target)

        return grad_through_x0(inp, energy)


def difficulty_term(classifier_fn: Callable[[Any, jax.Array], jax.Array], scale: float,
                    name: str = "difficulty") -> Term:
    """DAG: ``E = (1 - softmax(f(x))_y - d_target)^2``, x = decode(x̂0(x_t)).

    ``classifier_fn(params, images) -> logits`` takes images in the prior's normalisation;
    ``aux[name]`` = params, ``sample_aux[name]`` = the (N,) targets in [0, 1]. Must be hashable
    (a bound method of a frozen network, or a frozen dataclass) so the sampler compiles once.
    """
    return Term(name, _Difficulty(classifier_fn, name), float(scale))


@dataclasses.dataclass(frozen=True)
class _Adversarial:
    classifier_fn: Callable
    name: str

    def __call__(self, inp: GuidanceInputs) -> jax.Array:
        params = inp.aux[self.name]

        def energy(images):
            return -cross_entropy(self.classifier_fn(params, images), inp.labels)  # per sample

        return grad_through_x0(inp, energy)


def adversarial_term(classifier_fn: Callable[[Any, jax.Array], jax.Array], scale: float,
                     name: str = "adversarial") -> Term:
    """ACS: ``E = -CE(D(x), y)`` (decreasing E raises D's loss), x = decode(x̂0(x_t));
    ``aux[name]`` = D's params, ``classifier_fn(params, images) -> logits``."""
    return Term(name, _Adversarial(classifier_fn, name), float(scale))


def cosine_to_memory(x: jax.Array, memory: jax.Array, valid: jax.Array) -> jax.Array:
    """``(N, M)`` cosine similarities of flattened ``x`` (N, ...) to ``memory`` (N, M, ...), -inf where
    ``valid`` (N, M) is False."""
    xf = x.reshape(x.shape[0], -1)
    mf = memory.reshape(memory.shape[0], memory.shape[1], -1)
    num = jnp.einsum("nd,nmd->nm", xf, mf)
    den = jnp.linalg.norm(xf, axis=-1)[:, None] * jnp.linalg.norm(mf, axis=-1) + 1e-12
    return jnp.where(valid, num / den, -jnp.inf)


@dataclasses.dataclass(frozen=True)
class _Deviation:
    name: str

    def __call__(self, inp: GuidanceInputs) -> jax.Array:
        mem = inp.aux[self.name]
        memory, valid = mem["memory"][inp.labels], mem["valid"][inp.labels]  # (N, M, ...), (N, M)
        nearest = jnp.argmax(cosine_to_memory(inp.x_t, memory, valid), axis=-1)
        target = jnp.take_along_axis(memory, nearest.reshape((-1,) + (1,) * (memory.ndim - 1)), axis=1)[:, 0]
        has = jnp.any(valid, axis=-1)

        def energy(z):
            zf, tf = z.reshape(z.shape[0], -1), target.reshape(z.shape[0], -1)
            cos = jnp.sum(zf * tf, -1) / (jnp.linalg.norm(zf, axis=-1) * jnp.linalg.norm(tf, axis=-1) + 1e-12)
            return jnp.sum(jnp.where(has, cos, 0.0))

        return jax.grad(energy)(inp.x_t)


def deviation_term(scale: float, name: str = "deviation") -> Term:
    """Push x_t away from the most cosine-similar earlier latent of its class: ``E = cos(x_t, m*)``.

    ``aux[name] = {"memory": (C, M, *latent), "valid": (C, M) bool}`` (see :func:`latent_memory`);
    no gradient for a class with an empty memory.
    """
    return Term(name, _Deviation(name), float(scale))


def latent_memory(latents: jax.Array, labels: jax.Array, num_classes: int, size: int = DEFAULT_MEMORY) -> dict:
    """The deviation term's memory: per class the last ``size`` of ``latents`` (N, ...) in order,
    zero-padded, with a validity mask (IGD keeps the last ``memory_size`` = 100 per class)."""
    import numpy as np

    latents, labels = np.asarray(latents, np.float32), np.asarray(labels)
    memory = np.zeros((num_classes, size, *latents.shape[1:]), np.float32)
    valid = np.zeros((num_classes, size), bool)
    for c in range(num_classes):
        rows = latents[labels == c][-size:]
        memory[c, :len(rows)], valid[c, :len(rows)] = rows, True
    return {"memory": memory, "valid": valid}
