"""Layers shared by every jaxdd network.

All networks are built from these few layer types so that other stages (for example the fast
per-example gradient norms in ``jaxdd.difficulty``) can reason about them layer by layer:

* :class:`Conv` and :class:`Dense`: parameters ``kernel`` (HWIO / IO) and ``bias``.
* :class:`Norm`: ``instancenorm`` (GroupNorm with one group per channel), ``layernorm``
  (LayerNorm over all non-batch axes with an elementwise affine of that shape: (H, W, C) for a
  feature map, as the DC reference ConvNet's ``nn.LayerNorm([C, H, W], elementwise_affine=True)``;
  (D,) on (N, D) token rows), ``batchnorm`` or ``none``; epsilon 1e-5 as in PyTorch.

``weight_init="torch"`` reproduces PyTorch's default initialisation (kaiming-uniform with a = sqrt(5),
i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels and biases); ``weight_init="flax"`` uses Flax's
defaults (lecun-normal kernels, zero biases).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

INITS = ("torch", "flax")
NORMS = ("instancenorm", "batchnorm", "layernorm", "none")


def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def initializers(kind: str, fan_in: int):
    """(kernel_init, bias_init) for ``kind`` in :data:`INITS` and a layer with ``fan_in`` inputs."""
    if kind == "torch":
        bound = 1.0 / math.sqrt(fan_in)
        return _uniform(bound), _uniform(bound)
    if kind == "flax":
        return nn.initializers.lecun_normal(), nn.initializers.zeros
    raise ValueError(f"unknown init {kind!r}; choose one of {INITS}")


_CONV_DN = ("NHWC", "HWIO", "NHWC")
_CONV_DN_TANGENT = ("NHWC", "HWOI", "NHWC")  # the same convolution on a kernel with its last two axes swapped
#: Kernel-gradient columns (kh * kw * input channels) up to which :func:`conv2d`'s JVP gathers the
#: shifted inputs into one matrix (im2col); above it (where that copy costs more than it saves) it
#: sums one matmul per kernel offset.
IM2COL_MAX_COLUMNS = 128


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv2d(x, kernel, strides: tuple[int, int], padding: tuple[tuple[int, int], tuple[int, int]]):
    """``lax.conv_general_dilated`` (NHWC, HWIO) with a JVP whose kernel part is a sum over kernel
    offsets of ``shifted(x) @ dk[h, w]``. Same values and derivatives (any order); the point is
    speed: the transpose of that JVP (the kernel gradient) is a batched matmul, whereas XLA:CPU runs
    the transposed convolution ~30x slower inside ``lax.scan`` / ``while`` bodies (jax-ml/jax#12868),
    which is where training loops and DC's inner loop live."""
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_CONV_DN)


def conv(x, kernel, strides, padding):
    """The convolution every layer uses: :func:`conv2d` on the CPU backend (measured: a 3x3
    32->64 conv on 256x28x28 costs 0.41 s per SGD step inside ``lax.scan`` with it, 34 s without,
    and 0.54 s vs 1.36 s per jitted step outside a scan), XLA's own convolution elsewhere (cuDNN /
    TPU kernels are fast for both). Chosen at trace time from ``jax.default_backend()``."""
    if jax.default_backend() == "cpu":
        return conv2d(x, kernel, strides, padding)
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_CONV_DN)


