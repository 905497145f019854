"""Differentiable Siamese Augmentation (DSA).

Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021, after the
reference code (``DiffAugment`` / ``ParamDiffAug`` in VICO-UoE/DatasetCondensation ``utils.py``,
itself derived from DiffAugment, Zhao et al. 2020). Each call draws ONE op of the strategy string
``color_crop_cutout_flip_scale_rotate`` uniformly at random and applies it (``color`` is brightness,
saturation and contrast in sequence). With ``siamese=True`` a single draw (op and its parameters)
serves the whole batch and depends only on the key, so ``dsa(k, x_real)`` and ``dsa(k, x_syn)``
apply the identical transform, which is how DC/DSA/DM augment the real and the synthetic batch.
With ``siamese=False`` every image gets its own parameters (still one op per call), the mode used
when training evaluation networks.

Ops on NHWC images (``u ~ U(0, 1)``; defaults of :class:`DSAParams`):

- ``flip``: mirror left-right if ``u < 0.5``.
- ``scale``: affine ``[[sx, 0, 0], [0, sy, 0]]``, ``sx, sy = u (r - 1/r) + 1/r``, ``r = 1.2``.
- ``rotate``: affine ``[[cos a, -sin a, 0], [sin a, cos a, 0]]``, ``a = (2u - 1) 15 deg``.
- ``crop``: integer translation ``out[i, j] = x[i + dy, j + dx]`` with zero fill, ``dy, dx`` uniform
  integers in ``[-s, s]``, ``s = int(0.125 size + 0.5)``.
- ``cutout``: zero a ``c x c`` square, ``c = int(0.5 size + 0.5)``, centred at ``o``, a uniform integer
  in ``[0, size - c mod 2]`` (top-left ``o - c // 2``), clipped to the image.
- ``color``: ``x + (u - 0.5)``; then ``(x - m_pix) 2u + m_pix`` with ``m_pix`` the per-pixel channel mean;
  then ``(x - m_img)(u + 0.5) + m_img`` with ``m_img`` the image mean.

Scale and rotate use :func:`affine_grid_sample`: the affine maps each output pixel's normalised
coordinate to an input coordinate (PyTorch ``affine_grid`` convention) and the input is sampled
bilinearly with zero padding (``grid_sample(padding_mode="zeros")``), with ``align_corners=True``
as in the reference: normalised -1 and +1 are the centres of the first and last pixels.

Random draws: the reference (``set_seed_DiffAug``) re-seeds its generator before every draw in
siamese mode with consecutive seeds (``seed``, ``seed + 1``, ...: the op choice, then each parameter),
so ``sx`` and ``sy``, ``dx`` and ``dy``, the two cutout offsets and the brightness, saturation and
contrast factors are distinct draws, and every image of the batch takes the first image's
parameters; the per-sample mode draws without re-seeding. Here the op choice comes from one subkey
and the parameters from independent uniforms of another (integers as ``low + floor(u (high -
low))``): the same distributions, one draw for the batch (siamese) or one per image. The reference
and this code therefore give the same augmentation distribution but not the same random numbers.
Images are augmented in whatever space they are given (normalised, as in the reference).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

DSA_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
NO_FLIP_STRATEGY = "color_crop_cutout_scale_rotate"
_DIGIT_DATASETS = ("mnist", "svhn", "digits", "usps")  # digits and characters: mirroring changes the label


@dataclasses.dataclass(frozen=True)
class DSAParams:
    """Magnitudes of the DSA ops (reference ``ParamDiffAug``); frozen, so usable as a static jit argument."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0  # degrees
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"DSAParams.{f.name} must be a finite non-negative number, got {v!r}")
        if self.prob_flip > 1:
            raise ValueError(f"DSAParams.prob_flip is a probability in [0, 1], got {self.prob_flip}")
        if self.ratio_scale < 1:
            raise ValueError(f"DSAParams.ratio_scale must be >= 1 (scales are drawn from [1/r, r]), "
                             f"got {self.ratio_scale}")
        if self.ratio_crop_pad >= 1 or self.ratio_cutout > 1:
            raise ValueError("DSAParams.ratio_crop_pad must be < 1 and ratio_cutout <= 1 (fractions of the "
                             f"image size), got {self.ratio_crop_pad} and {self.ratio_cutout}")


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split a strategy string like ``"color_crop_cutout"`` into its ops; ``"none"`` gives ``()``."""
    if not isinstance(strategy, str):
        raise ValueError(f"DSA strategy must be a string such as {DEFAULT_STRATEGY!r}, got {strategy!r}")
    if strategy.lower() == "none":
        return ()
    ops = tuple(strategy.split("_"))
    bad = [op for op in ops if op not in DSA_OPS]
    if bad or not strategy:
        raise ValueError(f"unknown DSA op(s) {bad or [strategy]} in strategy {strategy!r}; a strategy joins ops "
                         f"from {', '.join(DSA_OPS)} with '_' (e.g. {DEFAULT_STRATEGY!r}) or is 'none'")
    if len(set(ops)) != len(ops):
        raise ValueError(f"DSA strategy {strategy!r} lists an op twice; list each op once")
    return ops


def is_digit_dataset(name: str) -> bool:
    """Whether a dataset name denotes digits or characters (MNIST and its variants but not
    Fashion-MNIST, SVHN, scikit-learn digits, USPS), for which flipping is not label-preserving."""
    n = str(name).lower()
    return "fashion" not in n and any(d in n for d in _DIGIT_DATASETS)


def default_strategy(dataset) -> str:
    """The reference DSA strategy for a dataset: :data:`NO_FLIP_STRATEGY` for digit datasets,
    :data:`DEFAULT_STRATEGY` (with ``flip``) otherwise.

    The reference README (VICO-UoE/DatasetCondensation) prescribes
    ``color_crop_cutout_flip_scale_rotate`` for FashionMNIST and CIFAR-10/100 and
    ``color_crop_cutout_scale_rotate`` for "the digit datasets (MNIST and SVHN), as flip
    augmentation is not good for digit datasets". ``dataset`` is a name, or a record (object or
    dict) with ``name`` and ``source`` (no flip if either is a digit dataset, :func:`is_digit_dataset`). A channel
    count (int) says nothing about the content and gives :data:`DEFAULT_STRATEGY`; pass the name
    to get the digit rule.
    """
    if isinstance(dataset, str):
        return NO_FLIP_STRATEGY if is_digit_dataset(dataset) else DEFAULT_STRATEGY
    if isinstance(dataset, int) and not isinstance(dataset, bool) and dataset >= 1:
        return DEFAULT_STRATEGY
    if isinstance(dataset, dict) and "name" in dataset:  # e.g. a record stored in an expert buffer's index
        names = [dataset["name"], dataset.get("source") or dataset["name"]]
        return NO_FLIP_STRATEGY if any(is_digit_dataset(n) for n in names) else DEFAULT_STRATEGY
    if hasattr(dataset, "name"):
        names = [dataset.name, getattr(dataset, "source", None) or dataset.name]
        return NO_FLIP_STRATEGY if any(is_digit_dataset(n) for n in names) else DEFAULT_STRATEGY
    raise ValueError(f"default_strategy takes a dataset name or a positive channel count (or a Dataset record), "
                     f"got {dataset!r}")


# ---------------------------------------------------------------------------------------------
# Deterministic transforms with explicit parameters: scalars (one value for the batch) or one
# value per image (shape (N,)).
# ---------------------------------------------------------------------------------------------

def _per_image(v, n: int, dtype) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(v, dtype), (n,))


def _gather(x: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """``x[n, rows[n, i, j], cols[n, i, j]]`` for every image n (indices already in range)."""
    # vmapped, the batch becomes a gather batching dimension: a batch split over devices stays split
    return jax.vmap(lambda xi, r, c: xi[r, c])(x, rows, cols)


def flip(x: jax.Array, do: jax.Array | bool) -> jax.Array:
    """Mirror images left-right where ``do`` is true."""
    do = _per_image(do, x.shape[0], bool)
    return jnp.where(do[:, None, None, None], x[:, :, ::-1, :], x)


def translate(x: jax.Array, dy: jax.Array | int, dx: jax.Array | int) -> jax.Array:
    """``out[n, i, j] = x[n, i + dy_n, j + dx_n]``, zero where that falls outside the image."""
    n, h, w, _ = x.shape
    rows = jnp.arange(h)[None, :] + _per_image(dy, n, jnp.int32)[:, None]  # (N, H)
    cols = jnp.arange(w)[None, :] + _per_image(dx, n, jnp.int32)[:, None]  # (N, W)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    out = _gather(x, jnp.clip(rows, 0, h - 1)[:, :, None], jnp.clip(cols, 0, w - 1)[:, None, :])
    return jnp.where(inside[..., None], out, jnp.zeros((), x.dtype))


def cutout(x: jax.Array, top: jax.Array | int, left: jax.Array | int, size: tuple[int, int]) -> jax.Array:
    """Zero the rectangle of ``size = (height, width)`` with top-left corner ``(top, left)`` (clipped)."""
    n, h, w, _ = x.shape
    top, left = _per_image(top, n, jnp.int32), _per_image(left, n, jnp.int32)
    r, c = jnp.arange(h)[None, :] - top[:, None], jnp.arange(w)[None, :] - left[:, None]
    hole = ((r >= 0) & (r < size[0]))[:, :, None] & ((c >= 0) & (c < size[1]))[:, None, :]
    return jnp.where(hole[..., None], jnp.zeros((), x.dtype), x)


def brightness(x: jax.Array, b) -> jax.Array:
    """``x + b``."""
    return x + _per_image(b, x.shape[0], x.dtype)[:, None, None, None]


def saturation(x: jax.Array, s) -> jax.Array:
    """``(x - m) s + m`` with ``m`` the mean over channels of each pixel."""
    m = jnp.mean(x, axis=-1, keepdims=True)
    return (x - m) * _per_image(s, x.shape[0], x.dtype)[:, None, None, None] + m


def contrast(x: jax.Array, c) -> jax.Array:
    """``(x - m) c + m`` with ``m`` the mean of each image over H, W and channels."""
    m = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - m) * _per_image(c, x.shape[0], x.dtype)[:, None, None, None] + m


def scale_theta(sx, sy) -> jax.Array:
    """Affine matrices ``[[sx, 0, 0], [0, sy, 0]]`` (shape ``(..., 2, 3)``)."""
    sx, sy = jnp.broadcast_arrays(jnp.asarray(sx), jnp.asarray(sy))
    zero = jnp.zeros_like(sx)
    return jnp.stack([jnp.stack([sx, zero, zero], -1), jnp.stack([zero, sy, zero], -1)], -2)


def rotation_theta(angle) -> jax.Array:
    """Affine matrices ``[[cos a, -sin a, 0], [sin a, cos a, 0]]`` for angles in radians."""
    a = jnp.asarray(angle)
    cos, sin, zero = jnp.cos(a), jnp.sin(a), jnp.zeros_like(a)
    return jnp.stack([jnp.stack([cos, -sin, zero], -1), jnp.stack([sin, cos, zero], -1)], -2)


@functools.partial(jax.jit, static_argnames=("align_corners",))
def affine_grid_sample(x: jax.Array, theta: jax.Array, align_corners: bool = True) -> jax.Array:
    """Resample NHWC images through affine maps, bilinearly, with zero padding.

    Equivalent to PyTorch ``grid_sample(x, affine_grid(theta, x.shape, align_corners),
    mode="bilinear", padding_mode="zeros", align_corners)``: output pixel ``(i, j)`` at normalised
    ``(u, v)`` in [-1, 1] reads the input at ``theta @ (u, v, 1)`` (u along the width). With
    ``align_corners=True`` (the DSA reference) -1/+1 are the centres of the corner pixels,
    ``pixel = (g + 1)(size - 1) / 2``; otherwise the outer edges, ``pixel = ((g + 1) size - 1) / 2``.
    ``theta`` has shape ``(2, 3)`` (one map for the batch) or ``(N, 2, 3)``. Differentiable in ``x``.
    """
    n, h, w, _ = x.shape
    ctype = jnp.result_type(x.dtype, jnp.float32)  # coordinates in >= float32 even for bf16 images
    theta = jnp.broadcast_to(jnp.asarray(theta, ctype), (n, 2, 3))

    def base(size):
        if align_corners:
            return jnp.linspace(-1.0, 1.0, size, dtype=ctype) if size > 1 else jnp.zeros(1, ctype)
        return (2 * jnp.arange(size, dtype=ctype) + 1) / size - 1

    def unnormalise(g, size):
        return (g + 1) * (size - 1) / 2 if align_corners else ((g + 1) * size - 1) / 2

    u, v = jnp.meshgrid(base(w), base(h))  # (H, W) each: u along the width, v along the height
    grid = jnp.einsum("hwk,nik->nhwi", jnp.stack([u, v, jnp.ones_like(u)], -1), theta)
    px, py = unnormalise(grid[..., 0], w), unnormalise(grid[..., 1], h)
    x0, y0 = jnp.floor(px), jnp.floor(py)
    fx, fy = px - x0, py - y0
    out = jnp.zeros(x.shape, ctype)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yi, xi = y0 + dy, x0 + dx
            inside = (yi >= 0) & (yi <= h - 1) & (xi >= 0) & (xi <= w - 1)
            tap = _gather(x, jnp.clip(yi, 0, h - 1).astype(jnp.int32), jnp.clip(xi, 0, w - 1).astype(jnp.int32))
            out = out + tap * jnp.where(inside, wy * wx, 0)[..., None]
    return out.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Random ops: (u, x) -> x, where u holds _NUM_UNIFORMS uniform [0, 1) draws of shape () (siamese) or
# (N,) (per image). Every op reads its parameters from u, so a call generates random bits once,
# outside the switch (one threefry instance to compile instead of one per draw).
# ---------------------------------------------------------------------------------------------

_NUM_UNIFORMS = 3


def _randint(u, low: int, high: int) -> jax.Array:
    """Integers uniform in ``[low, high)`` from uniforms ``u`` in [0, 1)."""
    return low + jnp.minimum(jnp.floor(u * (high - low)), high - low - 1).astype(jnp.int32)


def _op_color(u, x, p: DSAParams):
    x = brightness(x, (u[0] - 0.5) * p.brightness)
    x = saturation(x, u[1] * p.saturation)
    return contrast(x, u[2] + p.contrast)


def _op_crop(u, x, p: DSAParams):
    sy, sx = int(x.shape[1] * p.ratio_crop_pad + 0.5), int(x.shape[2] * p.ratio_crop_pad + 0.5)
    return translate(x, _randint(u[0], -sy, sy + 1), _randint(u[1], -sx, sx + 1))


def _op_cutout(u, x, p: DSAParams):
    h, w = x.shape[1], x.shape[2]
    ch, cw = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
    oy, ox = _randint(u[0], 0, h + (1 - ch % 2)), _randint(u[1], 0, w + (1 - cw % 2))
    return cutout(x, oy - ch // 2, ox - cw // 2, (ch, cw))


def _op_flip(u, x, p: DSAParams):
    return flip(x, u[0] < p.prob_flip)


def _op_scale(u, x, p: DSAParams):
    r = p.ratio_scale
    sx, sy = (u[i] * (r - 1.0 / r) + 1.0 / r for i in (0, 1))
    return affine_grid_sample(x, scale_theta(sx, sy))


def _op_rotate(u, x, p: DSAParams):
    return affine_grid_sample(x, rotation_theta((u[0] - 0.5) * 2 * p.ratio_rotate / 180 * math.pi))


_OPS = {"color": _op_color, "crop": _op_crop, "cutout": _op_cutout, "flip": _op_flip,
        "scale": _op_scale, "rotate": _op_rotate}


def choose_op(key: jax.Array, strategy: str = DEFAULT_STRATEGY) -> jax.Array:
    """Index into ``parse_strategy(strategy)`` of the op that ``dsa(key, ...)`` applies."""
    ops = parse_strategy(strategy)
    if not ops:
        raise ValueError("strategy 'none' applies no op; there is nothing to choose")
    return jax.random.randint(jax.random.fold_in(key, 0), (), 0, len(ops))


@functools.partial(jax.jit, static_argnames=("strategy", "params", "siamese"))
def dsa(key: jax.Array, x: jax.Array, strategy: str = DEFAULT_STRATEGY, params: DSAParams = DSAParams(),
        siamese: bool = True) -> jax.Array:
    """Apply one randomly chosen DSA op of ``strategy`` to the NHWC float batch ``x``.

    ``siamese=True``: one draw (op and parameters) for the whole batch, a function of ``key``
    only, so equal keys transform the real and the synthetic batch identically whatever their
    sizes. ``siamese=False``: per-image parameters. The op is picked by :func:`choose_op`; its
    parameters are read from uniforms drawn with ``fold_in(key, 1)`` (float32 whatever the image
    dtype), so the same key gives the same parameter draw for that op under any strategy
    containing it. All ops run under one ``lax.switch``; the result is differentiable w.r.t.
    ``x``. ``strategy``, ``params`` and ``siamese`` are static.
    """
    ops = parse_strategy(strategy)
    if not isinstance(params, DSAParams):
        raise ValueError(f"params must be a DSAParams, got {type(params).__name__}")
    if x.ndim != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"DSA expects a float NHWC image batch, got {x.dtype} of shape {x.shape}; add a batch "
                         "axis with x[None] and cast with x.astype(jnp.float32)")
    if not ops:
        return x
    shape = () if siamese else (x.shape[0],)
    u = jax.random.uniform(jax.random.fold_in(key, 1), (_NUM_UNIFORMS,) + shape, jnp.float32)
    branches = [functools.partial(_OPS[op], p=params) for op in ops]
    return lax.switch(choose_op(key, strategy), branches, u, x)
