"""The one runner of the experiments behind RESULTS.md.

Every experiment is a config (jaxdd/configs/NAME.py, field experiment = the module in this folder
that runs it) plus its run(config) here; this runner loads the config, applies overrides and
calls it. Finished work is reused through cached() (a result stored with the settings that made
it), tables are written by write_markdown() / jaxdd.utils.io.write_report.

    python experiments/run.py --list
    python experiments/run.py --config distill_fmnist --config.ipc=1 --config.methods=dm
    python experiments/run.py --config configs/baselines_fmnist.py --config.models=2 --config.no_full=true

The scripts' old command lines still run: python experiments/baselines.py --ipc 1 10 --models 2
is python experiments/run.py --config baselines_fmnist --config.ipc=1,10 --config.models=2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the experiment modules beside this file

from jaxdd.utils.config import (ConfigError, apply_overrides, available_configs, load_config,  # noqa: E402
                                split_overrides)
from jaxdd.utils.io import atomic_path, read_json, write_json  # noqa: E402


def cached(path: str | Path, settings: dict, compute: Callable[[], Any]):
    """The result stored at ``path`` if it was made with ``settings``, else ``compute()`` (saved with them)."""
    path = Path(path)
    if path.exists():
        stored = read_json(path)
        if stored.get("settings") == settings:
            return stored["result"]
    result = compute()
    write_json(path, {"settings": settings, "result": result})
    return result


def refuse_changed(what: str, had: dict, asked: dict, hint: str) -> None:
    """Stop when finished work in ``what`` was made with other settings than the ones asked for now."""
    diff = {k: (had.get(k), v) for k, v in asked.items() if had.get(k) != v}
    if diff:
        changed = ", ".join(f"{k}: {a!r} there, {b!r} asked" for k, (a, b) in diff.items())
        raise SystemExit(f"{what} holds finished work made with other settings ({changed}); {hint}")


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub markdown table of ``rows`` (one column per key in ``columns``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows])


def write_markdown(path: str | Path, text: str) -> None:
    """``text`` into ``path`` atomically (its folder created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def as_list(value) -> list | None:
    """A list from a sequence, a single value (one item) or ``None`` (stays ``None``)."""
    if value is None:
        return None
    return list(value) if isinstance(value, (list, tuple)) else [value]


def run(config) -> int:
    """Run the experiment ``config.experiment`` with ``config`` (its module's ``run``)."""
    from jaxdd.utils.config import as_fields

    if "experiment" not in config:
        raise ConfigError("this config names no experiment (field 'experiment'); jaxdd commands read it instead, "
                          "e.g. jaxdd distill --config NAME")
    module = importlib.import_module(config["experiment"])
    return int(module.run(as_fields(config.to_dict() if hasattr(config, "to_dict") else config)) or 0)


def legacy_overrides(config, argv: list[str]) -> dict[str, str]:
    """An experiment script's old flags as overrides: ``--ipc 1 10`` -> ``ipc=1,10``, ``--no-full`` ->
    ``no_full=true`` (a switch when the field is a bool), ``--compare`` (nothing after) -> empty."""
    out, i = {}, 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected {token!r}: options are --NAME VALUE ...")
        name, sep, value = token[2:].partition("=")
        field = name.replace("-", "_")
        values = [value] if sep else []
        while not sep and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            values.append(argv[i + 1])
            i += 1
        if field not in config:
            apply_overrides(config, {field: ""})  # raises, naming the known fields
        out[field] = ("true" if not values else values[0]) if isinstance(config[field], bool) else ",".join(values)
        i += 1
    return out


def legacy_main(name: str, argv: list[str] | None = None) -> int:
    """``python experiments/SCRIPT.py --old-flags``: the config ``name`` with those flags as overrides."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(f"{load_config.__module__}: config {name}; fields and defaults:\n{load_config(name)}")
        return 0
    config = load_config(name)
    try:
        apply_overrides(config, legacy_overrides(config, argv))
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    return run(config)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rest, overrides = split_overrides(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="experiment config: a packaged name (see --list) or a get_config() file")
    p.add_argument("--list", action="store_true", help="list the experiment configs and exit")
    args = p.parse_args(rest)
    if args.list or not args.config:
        for n in available_configs():
            c = load_config(n)
            if "experiment" in c:
                print(f"{n:22s} experiments/{c.experiment}.py")
        return 0
    try:
        config = apply_overrides(load_config(args.config), overrides)
    except ConfigError as err:
        p.error(str(err))
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
