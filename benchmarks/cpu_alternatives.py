"""Alternatives for the CPU hot spots of DC and DM that were measured and NOT adopted.

    python benchmarks/cpu_alternatives.py winograd     # a 3x3 convolution as Winograd F(2x2, 3x3)
    python benchmarks/cpu_alternatives.py norm-form    # instance norm written without GroupNorm's grouping
    python benchmarks/cpu_alternatives.py xla-flags    # XLA:CPU library flags on DC's inner epoch
    python benchmarks/cpu_alternatives.py peak         # this backend's matmul / convolution GFLOP/s

``winograd``: ConvNet's 128->128 3x3 convolution on 100 x 16 x 16 (DC's inner epoch, layer 2) as
``A^T [(G g G^T) * (B^T d B)] A`` (Lavin & Gray, 2016), 2.25x fewer multiplications, written in
jnp ops (autodiff gives the backward passes), against ``lax.conv_general_dilated``, forward and
forward + backward. ``norm-form``: DC's inner epoch (``DC.train_network``, 3 epochs) and one DM
update at Fashion-MNIST IPC 10 with ConvNet's instance norm as ``x * a - m * a + b`` (a =
scale / sqrt(var + eps), per example and channel) instead of ``flax.linen.GroupNorm``, alternating
rounds in one process. ``xla-flags``: ``dc_profile.py --parts inner`` under each flag set, one
process per set. Each prints medians; the findings are in RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
from _bench import alternate, time_compiled

FLAG_SETS = ("", "--xla_cpu_use_xnnpack=false", "--xla_cpu_experimental_ynn_fusion_type=-reduce",
             "--xla_cpu_experimental_ynn_fusion_type=+eltwise", "--xla_cpu_experimental_ynn_fusion_type=+dot",
             "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
             "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
             "--xla_cpu_use_onednn=true", "--xla_cpu_prefer_vector_width=512")


def _median_ms(fn, *args, rounds: int = 10) -> float:
    return 1e3 * time_compiled(fn, args, rounds)["s_per_it"]


def peak() -> None:
    """GFLOP/s of a large matmul and of ConvNet's layer-2 convolution alone (the reachable rates)."""
    a, b = jnp.ones((1152, 25600)), jnp.ones((25600, 128))
    ms = _median_ms(lambda a, b: a @ b, a, b)
    print(f"matmul 1152x25600x128: {ms:.1f} ms, {2 * 1152 * 25600 * 128 / ms / 1e6:.0f} GFLOP/s")
    x, k = jnp.ones((100, 16, 16, 128)), jnp.ones((3, 3, 128, 128))
    ms = _median_ms(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                                              dimension_numbers=("NHWC", "HWIO", "NHWC")), x, k)
    print(f"convolution 100x16x16, 128->128, 3x3: {ms:.1f} ms, {2 * 100 * 256 * 9 * 128 * 128 / ms / 1e6:.0f} GFLOP/s")


def winograd() -> None:
    direct = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),  # noqa: E731
                                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = jax.random.normal(jax.random.key(0), (100, 16, 16, 128))
    k = 0.03 * jax.random.normal(jax.random.key(1), (3, 3, 128, 128))
    err = float(jnp.max(jnp.abs(winograd_conv3x3(x, k) - direct(x, k))))
    print(f"max |winograd - direct| = {err:.2e} (outputs up to {float(jnp.max(jnp.abs(direct(x, k)))):.1f})")
    both = lambda f: (lambda x, k: jax.grad(lambda x, k: jnp.sum(f(x, k) ** 2), (0, 1))(x, k))  # noqa: E731
    for name, f in (("direct", direct), ("winograd", winograd_conv3x3)):
        print(f"{name}: forward {_median_ms(f, x, k):.1f} ms, forward + backward {_median_ms(both(f), x, k):.1f} ms")
    v, u = jnp.ones((16, 6400, 128)), jnp.ones((16, 128, 128))
    print(f"its 16 batched (6400x128)@(128x128) products alone: {_median_ms(lambda v, u: v @ u, v, u):.1f} ms")


def norm_form(data_dir: str | None) -> None:
    import flax.linen as nn

    from jaxdd.data import load_dataset
    from jaxdd.distill import RealData, build_method
    from jaxdd.models import convnet, create_network, layers

    class InstanceNorm(nn.GroupNorm):
        @nn.compact
        def __call__(self, x, mask=None):
            axes, c = tuple(range(1, x.ndim - 1)), x.shape[-1]
            m = jnp.mean(x, axes, keepdims=True)
            a = jax.lax.rsqrt(jnp.maximum(jnp.mean(jnp.square(x), axes, keepdims=True) - m * m, 0) + self.epsilon)
            a = a * self.param("scale", self.scale_init, (c,), self.param_dtype)
            return x * a - m * a + self.param("bias", self.bias_init, (c,), self.param_dtype)

    class Norm(layers.Norm):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return InstanceNorm(num_groups=x.shape[-1], epsilon=1e-5, name="norm")(x)

    ds = load_dataset("fashion_mnist", data_dir=data_dir)
    real = RealData.from_dataset(ds)
    original = convnet.Norm
    for what in ("dc inner (3 epochs)", "dm update"):
        compiled = {}
        for name, cls in (("GroupNorm", original), ("x*a - m*a + b", Norm)):
            convnet.Norm = cls
            try:
                net = create_network("convnet", num_classes=10, input_shape=ds.image_shape)
                if what.startswith("dm"):
                    m = build_method("dm", net, dataset=ds, ipc=10)
                    st = m.init(jax.random.key(0), real)
                    fn, args = (lambda s, r, m=m: m.update(s, r)[0].images), (st, real)
                else:
                    m = build_method("dc", net, dataset=ds, ipc=10, inner_loop=3)
                    st = m.init(jax.random.key(0), real)
                    fn = lambda v, im, k, m=m, y=st.labels: m.train_network(v, im, y, k)  # noqa: E731
                    args = (net.init(jax.random.key(1)), st.images, jax.random.key(3))
                compiled[name] = (jax.jit(fn).lower(*args).compile(), args)
            finally:
                convnet.Norm = original
        times = alternate(compiled, 5)
        print(what + ": " + ", ".join(f"{k} {wall:.3f} s" for k, (wall, _) in times.items())
              + f" (medians of 5 alternating rounds; load {os.getloadavg()[0]:.1f})")


def xla_flags(data_dir: str | None) -> None:
    script = os.path.join(os.path.dirname(__file__), "dc_profile.py")
    for flags in FLAG_SETS:
        out = subprocess.run([sys.executable, script, "--parts", "inner", "--epochs", "3", "--rounds", "2",
                              *(["--data-dir", data_dir] if data_dir else [])],
                             env={**os.environ, "XLA_FLAGS": flags}, capture_output=True, text=True, check=True)
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith("inner"))
        print(f"{flags or '(defaults)':75s} {line}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("winograd", "norm-form", "xla-flags", "peak"))
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    {"peak": peak, "winograd": winograd, "norm-form": lambda: norm_form(args.data_dir),
     "xla-flags": lambda: xla_flags(args.data_dir)}[args.what]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
