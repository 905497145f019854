"""Argument helpers shared by subcommands (dataset selection, seeds, output folders)."""

from __future__ import annotations

import argparse
import json

DEFAULT_DATASET = "embedded"


def add_dataset_args(p: argparse.ArgumentParser, default: str | None = DEFAULT_DATASET) -> None:
    p.add_argument("--dataset", default=default, help=f"dataset name or path (default: {default})")
    p.add_argument("--data-dir", default=None, help="where the dataset's files live (TFDS data_dir, IDX folder ...)")
    p.add_argument("--zca", action="store_true", help="ZCA-whiten the images (regularisation 0.1)")


def add_seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (same seed, same result)")


def parse_sets(items: list[str]) -> dict:
    """``--set FIELD=VALUE`` items -> a settings dict: ``["a=1", "b-c=mse"]`` -> ``{"a": 1, "b_c": "mse"}``
    (values parsed as JSON, else kept as strings; dashes in field names become underscores)."""
    out = {}
    for item in items:
        field, sep, value = item.partition("=")
        field = field.strip().replace("-", "_")
        if not sep or not field:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[field] = json.loads(value)
        except json.JSONDecodeError:
            out[field] = value
    return out
