"""Preprocessing: per-channel normalisation, resizing raw images, and ZCA whitening.

Normalisation is ``(x - mean) / std`` per channel with statistics measured on the training split
(pixels in [0, 1]). ZCA whitening follows the regularised form used by KIP and MTT
(Cazenavette et al., 2022, "Dataset Distillation by Matching Training Trajectories"; their code
uses kornia's ``ZCAWhitening(eps=0.1)``): on the normalised, flattened training images X (N x D)
with per-feature mean mu,

    C = (X - mu)^T (X - mu) / (N - 1) = U diag(lambda) U^T,
    W = U diag(1 / sqrt(lambda + reg)) U^T,    W^-1 = U diag(sqrt(lambda + reg)) U^T,
    zca(x) = (x - mu) W,                       zca^-1(z) = z W^-1 + mu,

with ``reg = 0.1``. The whitened covariance is W C W = U diag(lambda / (lambda + reg)) U^T.
"""

from __future__ import annotations

from typing import Iterable

import flax.struct
import jax.numpy as jnp
import numpy as np
from PIL import Image

ZCA_REGULARIZATION = 0.1


# ---------------------------------------------------------------------------------------------
# Per-channel normalisation
# ---------------------------------------------------------------------------------------------

def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of NHWC images (std < 1e-6, a constant channel, becomes 1)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"channel_stats expects NHWC images (4-D), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError("channel_stats needs at least one image to measure mean and std")
    mean = x.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
    std = x.std(axis=(0, 1, 2)).astype(np.float32)
    return mean, np.where(std < 1e-6, 1.0, std).astype(np.float32)


def normalize(x, mean, std):
    """``(x - mean) / std`` per channel (works on numpy and jax arrays)."""
    return (x - mean) / std


def denormalize(x, mean, std):
    """``x * std + mean`` per channel: the inverse of :func:`normalize` (no clipping)."""
    return x * std + mean


# ---------------------------------------------------------------------------------------------
# Resizing raw images
# ---------------------------------------------------------------------------------------------

def resize_pil(img: Image.Image, size: int, crop: bool = False) -> Image.Image:
    """Resize a PIL image to ``size x size`` (bilinear, antialiased).

    With ``crop=True`` the shorter side is resized to ``size`` and the centre ``size x size``
    square is cut out (torchvision ``Resize(size)`` + ``CenterCrop(size)``, as MTT does for the
    ImageNet subsets); otherwise the image is stretched to a square.
    """
    if size < 1:
        raise ValueError(f"image_size must be a positive integer, got {size}")
    if not crop:
        return img.resize((size, size), Image.BILINEAR)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def resize_images(x: np.ndarray, size: int, crop: bool = False, progress: bool = False) -> np.ndarray:
    """Resize uint8 NHW / NHWC images to ``size x size`` with :func:`resize_pil`."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"resize_images expects raw uint8 images, got {x.dtype}")
    if x.ndim not in (3, 4):
        raise ValueError(f"resize_images expects NHW or NHWC images, got shape {x.shape}")
    if x.shape[1:3] == (size, size):
        return x
    grey = x.ndim == 3 or x.shape[-1] == 1
    it: Iterable = x
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(x, desc=f"resize to {size}", unit="img", leave=False)
    out = []
    for img in it:
        arr = img.reshape(img.shape[:2]) if grey else img
        out.append(np.asarray(resize_pil(Image.fromarray(arr), size, crop)))
    res = np.stack(out) if out else np.zeros((0, size, size) + x.shape[3:], np.uint8)
    return res.reshape((len(x), size, size) + x.shape[3:])


# ---------------------------------------------------------------------------------------------
# ZCA whitening
# ---------------------------------------------------------------------------------------------

@flax.struct.dataclass
class ZCA:
    """A fitted ZCA transform (a frozen pytree, so it can be passed into jitted functions).

    ``apply`` / ``inverse`` accept any array whose trailing dimensions are ``shape`` (one image
    or a batch) and return the same shape.
    """

    mean: jnp.ndarray  # (D,) per-feature mean of the fitted (normalised) images
    matrix: jnp.ndarray  # (D, D) W = U diag(1/sqrt(lambda+reg)) U^T
    inverse_matrix: jnp.ndarray  # (D, D) W^-1 = U diag(sqrt(lambda+reg)) U^T
    shape: tuple[int, ...] = flax.struct.field(pytree_node=False, default=())
    reg: float = flax.struct.field(pytree_node=False, default=ZCA_REGULARIZATION)

    def _flat(self, x):
        x = jnp.asarray(x, jnp.float32)
        k = len(self.shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k:]) != tuple(self.shape):
            raise ValueError(f"ZCA was fitted on images of shape {self.shape}; got an array of shape "
                             f"{x.shape}. Apply it to images of the dataset it was fitted on.")
        return x.reshape((-1, int(np.prod(self.shape)))), x.shape

    def apply(self, x):
        """Whiten: ``(x - mean) @ W``."""
        flat, shape = self._flat(x)
        return ((flat - self.mean) @ self.matrix).reshape(shape)

    def inverse(self, z):
        """Un-whiten: ``z @ W^-1 + mean`` (for visualisation)."""
        flat, shape = self._flat(z)
        return (flat @ self.inverse_matrix + self.mean).reshape(shape)


def fit_zca(x: np.ndarray, reg: float = ZCA_REGULARIZATION) -> ZCA:
    """Fit :class:`ZCA` on normalised NHWC training images (see the module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"fit_zca expects NHWC images (4-D), got shape {x.shape}")
    if len(x) < 2:
        raise ValueError(f"fit_zca needs at least 2 images to estimate a covariance, got {len(x)}")
    if not reg > 0:
        raise ValueError(f"ZCA regularisation must be > 0 (DSA/MTT use 0.1), got {reg}")
    flat = x.reshape(len(x), -1)
    mean = flat.mean(axis=0, dtype=np.float64)
    centred = flat - mean.astype(np.float32)
    cov = (centred.T @ centred).astype(np.float64) / (len(x) - 1)
    eigvals, eigvecs = np.linalg.eigh((cov + cov.T) / 2)
    eigvals = np.clip(eigvals, 0.0, None)  # tiny negative values from round-off
    w = (eigvecs * (1.0 / np.sqrt(eigvals + reg))) @ eigvecs.T
    w_inv = (eigvecs * np.sqrt(eigvals + reg)) @ eigvecs.T
    return ZCA(mean=jnp.asarray(mean, jnp.float32), matrix=jnp.asarray(w, jnp.float32),
               inverse_matrix=jnp.asarray(w_inv, jnp.float32), shape=tuple(int(s) for s in x.shape[1:]),
               reg=float(reg))


def apply_in_batches(fn, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """``np.concatenate([fn(chunk) ...])`` over leading-axis chunks (bounds device memory)."""
    x = np.asarray(x)
    if len(x) == 0:
        return np.asarray(fn(x))
    return np.concatenate([np.asarray(fn(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])
