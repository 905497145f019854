"""Configs (get_config() files, --config / --config.FIELD=VALUE), thin commands and the shared
vocabulary of the command line (one name per concept, old spellings as deprecated aliases)."""

import argparse
import importlib

import pytest

from jaxdd.cli import build_parser, main
from jaxdd.cli._common import parse_command_line
from jaxdd.utils.config import (CONFIG_DIR, ConfigError, apply_overrides, available_configs, load_config,
                                parse_value, split_overrides)


def parse(argv):
    args = vars(parse_command_line(build_parser(), argv))
    args.pop("func", None)
    return args


# ---- config files


def test_every_packaged_config_loads_and_names_its_command():
    names = available_configs()
    assert "dm_fmnist_ipc10" in names and "dm_embedded_ipc1" in names
    for name in names:
        config = load_config(name)
        assert len(config.keys()) > 0
        doc = (CONFIG_DIR / f"{name}.py").read_text().split('"""')[1]
        assert "jaxdd " in doc or "python experiments/" in doc, name  # the command that runs it


def test_config_by_name_by_repo_path_and_by_file_are_the_same(tmp_path):
    own = tmp_path / "mine.py"
    own.write_text("import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict({'ipc': 3})\n")
    assert load_config("dm_fmnist_ipc10").to_dict() == load_config("configs/dm_fmnist_ipc10.py").to_dict()
    assert load_config(own).to_dict() == {"ipc": 3}
    with pytest.raises(ConfigError, match="dm_fmnist_ipc10"):  # a near miss is named
        load_config("dm_fmnist_ipc1O")
    (tmp_path / "broken.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        load_config(tmp_path / "broken.py")


def test_overrides_are_typed_by_the_current_value():
    config = {"ipc": 10, "sdc": 0.0, "zca": False, "name": "dm", "ipcs": (1, 10), "iterations": None,
              "eval": {"epochs": 300}}
    apply_overrides(config, {"ipc": "50", "sdc": "1e-2", "zca": "true", "name": "dc", "ipcs": "1,10,50",
                             "iterations": "7", "eval.epochs": "100"}, kinds={"iterations": int})
    assert config == {"ipc": 50, "sdc": 0.01, "zca": True, "name": "dc", "ipcs": (1, 10, 50), "iterations": 7,
                      "eval": {"epochs": 100}}
    assert type(config["ipc"]) is int and type(config["sdc"]) is float and type(config["iterations"]) is int
    assert parse_value("(2, 3)", (1,)) == (2, 3)
    assert parse_value("none", None, int) is None
    assert parse_value("[1, 'a']", None) == [1, "a"]  # no type known: a Python literal


def test_bad_overrides_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown config field 'ipcc'.*Did you mean ipc"):
        apply_overrides({"ipc": 1, "sdc": 0.0}, {"ipcc": "5"})
    with pytest.raises(ConfigError, match="not a valid int"):
        apply_overrides({"ipc": 1}, {"ipc": "ten"})
    with pytest.raises(ConfigError, match="true or false"):
        apply_overrides({"zca": False}, {"zca": "maybe"})
    assert issubclass(ConfigError, ValueError)
    assert split_overrides(["distill", "--config.ipc=5", "--config.sdc", "0.1", "--seed", "1"]) == (
        ["distill", "--seed", "1"], {"ipc": "5", "sdc": "0.1"})


def test_distill_config_with_overrides_and_explicit_flags():
    a = parse(["distill", "--config", "dm_fmnist_ipc10", "--config.ipc=50"])
    assert (a["ipc"], a["iterations"], a["dataset"], a["batch_real"], a["eval_models"]) == (50, 100, "fashion_mnist",
                                                                                            64, 2)
    b = parse(["distill", "--ipc", "3", "--config", "configs/dm_fmnist_ipc10.py", "--config.ipc=50"])
    assert b["ipc"] == 3  # a flag given explicitly wins
    c = parse(["distill", "--config.iterations=7", "--config.sdc=0.5"])  # no file: the defaults are the config
    assert (c["iterations"], c["sdc"], c["dataset"]) == (7, 0.5, "embedded")


def test_distill_config_errors_exit_with_the_field_named(capsys):
    with pytest.raises(SystemExit) as e:
        parse(["distill", "--config", "dm_fmnist_ipc10", "--config.ipcc=5"])
    assert e.value.code == 2 and "ipcc" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["distill", "--config.method=nope"])
    assert "choose from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--config.ipc=5"])  # no command: no settings to override
    assert "after the command" in capsys.readouterr().err


