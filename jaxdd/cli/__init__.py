"""The ``jaxdd`` command line.

Each module in this package is one subcommand group and defines ``register(subparsers)``, which
adds its parser(s) and sets ``func`` (a callable taking the parsed ``argparse.Namespace``).
Modules are discovered automatically, so adding a command means adding a module.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from jaxdd import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxdd", description="Difficulty-aware dataset distillation in JAX/Flax.")
    parser.add_argument("--version", action="version", version=f"jaxdd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from jaxdd.cli._common import parse_command_line

    parser = build_parser()
    args = parse_command_line(parser, argv)  # also --config FILE and --config.FIELD=VALUE
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:  # user errors and unwritable / full outputs: the message says what to do
        print(f"jaxdd {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C: one line (long runs say where their last checkpoint is)
        print(f"\njaxdd {args.command}: {err or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
