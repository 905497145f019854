"""Argument helpers shared by subcommands: dataset selection, seeds, the network, help formatting,
deprecated spellings and ``--config FILE`` / ``--config.FIELD=VALUE``."""

from __future__ import annotations

import argparse
import re
import sys

DEFAULT_DATASET = "embedded"
DEFAULT_MODEL = "convnet"
#: keys of the namespace that are not settings (never written to a config or a record)
_INTERNAL = ("func", "command", "data_command", "prior_command", "config", "_parser")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; every option shows its default (or that it is required)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.nargs != 0 and "default" not in text.lower():
            if action.required:
                text += " (required)"
            elif action.default is not argparse.SUPPRESS:
                default = action.default
                if isinstance(default, (list, tuple)):
                    default = ",".join(map(str, default)) if default else "none"
                text += f" (default: {'none' if default is None else default})"
        return text


def plain(text: str) -> str:
    """Docstring text without reST markup (``x``, :mod:`x`, :class:`x`, trailing ::) for help output."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "").replace("::", ":")


def add_parser(subparsers, name: str, doc: str, help: str, parts: int | None = None) -> argparse.ArgumentParser:
    """A subcommand whose description is ``doc`` (paragraphs ``[:parts]``) without reST markup."""
    paragraphs = doc.strip().split("\n\n")
    description = plain("\n\n".join(paragraphs[:parts] if parts else paragraphs))
    p = subparsers.add_parser(name, help=help, description=description, formatter_class=HelpFormatter)
    p.set_defaults(_parser=p)
    return p


class _Deprecated(argparse.Action):
    """A hidden old spelling: stores into the new option's destination and prints a one-line note."""

    def __init__(self, option_strings, dest, new: str = "", converter=None, **kw):
        self.new, self.converter = new, converter
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        noted = parser.__dict__.setdefault("_deprecation_noted", set())
        if option_string not in noted:  # once per command line (it is parsed twice with --config)
            noted.add(option_string)
            print(f"jaxdd: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values if self.converter is None else self.converter(values))


def add_alias(p: argparse.ArgumentParser, old: str, new: str, converter=None) -> None:
    """Accept ``old`` as a hidden, deprecated spelling of the option ``new`` (same type, same destination)."""
    target = p._option_string_actions[new]
    kw = {"nargs": target.nargs} if target.nargs not in (None, 0) else {}
    if target.nargs == 0:
        raise TypeError(f"{new} is a switch; aliases are for options with a value")
    p.add_argument(old, dest=target.dest, action=_Deprecated, new=new, converter=converter, type=target.type,
                   choices=target.choices, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kw)


def add_dataset_args(p: argparse.ArgumentParser, default: str | None = DEFAULT_DATASET) -> None:
    p.add_argument("--dataset", default=default, help="dataset name (see jaxdd data list), tfds:NAME or a path")
    p.add_argument("--data-dir", default=None, help="where the dataset's files live (TFDS data_dir, IDX folder ...)")
    p.add_argument("--zca", action="store_true", help="ZCA-whiten the images (regularisation 0.1)")


def add_seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (same seed, same result)")


def add_model_arg(p: argparse.ArgumentParser, what: str = "network", default: str = DEFAULT_MODEL,
                  several: bool = False, old: tuple[str, ...] = ()) -> None:
    """``--model NAME`` (``several``: comma-separated names), listing the valid names; ``old`` spellings alias it."""
    from jaxdd.models import available_models

    names = ", ".join(available_models())
    p.add_argument("--model", default=default, metavar="NAME" + (",..." if several else ""),
                   help=f"{what}{' (comma-separated for several)' if several else ''}: one of {names}; "
                   "modifiers combine, e.g. convnet-w32-d2")
    for spelling in old:
        add_alias(p, spelling, "--model")


def add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="FILE|NAME",
                   help="settings from a get_config() file or a packaged config (jaxdd/configs/NAME.py); "
                   "flags given explicitly win; --config.FIELD=VALUE overrides one field")


def settings(args: argparse.Namespace) -> dict:
    """The command's settings: the namespace without the command names and the function."""
    return {k: v for k, v in vars(args).items() if k not in _INTERNAL}


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; ``--config FILE`` and ``--config.FIELD=VALUE`` set the subcommand's defaults
    (fields are its option destinations, typed by their defaults or the option's type), so flags given
    explicitly win over them."""
    from jaxdd.utils.config import ConfigError, apply_overrides, load_config, split_overrides

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rest, overrides = split_overrides(argv)
    except ConfigError as err:
        parser.error(str(err))
    with_config = bool(overrides) or any(a == "--config" or a.startswith("--config=") for a in rest)
    relaxed = [a for p in _parsers(parser) for a in p._actions if a.required] if with_config else []
    for action in relaxed:  # a config may supply what a flag requires: checked on the second parse
        action.required = False
    try:
        args = parser.parse_args(rest)
    finally:
        for action in relaxed:
            action.required = True
    sub = vars(args).pop("_parser", None)
    if sub is None or (getattr(args, "config", None) is None and not overrides):
        if overrides:
            parser.error("--config.FIELD=VALUE sets a field of a command's settings; put it after the command")
        return args
    actions = {a.dest: a for a in sub._actions if a.option_strings and a.dest not in _INTERNAL
               and a.dest != "help" and a.default is not argparse.SUPPRESS}
    values = {dest: a.default for dest, a in actions.items()}
    try:
        if args.config is not None:
            loaded = load_config(args.config).to_dict()
            unknown = sorted(set(loaded) - set(values))
            if unknown:
                apply_overrides(values, {unknown[0]: ""})  # raises, naming the known fields
            values.update(loaded)
        apply_overrides(values, overrides, {d: a.type for d, a in actions.items() if a.type is not None})
        for dest, value in values.items():
            choices = actions[dest].choices
            if choices is not None and value is not None and value not in choices:
                raise ConfigError(f"{dest}={value!r}: choose from {', '.join(map(str, choices))}")
    except ConfigError as err:
        sub.error(str(err))
    sub.set_defaults(**values)
    for action in sub._actions:
        if action.required and values.get(action.dest) is not None:
            action.required = False  # given by the config
    args = parser.parse_args(rest)
    vars(args).pop("_parser", None)
    return args


class SetAction(argparse.Action):
    """``--set FIELD=VALUE`` (repeatable) merged into a dict of settings (VALUE parsed as JSON, else a string)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from jaxdd.utils.config import ConfigError, parse_settings

        merged = dict(parse_settings(getattr(namespace, self.dest, None) or {}))
        try:
            merged.update(parse_settings([values]))
        except ConfigError as err:
            raise argparse.ArgumentError(self, str(err)) from None
        setattr(namespace, self.dest, merged)


def _parsers(parser: argparse.ArgumentParser):
    """``parser`` and every (sub)subcommand parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def parse_sets(items) -> dict:
    """``--set`` items as a dict (see :func:`jaxdd.utils.config.parse_settings`)."""
    from jaxdd.utils.config import parse_settings

    return parse_settings(items)