def test_method_settings_merge_into_one_dict(capsys):
    a = parse(["distill", "--set", "outer_loop=5", "--set", "metric=mse", "--set", "lr_img=0.1"])
    assert a["settings"] == {"outer_loop": 5, "metric": "mse", "lr_img": 0.1}
    with pytest.raises(SystemExit) as e:
        parse(["distill", "--set", "outer_loop"])
    assert e.value.code == 2 and "FIELD=VALUE" in capsys.readouterr().err


def test_a_config_can_supply_required_flags(tmp_path, capsys):
    f = tmp_path / "c.py"
    f.write_text("import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict("
                 "{'scores': 's.npz', 'keep': 0.5, 'out': 'sub.npz'})\n")
    a = parse(["prune", "--config", str(f), "--config.keep=0.2"])
    assert (a["scores"], a["keep"], a["out"]) == ("s.npz", 0.2, "sub.npz")
    with pytest.raises(SystemExit):  # still required when neither the config nor the command line gives it
        parse(["prune", "--config.keep=0.2"])
    assert "required: --scores" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # and required without a config
        parse(["prune", "--keep", "0.2"])


def test_a_config_file_with_an_unknown_field_is_refused(tmp_path, capsys):
    f = tmp_path / "c.py"
    f.write_text("import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict({'ipcs': 3})\n")
    with pytest.raises(SystemExit):
        parse(["distill", "--config", str(f)])
    assert "ipcs" in capsys.readouterr().err


# ---- help, descriptions, vocabulary

COMMANDS = [["distill"], ["eval"], ["baseline"], ["experts"], ["generate"], ["pool"], ["prior", "train"],
            ["prior", "sample"], ["prune"], ["sample"], ["score"], ["data", "list"], ["data", "info"]]


def _subparser(path):
    p = build_parser()
    for name in path:
        p = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return p


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_shows_every_default_and_an_example(path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":mod:" not in text and ":class:" not in text  # no reST markup
    assert f"jaxdd {' '.join(path)} " in _subparser(path).description  # an example command
    p = _subparser(path)
    for action in p._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.nargs == 0:
            continue
        shown = p.formatter_class(prog="x")._get_help_string(action)
        assert "default" in shown.lower() or "required" in shown.lower(), (path, action.option_strings)
    if any("--model" in a.option_strings for a in p._actions):
        assert "resnet18" in text and "convnet-w32" in text  # --model lists the valid names


ALIASES = [  # (old spelling, new spelling): the same parsed namespace
    (["eval", "--distilled", "d", "--archs", "mlp,lenet", "--models", "2"],
     ["eval", "--distilled", "d", "--model", "mlp,lenet", "--num-models", "2"]),
    (["baseline", "--arch", "mlp", "--models", "3"], ["baseline", "--model", "mlp", "--num-models", "3"]),
    (["distill", "--batch-real", "8"], ["distill", "--real-batch-size", "8"]),
    (["pool", "--method", "dm", "--out", "o", "--batch-real", "8"],
     ["pool", "--method", "dm", "--out", "o", "--real-batch-size", "8"]),
    (["experts", "--num-experts", "1", "--out", "o", "--arch", "mlp", "--batch", "32"],
     ["experts", "--num-experts", "1", "--out", "o", "--model", "mlp", "--batch-size", "32"]),
    (["score", "--out", "s.npz", "--method", "ghost", "--train-batch", "64", "--models", "2"],
     ["score", "--out", "s.npz", "--norm-method", "ghost", "--train-batch-size", "64", "--num-models", "2"]),
    (["sample", "--pool", "p", "--ipc", "1", "--out", "o", "--clf-model", "mlp", "--clf-models", "2"],
     ["sample", "--pool", "p", "--ipc", "1", "--out", "o", "--model", "mlp", "--num-models", "2"]),
    (["generate", "--prior", "p", "--ipc", "1", "--out", "o", "--clf-model", "mlp"],
     ["generate", "--prior", "p", "--ipc", "1", "--out", "o", "--model", "mlp"]),
    (["prior", "train", "--guidance", "3"], ["prior", "train", "--cfg", "3"]),
    (["prior", "sample", "--prior", "p", "--per-class", "2", "--out", "o", "--guidance", "3"],
     ["prior", "sample", "--prior", "p", "--per-class", "2", "--out", "o", "--cfg", "3"]),
]


@pytest.mark.parametrize("old,new", ALIASES, ids=lambda a: " ".join(a[:2]))
def test_old_spellings_parse_like_the_new_ones_with_a_note(old, new, capsys):
    assert parse(new) == parse(old)
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "deprecated" in line]
    assert notes and all(line.startswith("jaxdd: --") and "; use --" in line for line in notes)
    assert len(notes) == len({line for line in notes})  # one line per old spelling