@conv2d.defjvp
def _conv2d_jvp(strides, padding, primals, tangents):
    x, kernel = primals
    dx, dk = tangents
    y = conv2d(x, kernel, strides, padding)
    (pt, pb), (pl, pr) = padding
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    (sh, sw), (ho, wo) = strides, y.shape[1:3]
    # the input part with the kernel stored (H, W, O, I): its transpose (the input gradient) is then
    # a convolution in the canonical NHWC/HWIO layout, which XLA:CPU runs 5x faster inside loops
    dy = jax.lax.conv_general_dilated(dx, jnp.swapaxes(kernel, 2, 3), strides, padding,
                                      dimension_numbers=_CONV_DN_TANGENT)
    kh, kw, ci, co = kernel.shape
    shifted = [jax.lax.slice(xp, (0, h, w, 0), (xp.shape[0], h + sh * (ho - 1) + 1, w + sw * (wo - 1) + 1, ci),
                             (1, sh, sw, 1)).reshape(-1, ci) for h in range(kh) for w in range(kw)]
    if kh * kw * ci <= IM2COL_MAX_COLUMNS:
        # few input channels (a network's first layer): one (NPQ, kh*kw*I) @ (kh*kw*I, O) product, whose
        # transpose reads the output gradient once instead of kh*kw times
        return y, dy + (jnp.concatenate(shifted, 1) @ dk.reshape(-1, co)).reshape(dy.shape)
    for xs, dk_hw in zip(shifted, dk.reshape(kh * kw, ci, co)):  # kernel offsets in (h, w) order
        # as a 2-D matmul: its transpose (the kernel gradient) is then one (I, NPQ) @ (NPQ, O)
        # product, 1.3x faster on XLA:CPU than the 4-D contraction of an einsum
        dy = dy + (xs @ dk_hw).reshape(dy.shape)
    return y, dy


class Conv(nn.Module):
    """2-D convolution, NHWC, symmetric integer padding, PyTorch or Flax initialisation."""

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: int = 1
    use_bias: bool = True
    weight_init: str = "torch"

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        fan_in = x.shape[-1] * kh * kw
        kinit, binit = initializers(self.weight_init, fan_in)
        kernel = self.param("kernel", kinit, (kh, kw, x.shape[-1], self.features))
        p = self.padding
        y = conv(x, kernel.astype(x.dtype), tuple(self.strides), ((p, p), (p, p)))
        if self.use_bias:
            y = y + self.param("bias", binit, (self.features,)).astype(x.dtype)
        return y


class Dense(nn.Module):
    """Fully connected layer, PyTorch or Flax initialisation."""

    features: int
    use_bias: bool = True
    weight_init: str = "torch"

    @nn.compact
    def __call__(self, x):
        kinit, binit = initializers(self.weight_init, x.shape[-1])
        kernel = self.param("kernel", kinit, (x.shape[-1], self.features))
        y = x @ kernel.astype(x.dtype)
        if self.use_bias:
            y = y + self.param("bias", binit, (self.features,)).astype(x.dtype)
        return y


class Norm(nn.Module):
    """Normalisation by name (see module docstring). ``train`` only matters for batchnorm."""

    kind: str = "instancenorm"

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        if self.kind == "instancenorm":
            return nn.GroupNorm(num_groups=c, epsilon=1e-5, name="norm")(x)
        if self.kind == "layernorm":
            axes = tuple(range(1 - x.ndim, 0))  # every axis but the batch axis
            return nn.LayerNorm(epsilon=1e-5, reduction_axes=axes, feature_axes=axes, name="norm")(x)
        if self.kind == "batchnorm":
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="norm")(x)
        if self.kind == "none":
            return x
        raise ValueError(f"unknown norm {self.kind!r}; choose one of {NORMS}")


def pool(x, kind: str = "avgpool"):
    """2x2 pooling with stride 2 (``avgpool`` or ``maxpool``)."""
    if kind == "avgpool":
        return nn.avg_pool(x, (2, 2), strides=(2, 2))
    if kind == "maxpool":
        return nn.max_pool(x, (2, 2), strides=(2, 2))
    if kind == "none":
        return x
    raise ValueError(f"unknown pooling {kind!r}; choose avgpool, maxpool or none")


def pad_28_to_32(x):
    """Zero-pad 28x28 NHWC inputs by 2 pixels on each side to 32x32; other sizes unchanged.

    The DC reference networks bring 28 px (MNIST-like) images to the 32 px layout by adding 2 to
    the first convolution's padding (``padding=3`` for a 3x3 ConvNet/VGG convolution, 4 for
    AlexNet's 5x5, 2 for LeNet's 5x5); padding the input first is the same computation.
    """
    if x.shape[1] == 28 and x.shape[2] == 28:
        return jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return x
