"""``benchmarks/_bench.op_times``: a profiler trace matched to the optimized HLO names the expensive
instruction of a program whose cost is known by construction."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _bench import op_times  # noqa: E402


def test_op_times_finds_the_matmul_that_dominates():
    # a 512^3 matmul (268 MFLOP) next to an elementwise sine on 512 values: the dot must rank first
    def f(a, b, v):
        return a @ b, jnp.sin(v)

    args = (jnp.ones((512, 512)), jnp.ones((512, 512)), jnp.ones((512,)))
    compiled = jax.jit(f).lower(*args).compile()
    rows = op_times(compiled, args, top=5, runs=2)
    assert rows, "no trace event matched an HLO instruction"
    assert "dot_general" in rows[0]["op"] and rows[0]["shape"] == "f32[512,512]", rows
    assert rows[0]["share"] > 0.5 and rows[0]["ms"] > 0
    assert sum(r["share"] for r in rows) <= 1.0 + 1e-9
