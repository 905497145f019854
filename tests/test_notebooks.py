"""Every notebook in colab/ runs top to bottom in a fresh headless kernel at the tiny budget.

The kernel imports this checkout (PYTHONPATH), so the notebooks' install cell finds jaxdd and skips
the install; ``JAXDD_NOTEBOOK_BUDGET=tiny`` shrinks every loop. The notebooks share a persistent JAX
compilation cache (several compile the same ConvNet programs), which only saves compile time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
EXPECTED = {"quickstart", "difficulty_prune_distill", "dgs_guided", "mtt_tesla", "own_model"}


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("jax_cache"))


def test_every_notebook_is_collected():
    assert EXPECTED <= {p.stem for p in NOTEBOOKS}


def test_install_cell_is_not_editable():
    """The first code cell installs without -e (an editable install from a clone needs a restart) and only
    when jaxdd is not importable; it reads the budget from the one environment variable."""
    for path in NOTEBOOKS:
        first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code").source
        assert "import jaxdd.data" in first and '"pip", "install"' in first, path.name
        assert "-e" not in first.split('"install"')[1].split("\n")[0], path.name
        assert "JAXDD_NOTEBOOK_BUDGET" in first, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch, compile_cache: str):
    monkeypatch.setenv("JAXDD_NOTEBOOK_BUDGET", "tiny")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    # one CPU device (not the suite's 8 fake ones); LLVM level 0 as in the rest of the suite (compile-bound)
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", compile_cache)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, as in Colab
    book = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3")
    km.kernel_spec.argv[0] = sys.executable  # this interpreter (the suite's environment), whatever is on PATH
    # timeouts for a loaded 2-core CI machine: 600 s a cell, 300 s for the kernel to start (nbclient's
    # default 60 s counts a fresh interpreter importing ipykernel beside the other pytest worker)
    client = NotebookClient(book, km=km, timeout=600, startup_timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()  # raises CellExecutionError naming the cell on the first error
    finally:
        if km.has_kernel:  # a kernel manager passed in is not shut down by nbclient
            km.shutdown_kernel(now=True)
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} showed no image"
    assert any("budget tiny" in o.get("text", "") for o in outputs), "the install cell did not report the budget"
