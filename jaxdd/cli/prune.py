"""``jaxdd prune``: keep a fraction of the training set chosen by difficulty score.

    jaxdd prune --dataset NAME --scores scores.npz --keep 0.6 --order easy|hard|random
                [--global] [--seed S] --out subset.npz

Keeps ``round(keep · n_c)`` (at least 1) examples of every class c (or of the whole set with
``--global``): the lowest scores (easy), the highest (hard), or a random draw. The scores must
come from ``jaxdd score`` on the same dataset. ``subset.npz`` is an npz dataset file: pass it as
``--dataset subset.npz`` to any command (distillation, evaluation, scoring). ``<out>.json``
records the config and the per-class counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from jaxdd.cli._common import add_dataset_args, add_seed_arg
from jaxdd.utils.io import check_output, format_table, write_json


def register(subparsers) -> None:
    from jaxdd.prune import ORDERS

    doc = __doc__.split("\n\n")
    p = subparsers.add_parser("prune", help="keep the easiest/hardest/random fraction of a dataset by score",
                              description="\n\n".join(doc[:3]), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p)
    p.add_argument("--scores", required=True, help="scores.npz written by jaxdd score")
    p.add_argument("--keep", type=float, required=True, help="fraction to keep, in (0, 1]")
    p.add_argument("--order", default="easy", choices=ORDERS, help="which examples to keep (default easy)")
    p.add_argument("--global", dest="global_", action="store_true", help="rank over the whole set, not per class")
    p.add_argument("--out", required=True, help="output .npz dataset file")
    add_seed_arg(p)
    p.set_defaults(func=cmd_prune)


def read_scores(path: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, dict]:
    """(scores, indices, labels, config) from a ``jaxdd score`` file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"scores file {path} does not exist; write it with jaxdd score --out {path}")
    with np.load(path, allow_pickle=False) as z:
        if "scores" not in z.files:
            raise ValueError(f"{path} has no 'scores' array (it has {sorted(z.files)}); write it with jaxdd score")
        config = json.loads(str(z["config"])) if "config" in z.files else {}
        return (z["scores"], z["indices"] if "indices" in z.files else None,
                z["labels"] if "labels" in z.files else None, config)


def cmd_prune(args: argparse.Namespace) -> int:
    from jaxdd.data import load_dataset
    from jaxdd.prune import check_aligned, check_keep, prune_with_indices, save_subset

    check_keep(args.keep)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must name an .npz file, got {args.out}")
    check_output(out)
    scores, indices, labels, score_config = read_scores(args.scores)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, zca=args.zca)
    check_aligned(ds, scores, indices, labels)
    sub, idx = prune_with_indices(ds, scores, args.keep, args.order, per_class=not args.global_, seed=args.seed)
    config = {"command": "prune", "dataset": ds.name, "dataset_arg": args.dataset, "data_dir": args.data_dir,
              "zca": args.zca, "scores": str(args.scores), "score_config": score_config, "keep": args.keep,
              "order": args.order, "per_class": not args.global_, "seed": args.seed}
    kept_scores = np.asarray(scores)[idx]
    save_subset(out, ds, sub, config, kept_scores)
    full_counts, kept_counts = ds.class_counts(), sub.class_counts()
    rows = []
    for c, name in enumerate(ds.class_names):
        s = kept_scores[sub.y_train == c]
        rows.append({"class": name, "total": int(full_counts[c]), "kept": int(kept_counts[c]),
                     "score min": float(s.min()) if len(s) else float("nan"),
                     "score max": float(s.max()) if len(s) else float("nan")})
    rows.append({"class": "all", "total": int(full_counts.sum()), "kept": int(kept_counts.sum()),
                 "score min": float(kept_scores.min()), "score max": float(kept_scores.max())})
    write_json(out.with_suffix(".json"), {"config": config, "per_class": rows, "subset": str(out)})
    print(format_table(rows))
    print(f"wrote {out} ({int(kept_counts.sum())} of {int(full_counts.sum())} examples) and {out.with_suffix('.json')}")
    return 0
