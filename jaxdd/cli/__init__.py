"""The ``jaxdd`` command line.

Each module in this package is one subcommand group and defines ``register(subparsers)``, which
adds its parser(s) and sets ``func`` (a callable taking the parsed ``argparse.Namespace``).
Modules are discovered automatically, so adding a command means adding a module.

Every command first joins a multi-process job when there is one
(``jaxdd.utils.distributed.initialize``: ``--coordinator HOST:PORT --num-processes P
--process-id I``, given before or after the command, or a TPU pod / SLURM environment). In a
multi-process run a command's ``--devices`` defaults to all devices of all processes.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from jaxdd import __version__
from jaxdd.utils import distributed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxdd", description="Difficulty-aware dataset distillation in JAX/Flax.")
    parser.add_argument("--version", action="version", version=f"jaxdd {__version__}")
    distributed.add_arguments(parser, default=argparse.SUPPRESS)  # for --help; main() takes them out first
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def _split_distributed(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The multi-process flags (anywhere on the command line) and the remaining arguments."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # never eat a command's --n, --proc ...
    distributed.add_arguments(pre)
    return pre.parse_known_args(sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    from jaxdd.cli._common import parse_command_line

    parser = build_parser()
    dist, rest = _split_distributed(argv)
    args = parse_command_line(parser, rest)  # also --config FILE and --config.FIELD=VALUE
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if distributed.initialize_from_args(dist) > 1 and getattr(args, "devices", 0) is None:
            import jax

            args.devices = jax.device_count()  # a multi-process run shards over every process's devices
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:  # user errors and unwritable / full outputs: the message says what to do
        print(f"jaxdd {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C: one line (long runs say where their last checkpoint is)
        print(f"\njaxdd {args.command}: {err or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
