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


def op_times(compiled, args: tuple, top: int = 20, runs: int = 1) -> list[dict]:
    """Where a compiled program's time goes, per XLA instruction: run ``compiled(*args)`` ``runs``
    times under ``jax.profiler.trace`` (Perfetto trace), match the trace's thunk events to the
    instructions of the optimized HLO (``compiled.as_text()``), and return the ``top`` instructions by
    time: instruction, its JAX op name (``metadata.op_name``, "transpose(...)" marks the backward
    pass), output shape, ms per run and share of all matched events. On XLA:CPU every fusion, library
    call (``ynn_fusion``: YNNPACK) and loop (``while``: its body's instructions are listed too, so
    shares overlap) is one event; instructions that run concurrently are summed, so shares are of
    thread time, not of wall time."""
    import collections
    import glob
    import gzip
    import json
    import re
    import tempfile

    hlo = compiled.as_text()
    info = {m.group(1): (m.group(2).split("{")[0], m.group(3)) for m in
            re.finditer(r'^\s*(?:ROOT )?%(\S+) = (\S+) .*?op_name="([^"]*)"', hlo, re.M)}
    jax.block_until_ready(compiled(*args))  # warm
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(runs):
                jax.block_until_ready(compiled(*args))
        (path,) = glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)
        trace = json.load(gzip.open(path))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total_us = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in info:
            total_us[e["name"]] += e.get("dur", 0)
    loops = sum(t for n, t in total_us.items() if n.startswith("while"))
    matched = sum(total_us.values()) - loops  # a loop's body instructions are events of their own
    rows = []
    for name, us in total_us.most_common(top):
        shape, op = info[name]
        op = re.sub(r"jit\([^)]*\)/|closed_call/|while/body/", "", op)
        rows.append({"instruction": name, "op": op[-90:], "shape": shape, "ms": round(us / 1e3 / runs, 2),
                     "share": round(us / matched, 3) if matched else None})
    return rows


def alternate(fns: dict, rounds: int) -> dict:
    """{label: (compiled, args)} -> {label: (median wall s, median CPU s)} over alternating rounds
    (after one warm-up call each)."""
    for f, args in fns.values():
        jax.block_until_ready(f(*args))
    walls = {k: [] for k in fns}
    cpus = {k: [] for k in fns}
    for _ in range(rounds):
        for k, (f, args) in fns.items():
            t, c = time.time(), time.process_time()
            jax.block_until_ready(f(*args))
            walls[k].append(time.time() - t)
            cpus[k].append(time.process_time() - c)
    return {k: (float(np.median(walls[k])), float(np.median(cpus[k]))) for k in fns}
