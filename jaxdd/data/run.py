"""What ``jaxdd data list`` and ``jaxdd data info`` run: the table of known datasets, and the
description of one (shape, classes, per-class counts, mean/std, source)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxdd.utils.io import check_output, format_table, write_json


def run_data_list(config, out: str | Path | None = None) -> list[dict]:
    """The table of known datasets (and, with ``out``, the same as JSON)."""
    from jaxdd.data.registry import dataset_catalog

    if out:
        check_output(out)
    rows = dataset_catalog()
    print(format_table(rows, ["name", "aliases", "kind", "status", "description"]))
    print("\nAlso accepted: tfds:NAME (TensorFlow Datasets) and paths to an .npz file, an IDX folder, a CIFAR "
          "pickle folder or archive, or an image-folder tree (train/<class>/, val/<class>/).")
    if out:
        write_json(out, {"config": {"command": "data list"}, "datasets": rows})
        print(f"wrote {out}")
    return rows


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


def run_data_info(config, out: str | Path | None = None) -> dict:
    """Describe the dataset ``config.name`` (shape, classes, per-class counts, mean/std, source); with
    ``out`` also as JSON. ``config`` holds the fields of ``jaxdd data info --help``."""
    from jaxdd.data.registry import load_dataset
    from jaxdd.utils.config import as_fields

    args = as_fields(config)
    if out:
        check_output(out)
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
    if out:
        write_json(out, {"config": config, "dataset": desc})
        print(f"wrote {out}")
    return desc
