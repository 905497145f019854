"""Packaging without a build: the version has one source, the CLI reports it, and the files the
package reads at run time are covered by the package-data globs (``.ci/run`` builds the wheel and
checks it with ``twine check`` and ``.ci/check_wheel.py``)."""

import fnmatch
from pathlib import Path

import pytest

import jaxdd
from jaxdd.cli import main

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_version_has_one_source_and_the_cli_prints_it(capsys):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jaxdd.__version__"}
    with pytest.raises(SystemExit) as exit_:  # argparse's version action prints and exits 0
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxdd {jaxdd.__version__}"


def test_package_data_covers_the_runtime_files_and_extras_name_accelerators():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = project["tool"]["setuptools"]["package-data"]["jaxdd"]
    data = [p.relative_to(ROOT / "jaxdd").as_posix() for p in (ROOT / "jaxdd").rglob("*")
            if p.is_file() and p.suffix in (".npz", ".md")]
    assert data and all(any(fnmatch.fnmatch(d, g) for g in globs) for d in data), data
    extras = project["project"]["optional-dependencies"]
    assert extras["cuda"] == ["jax[cuda12]"] and extras["tpu"] == ["jax[tpu]"]
    assert any(d.startswith("tensorboardX") for d in project["project"]["dependencies"])
