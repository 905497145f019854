"""Helpers shared by the benchmark scripts (importable because a script's folder is on sys.path)."""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from jaxdd.distill.base import compiled_memory_bytes  # noqa: F401  (re-exported for the scripts)


def report(name: str, args, rows: list[dict]) -> None:
    """Print ``rows`` as a table and, when ``args.out`` is set, write them as JSON with the
    benchmark's name, its arguments, the backend, jax's version and the CPU count."""
    from jaxdd.utils.io import format_table, write_json

    print(format_table(rows))
    if args.out:
        write_json(args.out, {"benchmark": name, "config": vars(args), "backend": jax.default_backend(),
                              "jax": jax.__version__, "cpus": os.cpu_count(), "rows": rows})


def megabytes(nbytes: int | None) -> int | None:
    return None if nbytes is None else round(nbytes / 2**20)


def time_compiled(fn, args: tuple, repeats: int) -> dict:
    """Compile ``jax.jit(fn)`` for ``args`` ahead of time (timed), run it once untimed, then
    ``repeats`` timed calls: {"compile_s", "s_per_it" (median wall), "times", "memory_mb"}."""
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t)
    return {"compile_s": round(compile_s, 2), "s_per_it": round(float(np.median(times)), 4),
            "times": [round(v, 4) for v in times], "memory_mb": megabytes(compiled_memory_bytes(compiled))}
