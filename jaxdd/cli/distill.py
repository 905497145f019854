"""``jaxdd distill``: learn a synthetic set with a registered method (dc, dsa, dm, ...).

    jaxdd distill                                   # the embedded default: DM, IPC 1, minutes on a CPU
    jaxdd distill --method dc|dsa|dm --dataset NAME --ipc K --iterations N [--sdc LAMBDA]
                  [--subset subset.npz] [--weights scores.npz] [--init real|noise] --out runs/NAME [--resume]

Outputs in ``--out``: ``distilled/`` (the distilled set), ``results.json`` (config, evaluation,
timing), ``history.json`` (loss, synthetic-set GraNd, quick evaluations per iteration),
``grid.png``, ``difficulty.png``, ``loss.png`` and ``checkpoints/`` (``--resume`` continues a
killed run and ends bit-identical to an uninterrupted one). Method settings not covered by a
flag are set with ``--set FIELD=VALUE`` (e.g. ``--set outer_loop=5 --set metric=mse``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from jaxdd.cli._common import add_dataset_args, add_seed_arg, parse_sets

DEFAULT_METHOD = "dm"
# --budget quick (the default): a few CPU minutes; flags given explicitly win. --budget paper keeps
# the authors' settings (method config defaults and the evaluation preset's epochs / 5 models).
QUICK = {"iterations": 200, "batch_real": 64, "eval_epochs": 300, "eval_models": 3, "eval_every": 100}
PAPER = {"eval_every": 500}
# flag -> config field (applied only when given)
_FLAG_FIELDS = ("ipc", "sdc", "sdc_mode", "init", "lr_img", "batch_real", "class_batch", "prior", "match")


def register(subparsers) -> None:
    from jaxdd.distill import available_methods

    doc = __doc__.split("\n\n")
    p = subparsers.add_parser("distill", help="distil a dataset (DC, DSA, DM, ...; SDC, pruned subsets)",
                              description=doc[0] + "\n\n" + doc[1] + "\n\n" + doc[2],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default=DEFAULT_METHOD, choices=available_methods(),
                   help=f"distillation method (default {DEFAULT_METHOD})")
    add_dataset_args(p)
    p.add_argument("--model", default="convnet", help="network to distil with (default convnet)")
    p.add_argument("--ipc", type=int, default=1, help="synthetic images per class (default 1)")
    p.add_argument("--budget", default="quick", choices=["quick", "paper"],
                   help="defaults for the flags not given: quick = 200 iterations, real batch 64, final evaluation "
                   "3 models x 300 epochs, a quick evaluation every 100 iterations (minutes on a CPU); paper = "
                   "the authors' settings (DC/DSA 1000 iterations, DM 20000, real batch 256, the preset's "
                   "300/1000 epochs, 5 models)")
    p.add_argument("--iterations", type=int, default=None, help="distillation iterations (see --budget)")
    p.add_argument("--sdc", type=float, default=None, help="SDC weight lambda (default 0: off)")
    p.add_argument("--sdc-mode", default=None, choices=["mean", "batch"],
                   help="SDC penalty: mean per-example gradient norm (default) or batch-gradient norm")
    p.add_argument("--subset", default=None, help="pruned subset (.npz from `jaxdd prune`) used as the real data")
    p.add_argument("--weights", default=None,
                   help="difficulty scores (.npz with 'scores' [and 'train_indices']) turned into per-example "
                   "weights exp(-z/T) that favour easy examples (T = --weight-temperature)")
    p.add_argument("--weight-temperature", type=float, default=1.0,
                   help="T of the difficulty weights; negative favours hard examples (default 1)")
    p.add_argument("--init", default=None, choices=["real", "noise"], help="initial synthetic images (default real)")
    p.add_argument("--lr-img", type=float, default=None, help="image learning rate (default: the method's)")
    p.add_argument("--batch-real", type=int, default=None, help="real images per class per step (see --budget)")
    p.add_argument("--class-batch", type=int, default=None,
                   help="classes processed together (default: chosen from XLA's memory estimate against the "
                   "available memory, printed; setting it skips that check)")
    p.add_argument("--prior", default=None, help="ld3m: diffusion prior folder (from `jaxdd prior train`)")
    p.add_argument("--match", default=None, choices=["dm", "dc", "dsa", "mtt"],
                   help="ld3m: the matching loss computed on the generated images (default dm)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other method setting (repeatable), e.g. --set outer_loop=5")
    p.add_argument("--out", default=None, help="output folder (default runs/distill-METHOD-DATASET-ipcK)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=25, help="iterations between checkpoints (default 25)")
    p.add_argument("--track-every", type=int, default=None,
                   help="iterations between synthetic-set difficulty records (default: --checkpoint-every)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="iterations between quick evaluations (2 models x 50 epochs; default: 100 with --budget "
                   "quick, 500 with paper; 0: only the final evaluation)")
    p.add_argument("--eval-epochs", type=int, default=None, help="epochs of the final evaluation (see --budget)")
    p.add_argument("--eval-models", type=int, default=None, help="networks of the final evaluation (see --budget)")
    p.add_argument("--eval-preset", default=None, help="evaluation preset (default dc, or dc-dsa for dsa/dm)")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--devices", type=int, default=None, help="split the real batches over this many devices")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_seed_arg(p)
    p.set_defaults(func=cmd_distill)



def load_weights(path: str, real_dataset, temperature: float):
    """Per-example weights for the (possibly pruned) training set from a scores file."""
    import numpy as np

    from jaxdd.distill.losses import difficulty_weights

    with np.load(path, allow_pickle=False) as z:
        if "scores" not in z.files:
            raise ValueError(f"{path} has no 'scores' array; pass the .npz written by `jaxdd score` or `jaxdd prune`")
        scores = np.asarray(z["scores"], np.float64)
        idx = z["train_indices"] if "train_indices" in z.files else np.arange(len(scores))
    pos = {int(o): i for i, o in enumerate(idx)}
    missing = [int(o) for o in real_dataset.original_indices if int(o) not in pos]
    if missing:
        raise ValueError(f"{path} has no score for training examples {missing[:5]} of {real_dataset.name}; score "
                         "the same dataset (or a superset of the subset)")
    s = scores[[pos[int(o)] for o in real_dataset.original_indices]]
    return np.asarray(difficulty_weights(s, real_dataset.y_train, real_dataset.num_classes, temperature))


def cmd_distill(args: argparse.Namespace) -> int:
    from jaxdd.data import load_dataset
    from jaxdd.distill import DistillConfig, RealData, build_method, distill, method_spec
    from jaxdd.distill.driver import evaluation_rows
    from jaxdd.models import create_network
    from jaxdd.utils.io import format_table

    ds = load_dataset(args.dataset, data_dir=args.data_dir, zca=args.zca)
    train = ds
    if args.subset:
        from jaxdd.prune import load_subset

        train = load_subset(ds, args.subset)
    weights = load_weights(args.weights, train, args.weight_temperature) if args.weights else None
    real = RealData.from_dataset(train, weights=weights)
    net = create_network(args.model, num_classes=ds.num_classes, input_shape=ds.image_shape)

    overrides = {f: getattr(args, f) for f in _FLAG_FIELDS + ("iterations",) if getattr(args, f) is not None}
    fields = {f.name for f in dataclasses.fields(method_spec(args.method).config_cls)}
    for name, value in (QUICK if args.budget == "quick" else PAPER).items():
        if getattr(args, name) is not None:
            continue  # flags given explicitly win
        if name in _FLAG_FIELDS + ("iterations",):  # a method setting: only where the method has it
            if name in fields:
                overrides[name] = value
        else:
            setattr(args, name, value)
    overrides.update(parse_sets(args.set))
    mesh = None
    if args.devices is not None:
        from jaxdd.utils.mesh import data_mesh

        mesh = data_mesh(args.devices)
    method = build_method(args.method, net, mesh=mesh, dataset=ds, **overrides)
    out = Path(args.out or f"runs/distill-{args.method}-{ds.name}-ipc{method.config.ipc}")
    extra = {"command": "jaxdd distill", "budget": args.budget, "subset": args.subset, "weights": args.weights,
             "weight_temperature": args.weight_temperature if args.weights else None, "zca": args.zca}
    run = DistillConfig(seed=args.seed, checkpoint_every=args.checkpoint_every, track_every=args.track_every,
                        eval_every=args.eval_every, final_eval=not args.no_eval, eval_preset=args.eval_preset,
                        eval_final_epochs=args.eval_epochs, eval_final_models=args.eval_models,
                        progress=not args.no_progress, extra_config=extra)
    result = distill(method, real, ds, run, out=out, resume=args.resume, mesh=mesh)
    its = method.config.iterations
    print(f"{method.name}: {its} iterations on {ds.name} ({len(train.y_train)} real images), IPC "
          f"{method.config.ipc}, {result.seconds:.1f} s" + (f" (resumed at {result.resumed_from})"
                                                           if result.resumed_from is not None else ""))
    g = [h for h in result.history if "grand" in h]
    print(f"synthetic-set GraNd (fresh networks): {g[0]['grand']:.3f} at iteration {g[0]['iteration']} -> "
          f"{g[-1]['grand']:.3f} at {g[-1]['iteration']}")
    if result.evaluation is not None:
        print(format_table(evaluation_rows(method.name, method.config, result.evaluation)))
    print(f"wrote {out}/distilled/, results.json, history.json, grid.png, difficulty.png, loss.png, checkpoints/")
    return 0
