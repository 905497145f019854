"""LD3M as a distillation method of :mod:`jaxdd.distill` (``jaxdd distill --method ld3m``).

LD3M is a matching method (``match``: ``dm``, ``dc``, ``dsa`` or ``mtt``: its loss, real
batches, networks, SDC, inner training and the driver) whose learnables are the latents ``z``
and class embeddings ``c`` of a frozen generator: the matching method is built with
:func:`latent_optimizer` as the optimiser of its synthetic images. Given ``dL/dimages`` from the
matching loss it back-propagates through the generator (:meth:`LD3MGenerator.vjp`, chunked and
rematerialised), takes an Adam step on ``z`` and ``c`` and regenerates the images, so the state
keeps ``images = G(z, c)`` (up to one float rounding of ``images + (G - images)``) and
``synthetic`` needs no extra work.

Choices the paper leaves open (exposed as settings): Adam with ``b1 = 0.5`` on the latents
(``lr_img``, default 0.01) and the class embeddings (``lr_embedding``, default ``lr_img``); the
fixed noise of ``z_T`` is drawn once per image at initialisation; ``init="noise"`` draws
``z ~ N(0, I)`` instead of encoding real images; classifier-free guidance ``guidance_scale``
(default 1: no unconditional pass).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxdd.distill.base import INITS, ImageOptimizer, Method, build_method, register_method
from jaxdd.generative.ld3m import LD3MGenerator
from jaxdd.generative.prior import check_compatible, load_prior
from jaxdd.models import Network

MATCHES = ("dm", "dc", "dsa", "mtt")


@dataclasses.dataclass(frozen=True)
class LD3MConfig:
    """LD3M settings; ``None`` means "the matching method's default". ``match_settings`` sets any
    other field of the matching method's config (e.g. ``{"outer_loop": 5}`` or ``{"buffer": PATH}``)."""

    ipc: int = 1
    iterations: int | None = None
    prior: str | None = None  # prior folder (`jaxdd prior train`), required
    match: str = "dm"
    num_steps: int = 10  # DDIM steps S of the generator
    guidance_scale: float = 1.0
    chunk_size: int = 16  # images per chunk of the generator's vjp
    init: str = "real"
    lr_img: float = 0.01  # Adam lr of the latents z
    lr_embedding: float | None = None  # Adam lr of the class embeddings c (None: lr_img)
    batch_real: int | None = None
    dsa: bool | None = None
    sdc: float | None = None
    sdc_mode: str | None = None
    class_batch: int | None = None
    match_settings: Any = "{}"  # dict or JSON object of other settings of the matching method

    def __post_init__(self):
        def bad(msg):
            raise ValueError(f"LD3MConfig: {msg}")

        settings = self.match_settings
        try:
            settings = json.loads(settings) if isinstance(settings, str) else settings
            if not isinstance(settings, dict):
                raise TypeError
            settings = json.dumps(settings, sort_keys=True)
        except (TypeError, ValueError):
            bad(f"match_settings must be a dict (or its JSON) of matching-method settings, got {self.match_settings!r}")
        object.__setattr__(self, "match_settings", settings)  # canonical JSON: hashable, survives a JSON round trip
        if self.match not in MATCHES:
            bad(f"match must be one of {MATCHES}, got {self.match!r}")
        if self.num_steps < 2:
            bad(f"num_steps (DDIM steps) must be >= 2, got {self.num_steps}")
        if self.chunk_size < 1:
            bad(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.init not in INITS:
            bad(f"init must be one of {INITS}, got {self.init!r}")
        if not self.lr_img > 0 or (self.lr_embedding is not None and not self.lr_embedding > 0):
            bad(f"lr_img and lr_embedding must be > 0, got {self.lr_img}, {self.lr_embedding}")


# LD3M settings passed on to the matching method when given
_PASSED = ("ipc", "iterations", "init", "batch_real", "dsa", "sdc", "sdc_mode", "class_batch")


@flax.struct.dataclass
class LatentState:
    """LD3M's learnables in place of the image optimiser state: latents z, class embeddings c,
    the fixed noise of z_T, and the Adam state of (z, c)."""

    z: jax.Array
    c: jax.Array
    noise: jax.Array
    opt: Any


def latent_optimizer(generator: LD3MGenerator, params: Any, num_classes: int, lr: float,
                     lr_embedding: float | None = None, init: str = "real") -> ImageOptimizer:
    """The synthetic images' optimiser of LD3M (module docstring). ``init(images)`` encodes the
    images (grouped by class, ``N / num_classes`` per class) and takes c from the embedding table;
    ``start(key, images, state)`` draws the fixed noise (and ``z ~ N(0, I)`` with
    ``init="noise"``) from ``fold_in(key, 1)`` and returns ``G(z, c)``; ``update(dL/dimages,
    state, images)`` returns ``G(z', c') - images``. Adam with ``b1 = 0.5`` on z and c."""
    tx = optax.multi_transform({"z": optax.adam(lr, b1=0.5), "c": optax.adam(lr_embedding or lr, b1=0.5)},
                               {"z": "z", "c": "c"})

    def init_state(images):
        n = images.shape[0]
        if n % num_classes:
            raise ValueError(f"LD3M expects the synthetic images grouped by class ({num_classes} classes), got {n}")
        labels = jnp.repeat(jnp.arange(num_classes), n // num_classes)
        z = jax.jit(generator.encode)(params, images)
        c = generator.prior.embedding_table(params)[labels]
        return LatentState(z=z, c=c, noise=jnp.zeros_like(z), opt=tx.init({"z": z, "c": c}))

    def start(key, images, state: LatentState):
        k_noise, k_z = jax.random.split(jax.random.fold_in(key, 1))
        noise = jax.random.normal(k_noise, state.z.shape, state.z.dtype)
        z = state.z if init == "real" else jax.random.normal(k_z, state.z.shape, state.z.dtype)
        state = state.replace(z=z, noise=noise)  # (Adam's initial state does not depend on z)
        return jax.jit(generator.generate)(params, z, state.c, noise), state

    def update(g_images, state: LatentState, images):
        g_z, g_c = generator.vjp(params, state.z, state.c, state.noise, g_images)
        learn = {"z": state.z, "c": state.c}
        upd, opt = tx.update({"z": g_z, "c": g_c}, state.opt, learn)
        learn = optax.apply_updates(learn, upd)
        new_images = generator.generate(params, learn["z"], learn["c"], state.noise)
        return new_images - images, state.replace(z=learn["z"], c=learn["c"], opt=opt)

    return ImageOptimizer(init_state, update, start)


@dataclasses.dataclass(frozen=True)
class LD3M:
    """LD3M (module docstring): ``match``, the matching method whose images' optimiser is
    :func:`latent_optimizer` over ``generator``; ``config`` the LD3M settings (``None`` fields
    filled with the matching method's values). Init, update and the synthetic set are the
    matching method's; the state's image optimiser state is the :class:`LatentState`."""

    match: Method
    config: LD3MConfig
    generator: LD3MGenerator
    prior_params: Any = dataclasses.field(default=None, compare=False, repr=False)
    name: str = "ld3m"

    @property
    def network(self):
        return self.match.network

    @property
    def eval_preset(self) -> str:
        return self.match.eval_preset

    @property
    def extendable(self) -> bool:
        return self.match.extendable

    def for_dataset(self, dataset) -> "LD3M":
        """LD3M generating in ``dataset``'s normalisation; ``ValueError`` unless the prior fits it."""
        check_compatible(self.generator.prior, dataset, where=f"prior {self.config.prior}")
        generator = dataclasses.replace(self.generator, mean=tuple(map(float, dataset.mean)),
                                        std=tuple(map(float, dataset.std)))
        match = dataclasses.replace(self.match.for_dataset(dataset),
                                    image_tx=_latent_tx(generator, self.prior_params, self.match.network, self.config))
        return dataclasses.replace(self, match=match, generator=generator)

    def init(self, key: jax.Array, real) -> Any:
        """The matching method's state with real-initialised latents (or z ~ N(0, I) with
        ``init="noise"``), a fixed noise draw per image and ``images = G(z, c)``."""
        return self.match.init(key, real)

    def update(self, state: Any, real) -> tuple[Any, dict[str, jax.Array]]:
        return self.match.update(state, real)

    def synthetic(self, state: Any) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        return self.match.synthetic(state)


def _latent_tx(generator: LD3MGenerator, params: Any, network: Network, config: LD3MConfig) -> ImageOptimizer:
    return latent_optimizer(generator, params, network.num_classes, config.lr_img, config.lr_embedding, config.init)


def build_ld3m(network: Network, config: LD3MConfig, mesh: Mesh | None = None, prior=None,
               prior_params: Any = None) -> LD3M:
    """LD3M over ``config.match`` with the prior in ``config.prior`` (or the given ``prior`` and
    ``prior_params``, e.g. a converted pretrained model)."""
    if prior is None:
        if config.prior is None:
            raise ValueError("LD3M needs a diffusion prior: pass --prior FOLDER (made by `jaxdd prior train "
                             "--dataset NAME --out FOLDER`)")
        prior, prior_params, _ = load_prior(config.prior)
    if prior.num_classes != network.num_classes or tuple(prior.image_shape) != tuple(network.input_shape):
        raise ValueError(f"prior {config.prior} generates {prior.num_classes} classes of {tuple(prior.image_shape)} "
                         f"images but the network is for {network.num_classes} classes of {network.input_shape}; "
                         "use a prior trained on this dataset (`jaxdd prior train --dataset NAME`)")
    passed = {f: getattr(config, f) for f in _PASSED if getattr(config, f) is not None}
    generator = LD3MGenerator(prior, num_steps=config.num_steps, guidance_scale=config.guidance_scale,
                              chunk_size=config.chunk_size)
    match = build_method(config.match, network, mesh=mesh, **passed, **json.loads(config.match_settings))
    match = dataclasses.replace(match, image_tx=_latent_tx(generator, prior_params, network, config))
    known = {f.name for f in dataclasses.fields(match.config)}
    resolved = dataclasses.replace(config, **{f: getattr(match.config, f) for f in _PASSED
                                              if getattr(config, f) is None and f in known})
    return LD3M(match=match, config=resolved, generator=generator, prior_params=prior_params)


@register_method("ld3m", LD3MConfig, "latent distillation with a diffusion prior, Moser et al. 2024 "
                 "(needs --prior FOLDER; --match dm|dc|dsa|mtt)")
def _build_ld3m(network: Network, config: LD3MConfig, mesh: Mesh | None = None) -> LD3M:
    return build_ld3m(network, config, mesh)
