"""``jaxdd score``: per-example difficulty scores of a dataset's training examples.

    jaxdd score --dataset NAME --score grand|grand-last|el2n|loss|confidence|misclass|forgetting
                --models K --epochs E [--score-epochs 0,5,10] [--model convnet] --out scores.npz
    jaxdd score --dataset NAME --score loss --checkpoint DIR [--model convnet] --out scores.npz

Without ``--checkpoint`` K seeded models are trained together for E epochs (SGD lr 0.01, momentum
0.9, weight decay 5e-4, batch 256, no lr decay) and scored at the chosen epochs (default: the
last; 0 = at initialisation); the score is the mean over models and epochs. With ``--checkpoint``
the trained model(s) stored there (``jaxdd.utils.checkpoint``) are scored as they are.

Writes ``scores.npz`` (``scores`` aligned with the training examples, ``indices`` into the full
training split, ``labels``, ``raw`` per epoch/model, ``config`` as JSON), ``<out>.json`` (config and
per-class summary), ``<out>_extremes.png`` (per class: easiest 8 | hardest 8) and
``<out>_hist.png`` (a histogram per class). Easy = low score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jaxdd.cli._common import add_dataset_args, add_seed_arg
from jaxdd.utils.io import check_output, format_table, save_npz, write_json


def register(subparsers) -> None:
    from jaxdd.difficulty.drivers import SCORES

    doc = __doc__.split("\n\n")
    p = subparsers.add_parser("score", help="per-example difficulty scores (GraNd, EL2N, loss, ...)",
                              description="\n\n".join(doc[:3]), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p)
    p.add_argument("--score", default="el2n", choices=SCORES, help="which score (default el2n)")
    p.add_argument("--model", default="convnet", help="network (default convnet)")
    p.add_argument("--models", type=int, default=4, help="K: models trained and averaged (default 4)")
    p.add_argument("--epochs", type=int, default=10, help="E: training epochs (default 10)")
    p.add_argument("--score-epochs", default=None, help="comma-separated epochs at which to score (default: E)")
    p.add_argument("--checkpoint", default=None, help="score the trained model(s) in this checkpoint folder instead")
    p.add_argument("--step", type=int, default=None, help="with --checkpoint: which step (default latest)")
    p.add_argument("--resume-dir", default=None, help="save the ensemble run here after every epoch; rerunning "
                   "the same command resumes from the latest epoch")
    p.add_argument("--lr", type=float, default=0.01, help="training learning rate (default 0.01)")
    p.add_argument("--train-batch", type=int, default=256, help="training batch size (default 256)")
    p.add_argument("--batch-size", type=int, default=256, help="scoring batch size (default 256)")
    p.add_argument("--method", default="auto", choices=("auto", "direct", "ghost"),
                   help="conv weight-gradient norm form for grand (default auto)")
    p.add_argument("--devices", type=int, default=None, help="split batches over this many devices (default one)")
    p.add_argument("--per-class-png", type=int, default=8, help="examples per class in the extremes PNG (default 8)")
    p.add_argument("--out", required=True, help="output .npz file")
    add_seed_arg(p)
    p.set_defaults(func=cmd_score)


def _epochs_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--score-epochs expects comma-separated integers, got {text!r}") from None


def cmd_score(args: argparse.Namespace) -> int:
    import jax

    from jaxdd.data import load_dataset
    from jaxdd.difficulty import drivers, plots
    from jaxdd.models import create_network
    from jaxdd.train import TrainConfig
    from jaxdd.utils.mesh import data_mesh

    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must name an .npz file, got {args.out}")
    check_output(out)
    t0 = time.time()
    ds = load_dataset(args.dataset, data_dir=args.data_dir, zca=args.zca)
    net = create_network(args.model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    mesh = data_mesh(args.devices) if args.devices else None
    config = {"command": "score", "dataset": ds.name, "dataset_arg": args.dataset, "data_dir": args.data_dir,
              "zca": args.zca, "score": args.score, "model": args.model, "seed": args.seed,
              "batch_size": args.batch_size, "method": args.method, "devices": args.devices or 1}
    if args.checkpoint:
        variables, meta = drivers.load_model(net, args.checkpoint, args.step)
        raw = drivers.score_models(net, variables, ds.x_train, ds.y_train, args.score, batch_size=args.batch_size,
                                   mesh=mesh, method=args.method)[None]
        config.update(checkpoint=str(args.checkpoint), step=args.step, checkpoint_metadata=meta)
        epochs = []
    else:
        train = TrainConfig(lr=args.lr, batch_size=args.train_batch, schedule="constant")
        res = drivers.ensemble_scores(net, ds.x_train, ds.y_train, jax.random.key(args.seed), score=args.score,
                                      num_models=args.models, epochs=args.epochs,
                                      score_epochs=_epochs_list(args.score_epochs), train_config=train,
                                      batch_size=args.batch_size, mesh=mesh, method=args.method,
                                      checkpoint_dir=args.resume_dir)
        raw, epochs = res.raw, list(res.epochs)
        config.update(res.config)
        config["final_train_acc"] = res.train_acc[-1].tolist() if len(res.train_acc) else []
    scores = raw.mean(axis=(0, 1))
    config["seconds"] = round(time.time() - t0, 1)
    save_npz(out, scores=scores.astype(np.float32), indices=ds.original_indices, labels=ds.y_train,
             raw=raw.astype(np.float32), epochs=np.asarray(epochs, np.int32), config=np.asarray(json.dumps(config,
                                                                                                         default=str)))
    rows = plots.class_summary(scores, ds.y_train, ds.class_names)
    stem = out.with_suffix("")
    png = plots.save_extremes_grid(f"{stem}_extremes.png", ds, scores, per_class=args.per_class_png)
    hist = plots.save_class_histograms(f"{stem}_hist.png", scores, ds.y_train, ds.class_names,
                                       title=f"{args.score} on {ds.name}", xlabel=args.score)
    write_json(stem.with_suffix(".json"), {"config": config, "per_class": rows, "files": {
        "scores": str(out), "extremes_png": png, "histogram_png": hist}})
    print(format_table(rows, ["class", "n", "mean", "median", "min", "max", "inf"]))
    print(f"wrote {out}, {stem.with_suffix('.json')}, {png}, {hist} ({config['seconds']} s)")
    return 0
