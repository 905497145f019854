"""The diffusion-prior interface every generative method uses, and the small prior trained here.

:class:`DiffusionPrior` is what DDIM sampling, guidance and LD3M need from a class-conditional
(latent) diffusion model; the weights are a separate pytree ``params`` so that every function
stays pure and jittable. :class:`SmallPrior` implements it with :class:`~jaxdd.generative.unet.UNet`
and (for latent diffusion) :class:`~jaxdd.generative.autoencoder.Autoencoder`; a large pretrained
model converted to Flax implements the same Protocol and registers a loader with
:func:`register_prior_loader` (see the package docstring).

On disk a prior is a folder with ``prior.json`` (``kind``, the model's ``config``, ``metadata``:
dataset, training config and history) and ``params.npz`` (the flattened weight pytree).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.generative.autoencoder import Autoencoder
from jaxdd.generative.schedule import SCHEDULES, NoiseSchedule, make_schedule
from jaxdd.generative.unet import UNet
from jaxdd.utils.io import read_json, save_npz, write_json

PRIOR_FORMAT_VERSION = 1
LATENTS = ("vae", "none")


@runtime_checkable
class DiffusionPrior(Protocol):
    """A frozen, hashable description of a class-conditional epsilon-prediction diffusion model.

    Shapes: ``image_shape`` (H, W, C) of decoded images, which are normalised per channel as
    ``(pixels - pixel_mean) / pixel_std`` with pixels in [0, 1]; ``latent_shape`` (h, w, c) of the
    diffusion variable z (equal to ``image_shape`` for pixel-space diffusion); class embeddings
    are vectors of ``embedding_dim``.
    """

    num_classes: int
    image_shape: tuple[int, int, int]
    latent_shape: tuple[int, int, int]
    embedding_dim: int
    pixel_mean: tuple[float, ...]
    pixel_std: tuple[float, ...]

    @property
    def schedule(self) -> NoiseSchedule:
        """``alpha_bar`` over the T training timesteps."""

    def eps(self, params: Any, z_t: jax.Array, t: jax.Array, c: jax.Array) -> jax.Array:
        """Predicted noise for latents z_t (N, *latent_shape), int timesteps t (N,), embeddings c (N, D)."""

    def encode(self, params: Any, x: jax.Array) -> jax.Array:
        """Images (N, *image_shape) -> latents (N, *latent_shape), deterministic, already scaled."""

    def decode(self, params: Any, z: jax.Array) -> jax.Array:
        """Latents -> images, differentiable."""

    def embedding_table(self, params: Any) -> jax.Array:
        """(num_classes + 1, embedding_dim): one row per class, the last is the null
        ("unconditional") embedding used by classifier-free guidance."""


def class_embedding(prior: DiffusionPrior, params: Any, labels: jax.Array) -> jax.Array:
    """The embedding rows of ``labels`` (N,) -> (N, D)."""
    return prior.embedding_table(params)[jnp.asarray(labels)]


def null_embedding(prior: DiffusionPrior, params: Any, n: int) -> jax.Array:
    """``n`` copies of the unconditional embedding (the table's last row)."""
    return jnp.broadcast_to(prior.embedding_table(params)[-1], (n, prior.embedding_dim))


@dataclasses.dataclass(frozen=True)
class SmallPrior:
    """UNet denoiser (pixel or latent space) + optional KL autoencoder + a learned embedding
    table (num_classes + 1 rows, the last one the null class). ``latent_scale`` multiplies the
    encoder mean so that latents have unit standard deviation (LDM's scale factor)."""

    num_classes: int
    image_shape: tuple[int, int, int]
    pixel_mean: tuple[float, ...] = (0.0,)
    pixel_std: tuple[float, ...] = (1.0,)
    embedding_dim: int = 64
    unet_width: int = 32
    unet_mults: tuple[int, ...] = (1, 2)
    unet_depth: int = 1
    attention: bool = True
    latent: str = "vae"
    latent_channels: int = 4
    ae_width: int = 16
    ae_downsamples: int = 2
    ae_blocks: int = 0
    noise_schedule: str = "linear"
    num_timesteps: int = 1000
    latent_scale: float = 1.0

    def __post_init__(self):
        for name in ("image_shape", "pixel_mean", "pixel_std", "unet_mults"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.latent not in LATENTS:
            raise ValueError(f"unknown latent space {self.latent!r}; choose one of {LATENTS}")
        if self.noise_schedule not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {self.noise_schedule!r}; choose one of {SCHEDULES}")
        if len(self.image_shape) != 3 or self.num_classes < 1:
            raise ValueError(f"need image_shape (H, W, C) and num_classes >= 1, got {self.image_shape}, "
                             f"{self.num_classes}")
        if len(self.pixel_mean) != self.image_shape[2] or len(self.pixel_std) != self.image_shape[2]:
            raise ValueError(f"pixel_mean/pixel_std need one value per channel ({self.image_shape[2]})")

    # -- modules ---------------------------------------------------------------------------
    @property
    def autoencoder(self) -> Autoencoder | None:
        if self.latent == "none":
            return None
        return Autoencoder(out_channels=self.image_shape[2], image_size=self.image_shape[:2],
                           latent_channels=self.latent_channels, width=self.ae_width,
                           downsamples=self.ae_downsamples, blocks=self.ae_blocks)

    @property
    def unet(self) -> UNet:
        return UNet(out_channels=self.latent_shape[2], width=self.unet_width,
                    channel_mults=self.unet_mults, depth=self.unet_depth, attention=self.attention)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        ae = self.autoencoder
        return self.image_shape if ae is None else ae.latent_shape()

    @property
    def schedule(self) -> NoiseSchedule:
        return make_schedule(self.noise_schedule, self.num_timesteps)

    # -- the DiffusionPrior interface ------------------------------------------------------
    def init(self, key: jax.Array) -> dict:
        """Fresh parameters ``{"unet", "embedding", ["autoencoder"]}`` (jitted: one compilation)."""
        return _jit_init(self, key)

    def _init(self, key: jax.Array) -> dict:
        k_unet, k_ae, k_emb = jax.random.split(key, 3)
        z = jnp.zeros((1, *self.latent_shape), jnp.float32)
        c = jnp.zeros((1, self.embedding_dim), jnp.float32)
        params = {
            "unet": self.unet.init(k_unet, z, jnp.zeros((1,), jnp.int32), c)["params"],
            "embedding": jax.random.normal(k_emb, (self.num_classes + 1, self.embedding_dim), jnp.float32),
        }
        if self.autoencoder is not None:
            x = jnp.zeros((1, *self.image_shape), jnp.float32)
            params["autoencoder"] = self.autoencoder.init(k_ae, x)["params"]
        return params

    def eps(self, params, z_t, t, c):
        return self.unet.apply({"params": params["unet"]}, z_t, t, c)

    def encode(self, params, x):
        ae = self.autoencoder
        if ae is None:
            return x
        return ae.apply({"params": params["autoencoder"]}, x, method=Autoencoder.encode)[0] * self.latent_scale

    def decode(self, params, z):
        ae = self.autoencoder
        if ae is None:
            return z
        return ae.apply({"params": params["autoencoder"]}, z / self.latent_scale, method=Autoencoder.decode)

    def embedding_table(self, params):
        return params["embedding"]

    def config(self) -> dict:
        return dataclasses.asdict(self)


_jit_init = jax.jit(SmallPrior._init, static_argnums=0)


def num_params(tree: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


# -- compatibility with a dataset -------------------------------------------------------------
def check_compatible(prior: DiffusionPrior, dataset, where: str = "prior") -> None:
    """Raise ``ValueError`` unless ``prior`` generates images of ``dataset``'s classes and shape."""
    problems = []
    if prior.num_classes != dataset.num_classes:
        problems.append(f"{prior.num_classes} classes vs {dataset.num_classes}")
    if tuple(prior.image_shape) != tuple(dataset.image_shape):
        problems.append(f"images {tuple(prior.image_shape)} vs {tuple(dataset.image_shape)}")
    if problems:
        raise ValueError(f"{where} does not fit dataset {dataset.name!r}: {'; '.join(problems)}. Train a "
                         f"prior on it (`jaxdd prior train --dataset {dataset.name}`) or pick the matching dataset")
    if dataset.zca is not None:
        raise ValueError(f"{where} generates un-whitened images but dataset {dataset.name!r} is ZCA-whitened; "
                         "drop --zca")


def to_dataset_space(prior: DiffusionPrior, images: jax.Array, mean: Any, std: Any) -> jax.Array:
    """Re-normalise decoded images from the prior's ``(pixels - pixel_mean) / pixel_std`` to a
    dataset's ``(pixels - mean) / std`` (an affine map, identity when they agree)."""
    pm, ps = np.asarray(prior.pixel_mean, np.float32), np.asarray(prior.pixel_std, np.float32)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if np.allclose(pm, mean) and np.allclose(ps, std):
        return images
    return images * jnp.asarray(ps / std) + jnp.asarray((pm - mean) / std)


def from_dataset_space(prior: DiffusionPrior, images: jax.Array, mean: Any, std: Any) -> jax.Array:
    """Inverse of :func:`to_dataset_space` (dataset-normalised images -> the prior's space)."""
    pm, ps = np.asarray(prior.pixel_mean, np.float32), np.asarray(prior.pixel_std, np.float32)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if np.allclose(pm, mean) and np.allclose(ps, std):
        return images
    return (images - jnp.asarray((pm - mean) / std)) / jnp.asarray(ps / std)


# -- files ----------------------------------------------------------------------------------
def params_to_arrays(params: Any) -> dict[str, np.ndarray]:
    """``{"a/b/c": array}`` for every leaf of a nested-dict pytree (the arrays of ``params.npz``)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v) for path, v in flat}


def arrays_to_params(flat: dict[str, np.ndarray], template: Any, where: str = "params") -> Any:
    """Fill ``template`` (a pytree of arrays or ShapeDtypeStructs) from :func:`params_to_arrays` output."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in paths:
        key = "/".join(str(getattr(k, "key", k)) for k in path)
        if key not in flat:
            raise ValueError(f"{where}: weight {key!r} is missing; the file was written by a different "
                             "model configuration")
        if tuple(flat[key].shape) != tuple(leaf.shape):
            raise ValueError(f"{where}: weight {key!r} has shape {flat[key].shape}, the model expects "
                             f"{tuple(leaf.shape)}")
        leaves.append(jnp.asarray(flat[key], leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def save_prior(folder: str | os.PathLike, prior: SmallPrior, params: Any, metadata: dict | None = None) -> Path:
    """Write ``params.npz`` then ``prior.json`` (atomically; the JSON last, so a folder with a
    ``prior.json`` always has matching weights)."""
    folder = Path(folder)
    save_npz(folder / "params.npz", **params_to_arrays(params))
    write_json(folder / "prior.json", {"format_version": PRIOR_FORMAT_VERSION, "kind": "small",
                                       "config": prior.config(), "num_params": num_params(params),
                                       "metadata": metadata or {}})
    return folder


def _load_small(folder: Path, meta: dict) -> tuple[SmallPrior, Any]:
    prior = SmallPrior(**meta["config"])
    template = jax.eval_shape(prior._init, jax.random.key(0))
    with np.load(folder / "params.npz") as z:
        params = arrays_to_params(dict(z), template, where=str(folder / "params.npz"))
    return prior, params


_LOADERS: dict[str, Callable[[Path, dict], tuple[DiffusionPrior, Any]]] = {"small": _load_small}


def register_prior_loader(kind: str, loader: Callable[[Path, dict], tuple[DiffusionPrior, Any]]) -> None:
    """Let ``load_prior`` read folders whose ``prior.json`` says ``"kind": kind`` (a converted
    pretrained model): ``loader(folder, prior_json) -> (prior, params)``."""
    _LOADERS[kind] = loader


def load_prior(folder: str | os.PathLike) -> tuple[DiffusionPrior, Any, dict]:
    """``(prior, params, metadata)`` from a folder written by :func:`save_prior` / ``jaxdd prior train``."""
    folder = Path(folder)
    path = folder / "prior.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a prior: no prior.json there. Train one with "
                                f"`jaxdd prior train --dataset NAME --out {folder}`")
    meta = read_json(path)
    if meta.get("format_version") != PRIOR_FORMAT_VERSION:
        raise ValueError(f"{path}: prior format version {meta.get('format_version')} is not supported "
                         f"(this jaxdd reads version {PRIOR_FORMAT_VERSION})")
    kind = meta.get("kind", "small")
    if kind not in _LOADERS:
        raise ValueError(f"{path}: no loader for prior kind {kind!r} (known: {sorted(_LOADERS)}); import the "
                         "module that calls jaxdd.generative.register_prior_loader for it")
    prior, params = _LOADERS[kind](folder, meta)
    if not isinstance(prior, DiffusionPrior):
        raise ValueError(f"{path}: the loader for {kind!r} returned {type(prior).__name__}, which does not "
                         "implement jaxdd.generative.DiffusionPrior")
    return prior, params, meta.get("metadata", {})