def test_old_spellings_are_hidden_from_help(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "--archs" not in text and "--models " not in text and "--num-models" in text


# ---- every command calls its one library function

CALLS = [
    (["distill", "--ipc", "2", "--out", "w"], "jaxdd.distill.run", "run_distill", {"ipc": 2}),
    (["eval", "--distilled", "d", "--model", "mlp"], "jaxdd.evaluate.run", "run_eval", {"model": "mlp"}),
    (["baseline", "--ipc", "1"], "jaxdd.prune.run", "run_baseline", {"ipc": "1"}),
    (["experts", "--num-experts", "2", "--out", "w"], "jaxdd.experts.run", "run_experts", {"num_experts": 2}),
    (["generate", "--prior", "p", "--ipc", "1", "--out", "w"], "jaxdd.sample.run", "run_generate", {"ipc": 1}),
    (["pool", "--method", "real", "--ipc", "1", "--out", "w"], "jaxdd.sample.run", "run_pool", {"method": "real"}),
    (["prior", "train", "--steps", "3", "--out", "w"], "jaxdd.generative.run", "run_prior_train", {"steps": 3}),
    (["prior", "sample", "--prior", "p", "--per-class", "2", "--out", "w"], "jaxdd.sample.run", "run_prior_sample",
     {"per_class": 2}),
    (["prune", "--scores", "s.npz", "--keep", "0.5", "--out", "w"], "jaxdd.prune.run", "run_prune", {"keep": 0.5}),
    (["sample", "--pool", "p", "--ipc", "1", "--out", "w"], "jaxdd.sample.run", "run_sample", {"pool": "p"}),
    (["score", "--out", "w", "--num-models", "2"], "jaxdd.difficulty.run", "run_score", {"num_models": 2}),
    (["data", "info", "embedded", "-o", "seed=1"], "jaxdd.data.run", "run_data_info", {"option": ["seed=1"]}),
    (["data", "list", "--out", "w"], "jaxdd.data.run", "run_data_list", {}),
]


@pytest.mark.parametrize("argv,module,name,expected", CALLS, ids=lambda v: v if isinstance(v, str) else None)
def test_each_command_calls_its_library_function(argv, module, name, expected, monkeypatch):
    calls = []
    monkeypatch.setattr(importlib.import_module(module), name, lambda config, out=None: calls.append((config, out)))
    assert main(argv) == 0
    (config, out), = calls
    assert {k: config[k] for k in expected} == expected
    assert "func" not in config and "command" not in config  # settings only
    assert out == (argv[argv.index("--out") + 1] if "--out" in argv else None)


def test_default_outputs_of_eval_and_baseline():
    from jaxdd.evaluate.run import default_eval_out
    from jaxdd.prune.run import default_baseline_out

    assert str(default_eval_out("runs/dm10/distilled")) == "runs/eval-dm10.json"
    assert str(default_eval_out("sets/random_ipc1")) == "runs/eval-random_ipc1.json"
    assert str(default_baseline_out("fashion_mnist", "herding")) == "runs/baseline-fashion_mnist-herding.json"


# ---- historical commands (RESULTS.md) still parse


def _results_commands(prefix: str) -> list[str]:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "RESULTS.md").read_text()
    lines = [m.group(1).split("#")[0].strip() for m in re.finditer(rf"^ {{4}}(?:/usr/bin/time -v )?({prefix} .*)$",
                                                                     text, re.M)]
    placeholders = {"SEL": "random", "ipcK": "ipc1", "ACC_FROM_ABOVE": "88.0"}
    return [re.sub("|".join(placeholders), lambda m: placeholders[m.group(0)], line) for line in lines]


