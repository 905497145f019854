"""Run configs: ``get_config()`` files and ``--config.FIELD=VALUE`` overrides.

A config file is a Python file whose ``get_config()`` returns an ``ml_collections.ConfigDict``
(the convention of the flax examples and big_vision). The packaged ones live in
``jaxdd/configs/`` and are named by their stem (``dm_fmnist_ipc10``) or by a path
(``configs/dm_fmnist_ipc10.py`` is found in the package when no such file exists here).

Overrides are typed by the field's current value: ``--config.ipc=50`` is an int because the
default is, ``--config.sdc=0.01`` a float, ``--config.zca=true`` a bool, ``--config.ipcs=1,10`` a
tuple; a field whose value is ``None`` takes the type the caller names (the command-line flag's),
else a Python literal or the string itself. An unknown field is an error that names the known ones.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from pathlib import Path
from typing import Any, Callable, Mapping

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
OVERRIDE_PREFIX = "--config."


class ConfigError(ValueError):
    """A config that cannot be loaded, or an override that does not fit it."""


def available_configs() -> list[str]:
    """Names of the packaged configs (``jaxdd/configs/*.py``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))


def resolve_config(name: str | Path) -> Path:
    """The file a ``--config`` value names: an existing path, else the packaged config of that stem."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name[:-3] if path.name.endswith(".py") else path.name
    packaged = CONFIG_DIR / f"{stem}.py"
    if packaged.is_file():
        return packaged
    close = difflib.get_close_matches(stem, available_configs(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"no config file {name!r} and no packaged config {stem!r}.{hint} Packaged configs: "
                      f"{', '.join(available_configs())}")


def load_config(name: str | Path):
    """``get_config()`` of the file (or packaged config) ``name``, as a ``ConfigDict``."""
    import ml_collections

    path = resolve_config(name)
    spec = importlib.util.spec_from_file_location(f"jaxdd_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a broken config file: say which one
        raise ConfigError(f"config {path} failed to load: {type(err).__name__}: {err}") from err
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"config {path} defines no get_config(); it must return an ml_collections.ConfigDict")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(dict(config))
    return config


def split_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` without its ``--config.FIELD=VALUE`` / ``--config.FIELD VALUE`` items, and those as a dict."""
    rest, overrides, i = [], {}, 0
    while i < len(argv):
        item = argv[i]
        if item.startswith(OVERRIDE_PREFIX):
            field, sep, value = item[len(OVERRIDE_PREFIX):].partition("=")
            if not sep:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{item} needs a value: {item}=VALUE")
                value, i = argv[i + 1], i + 1
            if not field:
                raise ConfigError(f"{item}: name the field, as in --config.ipc=10")
            overrides[field.replace("-", "_")] = value
        else:
            rest.append(item)
        i += 1
    return rest, overrides


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_value(text: str, current: Any, kind: Callable[[str], Any] | None = None, *, field: str = "value") -> Any:
    """``text`` as a value of ``current``'s type (``kind`` when ``current`` is ``None``)."""
    try:
        if text.lower() in ("none", "null") and (current is None or kind is not None):
            return None
        if isinstance(current, bool):
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError("expected true or false")
        if isinstance(current, (int, float, str)):
            return type(current)(text)
        if isinstance(current, (tuple, list)):
            items = _literal(text) if text.strip()[:1] in "([" else [v for v in text.split(",") if v.strip()]
            if not isinstance(items, (tuple, list)):
                items = [items]
            if current:
                items = [parse_value(str(v), current[0], field=field) for v in items]
            else:
                items = [_literal(str(v).strip()) for v in items]
            return type(current)(items)
        if current is None:
            return kind(text) if kind is not None else _literal(text)
    except (ValueError, TypeError) as err:
        want = type(current).__name__ if current is not None else getattr(kind, "__name__", "value")
        raise ConfigError(f"--config.{field}={text!r}: not a valid {want} ({err})") from None
    raise ConfigError(f"--config.{field}: {type(current).__name__} fields are set field by field "
                      f"(--config.{field}.NAME=VALUE)")


def apply_overrides(config, overrides: Mapping[str, str], kinds: Mapping[str, Callable] | None = None):
    """Set every dotted ``field -> text`` of ``overrides`` in ``config`` (a ``ConfigDict`` or dict),
    typed by the current value (``kinds[field]`` for ``None`` values); unknown fields raise."""
    kinds = kinds or {}
    for dotted, text in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for depth, part in enumerate(parents):
            if part not in node:
                _unknown(".".join(parents[:depth + 1]), list(node.keys()))
            node = node[part]
        if leaf not in node:
            _unknown(dotted, [".".join(parents + [k]) for k in node.keys()])
        node[leaf] = parse_value(text, node[leaf], kinds.get(dotted), field=dotted)
    return config


def parse_settings(items) -> dict:
    """``FIELD=VALUE`` strings -> a settings dict: ``["a=1", "b-c=mse"]`` -> ``{"a": 1, "b_c": "mse"}``
    (values parsed as JSON, else kept as strings; dashes in field names become underscores); a
    mapping is returned as a dict."""
    import json

    if isinstance(items, Mapping):
        return dict(items)
    out = {}
    for item in items or ():
        field, sep, value = str(item).partition("=")
        field = field.strip().replace("-", "_")
        if not sep or not field:
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[field] = json.loads(value)
        except json.JSONDecodeError:
            out[field] = value
    return out


def as_fields(config, defaults: Mapping[str, Any] | None = None):
    """Attribute access to a command's settings (a mapping, ``ConfigDict`` or ``argparse.Namespace``)
    over ``defaults``; a field missing from both raises a ``ConfigError`` naming it when read."""
    import types

    given = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config) if hasattr(config, "__dict__")
                                                                       and not isinstance(config, Mapping)
                                                                       else config)
    fields = {**(defaults or {}), **given}

    class Fields(types.SimpleNamespace):
        def __getattr__(self, name):
            raise ConfigError(f"the settings have no field {name!r} (fields: {', '.join(sorted(fields))})")

    return Fields(**fields)


def _unknown(field: str, known: list[str]) -> None:
    close = difflib.get_close_matches(field, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown config field {field!r}.{hint} Known fields: {', '.join(sorted(known))}")
