"""The CPU convolution micro-benchmark behind RESULTS.md: one SGD step on a 3x3 32->64 conv over
256x28x28, inside lax.scan (10 steps) and as a plain jitted step, with jaxdd.models.layers.conv2d
(matmul-shaped kernel JVP) vs lax.conv_general_dilated. Prints one line per variant.

    python benchmarks/conv_scan.py      # the plain scan variant takes ~6 minutes on 2 cores
"""
import time, jax, jax.numpy as jnp
from jaxdd.models import layers
x = jax.random.normal(jax.random.key(0), (256, 28, 28, 32))
k = jax.random.normal(jax.random.key(1), (3, 3, 32, 64))
def f_custom(k, x): return jnp.sum(layers.conv2d(x, k, (1,1), ((1,1),(1,1)))**2)
def f_plain(k, x): return jnp.sum(jax.lax.conv_general_dilated(x, k, (1,1), ((1,1),(1,1)), dimension_numbers=("NHWC","HWIO","NHWC"))**2)
for name, f in [("custom", f_custom), ("plain", f_plain)]:
    g = jax.grad(f)
    @jax.jit
    def scanned(k, x):
        def body(k, _):
            return k - 1e-6 * g(k, x), None
        return jax.lax.scan(body, k, None, length=10)[0]
    @jax.jit
    def single(k, x): return k - 1e-6 * g(k, x)
    scanned(k, x).block_until_ready(); single(k, x).block_until_ready()
    t = time.perf_counter(); scanned(k, x).block_until_ready(); ts = (time.perf_counter() - t) / 10
    t = time.perf_counter()
    kk = k
    for _ in range(10): kk = single(kk, x)
    kk.block_until_ready(); t1 = (time.perf_counter() - t) / 10
    print(name, f"scan step {ts*1e3:.1f} ms, plain step {t1*1e3:.1f} ms")