def test_the_jaxdd_commands_in_results_md_still_parse(capsys):
    import shlex

    commands = _results_commands("jaxdd")
    assert len(commands) >= 8
    for command in commands:
        args = parse(shlex.split(command)[1:])
        assert args["command"] in command


def test_the_experiment_commands_in_results_md_map_onto_their_configs():
    import importlib.util
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("experiments_run", root / "experiments" / "run.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    configs = {f"experiments/{load_config(n).experiment}.py": n for n in available_configs()
               if "experiment" in load_config(n)}
    commands = [c for c in _results_commands("python") if "experiments/" in c and "..." not in c]
    assert len(commands) >= 5
    for command in commands:
        script, *flags = shlex.split(command)[1:]
        config = load_config(configs[script])
        apply_overrides(config, runner.legacy_overrides(config, flags))  # every old flag is a field of the config
    config = load_config("distill_fmnist")
    apply_overrides(config, runner.legacy_overrides(config, ["--ipc", "10", "--methods", "dc", "dsa", "--sdc", "0",
                                                             "--dm-iterations", "100", "--eval-models", "2"]))
    assert (config.ipc, config.methods, config.sdc, config.dm_iterations, config.eval_models) == (
        (10,), ("dc", "dsa"), (0.0,), 100, 2)
    config = load_config("baselines_fmnist")
    apply_overrides(config, runner.legacy_overrides(config, ["--no-full", "--full-epochs", "2"]))
    assert config.no_full is True and config.full_epochs == 2
    config = load_config("guided_fmnist")  # the flags benchmarks/guided_gpu.sh passes
    apply_overrides(config, runner.legacy_overrides(config, [
        "--tiny", "--margin-s", "2", "--deadline", "1700000000", "--folder", "runs/g", "--out", "o", "--tar",
        "--restore", "runs/g.tar.gz", "runs/guided_sets.tar.gz", "--data-dir", "data/fashion-mnist",
        "--ipc", "1", "10", "--archs", "convnet", "mlp"]))
    assert (config.tiny, config.margin_s, config.deadline, config.folder, config.tar, config.restore, config.ipc,
            config.archs, config.data_dir) == (True, 2.0, 1.7e9, "runs/g", True,
                                               ("runs/g.tar.gz", "runs/guided_sets.tar.gz"), (1, 10),
                                               ("convnet", "mlp"), "data/fashion-mnist")


def test_the_configs_ship_in_the_wheel():
    import fnmatch
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["jaxdd"]
    files = [p.relative_to(root / "jaxdd").as_posix() for p in CONFIG_DIR.glob("*.py")]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files)
    assert CONFIG_DIR == root / "jaxdd" / "configs" and not (CONFIG_DIR / "__init__.py").exists()  # data, not code
