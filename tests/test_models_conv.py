"""``jaxdd.models.layers.conv2d`` (the Conv op with a matmul-shaped kernel JVP, added for DC's inner
loop on CPU) has the values and derivatives of ``lax.conv_general_dilated``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.models.layers import conv2d


@pytest.mark.parametrize("strides,padding,cin", [((1, 1), ((1, 1), (1, 1)), 3), ((2, 2), ((3, 3), (3, 3)), 3),
                                                 ((2, 1), ((0, 1), (2, 0)), 3),
                                                 ((1, 1), ((1, 1), (1, 1)), 9)])  # 3*5*9 > IM2COL_MAX_COLUMNS
def test_conv2d_derivatives_equal_lax_conv(strides, padding, cin):
    # In float64: the second-order terms reach ~2.5e3, where two float32 summation orders differ by
    # up to ~4e-3 (eps 1.2e-7 x magnitude x summed terms), so a float32 comparison at 1e-4 fails on
    # some x86 CPUs. In float64 the two implementations agree to ~1e-12.
    with jax.enable_x64(True):
        r = np.random.default_rng(0)
        x = jnp.asarray(r.normal(size=(2, 9, 8, cin)), jnp.float64)
        k = jnp.asarray(r.normal(size=(3, 5, cin, 4)), jnp.float64)
        from jaxdd.models.layers import IM2COL_MAX_COLUMNS
        assert (3 * 5 * cin <= IM2COL_MAX_COLUMNS) == (cin == 3)  # both kernel-part formulations are tested

        def ref(x, k):
            return jnp.sum(jnp.sin(jax.lax.conv_general_dilated(x, k, strides, padding,
                                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))))

        def new(x, k):
            return jnp.sum(jnp.sin(conv2d(x, k, strides, padding)))

        assert new(x, k).dtype == jnp.float64
        assert float(new(x, k)) == float(ref(x, k))  # the forward pass is lax's convolution itself
        for a, b in zip(jax.grad(ref, (0, 1))(x, k), jax.grad(new, (0, 1))(x, k)):
            assert b.dtype == jnp.float64
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)
        # second order, forward-over-reverse and reverse-over-reverse (DC differentiates gradients)
        np.testing.assert_allclose(jax.jacfwd(jax.grad(new, 1), 0)(x, k), jax.jacfwd(jax.grad(ref, 1), 0)(x, k),
                                   rtol=1e-10, atol=1e-10)
        gg = lambda f: jax.grad(lambda x: jnp.sum(jax.grad(f, 1)(x, k) ** 2))(x)  # noqa: E731
        np.testing.assert_allclose(gg(new), gg(ref), rtol=1e-10, atol=1e-10)
