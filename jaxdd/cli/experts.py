"""``jaxdd experts``: train expert trajectories for trajectory matching (MTT, DATM).

    jaxdd experts --dataset NAME --num-experts N --epochs E --out buffers/NAME [--zca] [--subset subset.npz]
                  [--arch convnet] [--parallel 1] [--lr 0.01] [--batch 256] [--no-dsa] [--devices D] [--seed 0]

Trains N freshly initialised networks on the real training set (SGD lr 0.01, no momentum, batch
256, per-sample DSA; the MTT reference ``buffer.py``), ``--parallel`` at a time (vmapped; with
``--devices`` every batch is split over the devices), and saves every expert's parameters after
every epoch as one ``expert_XXXXX.npy`` (epochs + 1 rows) plus the index ``buffer.json`` (config,
dataset, parameter layout, per-expert accuracies). Rerunning the same command on the same folder
resumes: finished experts are kept, the next unfinished one is trained (a larger --num-experts
adds experts). Distil with ``jaxdd distill --method mtt|datm --set buffer=buffers/NAME``.
"""

from __future__ import annotations

import argparse
import time

from jaxdd.cli._common import add_dataset_args, add_seed_arg

TABLE = ["expert", "file", "train_acc", "test_acc", "seconds"]


def register(subparsers) -> None:
    doc = __doc__.split("\n\n")
    p = subparsers.add_parser("experts", help="train expert trajectories (MTT/DATM buffers), resumable",
                              description=doc[0] + "\n\n" + doc[1] + "\n\n" + doc[2],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_args(p)
    p.add_argument("--num-experts", type=int, required=True, help="number of experts in the buffer")
    p.add_argument("--epochs", type=int, default=50, help="epochs per expert (default 50, as MTT)")
    p.add_argument("--out", required=True, help="buffer folder (resumed if it exists)")
    p.add_argument("--subset", default=None, help="train on a subset (.npz from `jaxdd prune`)")
    p.add_argument("--arch", default="convnet", help="network (default convnet)")
    p.add_argument("--parallel", type=int, default=1,
                   help="experts trained at once, vmapped (default 1: XLA:CPU runs vmapped convolutions as grouped "
                   "convolutions, several times slower per model; raise it on a GPU/TPU)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01)")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default 0, as MTT)")
    p.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--no-dsa", action="store_true", help="train without DSA augmentation")
    p.add_argument("--devices", type=int, default=None, help="split every batch over this many devices")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_seed_arg(p)
    p.set_defaults(func=cmd_experts)


def cmd_experts(args: argparse.Namespace) -> int:
    from jaxdd.data import load_dataset
    from jaxdd.experts import ExpertConfig, expert_rows, train_experts
    from jaxdd.models import create_network
    from jaxdd.utils.io import check_output, format_table, write_json

    start = time.time()
    check_output(args.out, folder=True)
    ds = load_dataset(args.dataset, data_dir=args.data_dir, zca=args.zca)
    train = ds
    if args.subset:
        from jaxdd.prune import load_subset

        train = load_subset(ds, args.subset)
    net = create_network(args.arch, num_classes=ds.num_classes, input_shape=ds.image_shape)
    config = ExpertConfig(epochs=args.epochs, lr=args.lr, momentum=args.momentum, batch_size=args.batch,
                          dsa=not args.no_dsa)
    mesh = None
    if args.devices is not None:
        from jaxdd.utils.mesh import data_mesh

        mesh = data_mesh(args.devices)
    buffer = train_experts(train, net, args.out, args.num_experts, config, seed=args.seed, parallel=args.parallel,
                           mesh=mesh, subset=args.subset, progress=not args.no_progress)
    rows = expert_rows(buffer)
    elapsed = time.time() - start
    summary = buffer.path / "experts.json"
    write_json(summary, {"config": {"command": "experts", **{k: v for k, v in vars(args).items()
                                                              if k not in ("func", "command")}},
                         "buffer": buffer.describe(), "dataset": train.describe(), "experts": rows,
                         "seconds": round(elapsed, 1)})
    print(format_table(rows, TABLE))
    print(f"\n{buffer.num_experts} experts x {buffer.num_epochs} epochs of {buffer.network_name} on {train.name} "
          f"({len(train.y_train)} images) in {buffer.path} (index {buffer.path / 'buffer.json'}, summary {summary}; "
          f"{elapsed:.1f} s)")
    return 0
