"""``jaxdd.models.layers.conv2d`` (the Conv op with a matmul-shaped kernel JVP, added for DC's inner
loop on CPU) has the values and derivatives of ``lax.conv_general_dilated``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.models.layers import conv2d


@pytest.mark.parametrize("strides,padding", [((1, 1), ((1, 1), (1, 1))), ((2, 2), ((3, 3), (3, 3))),
                                             ((2, 1), ((0, 1), (2, 0)))])
def test_conv2d_derivatives_equal_lax_conv(strides, padding):
    r = np.random.default_rng(0)
    x = jnp.asarray(r.normal(size=(2, 9, 8, 3)), jnp.float32)
    k = jnp.asarray(r.normal(size=(3, 5, 3, 4)), jnp.float32)

    def ref(x, k):
        return jnp.sum(jnp.sin(jax.lax.conv_general_dilated(x, k, strides, padding,
                                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))))

    def new(x, k):
        return jnp.sum(jnp.sin(conv2d(x, k, strides, padding)))

    assert float(new(x, k)) == float(ref(x, k))
    for a, b in zip(jax.grad(ref, (0, 1))(x, k), jax.grad(new, (0, 1))(x, k)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    # second order, forward-over-reverse and reverse-over-reverse (DC differentiates gradients)
    np.testing.assert_allclose(jax.jacfwd(jax.grad(new, 1), 0)(x, k), jax.jacfwd(jax.grad(ref, 1), 0)(x, k),
                               rtol=1e-4, atol=1e-4)
    gg = lambda f: jax.grad(lambda x: jnp.sum(jax.grad(f, 1)(x, k) ** 2))(x)  # noqa: E731
    np.testing.assert_allclose(gg(new), gg(ref), rtol=1e-4, atol=1e-4)
