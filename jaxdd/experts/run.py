"""``run_experts(config, out)``: what ``jaxdd experts`` runs: ``num_experts`` expert trajectories
trained on the (possibly pruned) training set into the buffer folder ``out``
(:func:`jaxdd.experts.train_experts`, resumable), plus the summary ``experts.json`` and a table.
``config`` holds the fields of ``jaxdd experts --help`` (a mapping, ``ConfigDict`` or namespace)."""

from __future__ import annotations

import time
from pathlib import Path

TABLE = ["expert", "file", "train_acc", "test_acc", "seconds"]


def run_experts(config, out: str | Path | None = None):
    """Train (or resume) the buffer the settings describe; returns the ``ExpertBuffer``."""
    from jaxdd.data import load_dataset
    from jaxdd.experts.training import ExpertConfig, expert_rows, train_experts
    from jaxdd.models import create_network
    from jaxdd.utils.config import as_fields
    from jaxdd.utils.io import check_output, format_table, require_local, write_json

    c = as_fields(config)
    out = out or c.out
    require_local(out, "--out", "the expert buffer (memory-mapped trajectory files)")
    start = time.time()
    check_output(out, folder=True)
    ds = load_dataset(c.dataset, data_dir=c.data_dir, zca=c.zca)
    train = ds
    if c.subset:
        from jaxdd.prune import load_subset

        train = load_subset(ds, c.subset)
    net = create_network(c.model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    expert_config = ExpertConfig(epochs=c.epochs, lr=c.lr, momentum=c.momentum, batch_size=c.batch_size,
                                 dsa=not c.no_dsa)
    mesh = None
    if c.devices is not None:
        from jaxdd.utils.mesh import data_mesh

        mesh = data_mesh(c.devices)
    buffer = train_experts(train, net, out, c.num_experts, expert_config, seed=c.seed, parallel=c.parallel,
                           mesh=mesh, subset=c.subset, progress=not c.no_progress)
    rows = expert_rows(buffer)
    elapsed = time.time() - start
    summary = buffer.path / "experts.json"
    write_json(summary, {"config": {"command": "experts", **vars(c)}, "buffer": buffer.describe(),
                         "dataset": train.describe(), "experts": rows, "seconds": round(elapsed, 1)})
    print(format_table(rows, TABLE))
    print(f"\n{buffer.num_experts} experts x {buffer.num_epochs} epochs of {buffer.network_name} on {train.name} "
          f"({len(train.y_train)} images) in {buffer.path} (index {buffer.path / 'buffer.json'}, summary {summary}; "
          f"{elapsed:.1f} s)")
    return buffer
