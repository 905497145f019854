"""experiments/distill_fmnist.py: the command stored with each row remakes that row and writes the
table it came from (not the default one)."""

import importlib.util
import shlex
from pathlib import Path

from jaxdd.utils.config import apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_row_command_names_the_results_table_and_parses_back_to_the_row(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # the script imports ``run`` lazily
    script, runner = _load("distill_fmnist"), _load("run")
    row = {"method": "dsa", "ipc": 10, "sdc": 0.0, "keep": 1.0, "iterations": 5, "loops": "10/50",
           "batch_real": 256, "epochs": 100, "models": 2}
    command = script.row_command(row, Path("runs/authors"), Path("experiments/results/authors.md"))
    name, *flags = shlex.split(command)[1:]
    assert name == "experiments/distill_fmnist.py"
    config = load_config("distill_fmnist")
    apply_overrides(config, runner.legacy_overrides(config, flags))
    # the fields written by hand from the row above, not from row_command
    assert (config.ipc, config.methods, config.sdc, config.keep, config.iterations, config.outer_loop_ipc10,
            config.inner_loop_ipc10, config.batch_real, config.eval_epochs, config.eval_models) == (
        (10,), ("dsa",), (0.0,), (1.0,), 5, 10, 50, 256, 100, 2)
    assert (config.out, config.results) == ("runs/authors", "experiments/results/authors.md")
    assert config.results != load_config("distill_fmnist").results  # would otherwise overwrite distill.md
