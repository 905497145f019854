"""Helpers shared by the benchmark scripts (importable because a script's folder is on sys.path)."""

from __future__ import annotations


def compiled_memory_bytes(compiled) -> int | None:
    """Arguments + outputs + temporaries of a compiled XLA program (``memory_analysis()``), or
    None where the backend does not report it."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
    except Exception:  # not every backend reports it
        return None
