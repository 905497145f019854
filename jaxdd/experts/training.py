"""Training expert trajectories for trajectory matching (MTT / DATM), resumably.

As the MTT reference ``buffer.py`` (Cazenavette et al., CVPR 2022; mtt-distillation): each expert is a freshly
initialised network trained on the real training set with SGD (lr 0.01, no momentum, no weight
decay, batch 256, no lr decay) and per-sample DSA augmentation for E epochs (50 in the paper); its
parameters are recorded at initialisation and after every epoch. Training uses the one shared
trainer (:mod:`jaxdd.train`): ``parallel`` experts are vmapped together (worth it on a GPU/TPU; on
XLA:CPU a vmapped convolution becomes a grouped convolution, measured ~4x slower per model than one
model at a time, so the default is 1), and with ``mesh`` every minibatch is split over the devices.

Expert i is initialised and trained with its own key ``fold_in(key(seed), i)`` (data order and
augmentation per epoch from ``fold_in(that, epoch)``), so it is the same network whether it is
trained alone, in another group or after a resume. Each expert's rows are written to a
memory-mapped ``.expert_XXXXX.npy.partial`` file as the epochs finish; when its group is done the
file is renamed into place and then the index is updated, so a killed run resumes with the experts
missing from the index (a partial file is overwritten). TensorBoard events in the buffer folder hold
each finished expert's per-epoch loss and training accuracy (``expert_<i>/``) and its test accuracy.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.experts.buffer import (FORMAT, INDEX, VERSION, ExpertBuffer, dataset_record, expert_file,
                                  flatten_stacked, network_record, write_index)
from jaxdd.models import Network
from jaxdd.models.adapters import as_network
from jaxdd.train import Trainer, TrainConfig, evaluate_accuracy, fit
from jaxdd.utils.io import read_json
from jaxdd.utils.metric_log import MetricLog
from jaxdd.utils.run_loop import RunConfig, run_loop


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    """How experts are trained (defaults: the MTT reference ``buffer.py``)."""

    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    dsa: bool = True
    dsa_strategy: str | None = None  # None: jaxdd.augment.default_strategy(the dataset)

    def __post_init__(self):
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1:
            raise ValueError(f"expert epochs must be a positive integer, got {self.epochs!r}")
        # TrainConfig validates lr, momentum, weight decay and batch size
        self.train_config(1)

    def strategy(self, dataset) -> str | None:
        """The DSA strategy: ``dsa_strategy``, else the reference rule for ``dataset`` (a
        ``Dataset``, a name, or a channel count: ``jaxdd.augment.default_strategy``)."""
        if not self.dsa:
            return None
        from jaxdd.augment import default_strategy, parse_strategy

        s = self.dsa_strategy or default_strategy(dataset)
        parse_strategy(s)
        return s

    def train_config(self, dataset) -> TrainConfig:
        return TrainConfig(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                           batch_size=self.batch_size, epochs=self.epochs, schedule="constant",
                           augment=self.strategy(dataset))


def _expected_index(network: Network, dataset, config: ExpertConfig, seed: int, subset: str | None) -> dict:
    train = dataclasses.asdict(config.train_config(dataset))
    return {"format": FORMAT, "version": VERSION, "network": network_record(network),
            "dataset": dataset_record(dataset), "subset": subset, "train": train, "seed": int(seed)}


def _same_setup(found: dict, expected: dict) -> list[str]:
    """What differs between an existing buffer's index and this run (``subset``, a file name, and
    the expert list are informative)."""
    from jaxdd.utils.run_loop import json_roundtrip, record_diff

    skip = ("subset", "experts", "num_experts_requested")
    return record_diff({k: v for k, v in found.items() if k not in skip}, json_roundtrip(expected), skip)


def train_experts(dataset, network: Any, out: str | Path, num_experts: int, config: ExpertConfig = ExpertConfig(),
                  *, seed: int = 0, parallel: int = 1, mesh=None, subset: str | None = None,
                  progress: bool = True) -> ExpertBuffer:
    """Train (or finish) ``num_experts`` experts of ``network`` on ``dataset``'s training split into ``out``.

    An existing buffer in ``out`` is resumed if it was made with the same network, dataset (and the same
    training examples), ``config`` and ``seed`` (otherwise ``ValueError`` naming what differs); experts
    already in its index are kept, the missing ones are trained, ``parallel`` at a time.
    Returns the :class:`ExpertBuffer`. ``network`` may be an own model that can initialise fresh
    networks (``jaxdd.models.adapters.as_network``; then distil with the same model and name).
    """
    if not isinstance(network, Network):
        network = as_network(network, dataset.image_shape, dataset.num_classes)
    if not isinstance(num_experts, int) or isinstance(num_experts, bool) or num_experts < 1:
        raise ValueError(f"num_experts must be a positive integer, got {num_experts!r}")
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise ValueError(f"parallel (experts trained at once) must be a positive integer, got {parallel!r}")
    if tuple(dataset.image_shape) != tuple(network.input_shape) or dataset.num_classes != network.num_classes:
        raise ValueError(f"network {network.name!r} is built for {network.num_classes} classes of "
                         f"{network.input_shape} images but {dataset.name} has {dataset.num_classes} classes of "
                         f"{dataset.image_shape}; create the network for this dataset")
    out = Path(out)
    expected = _expected_index(network, dataset, config, seed, subset)
    index_path = out / INDEX
    if index_path.exists():
        found = read_json(index_path)
        diff = _same_setup(found, expected)
        if diff:
            raise ValueError(f"{out} already holds an expert buffer made with different settings ({'; '.join(diff)}); "
                             "resume with the same --arch/--dataset/--zca/--subset/--epochs/--lr/--seed or choose "
                             "another --out folder")
        index = found
    else:
        index = {**expected, "experts": []}
    done = {e["index"] for e in index["experts"] if (out / e["file"]).exists()}
    index["experts"] = [e for e in index["experts"] if e["index"] in done]
    todo = [i for i in range(num_experts) if i not in done]
    index["num_experts_requested"] = max(num_experts, int(index.get("num_experts_requested", 0)))
    write_index(out, index)

    trainer = Trainer(network, config.train_config(dataset), mesh=mesh)
    root = jax.random.key(seed)
    x, y = dataset.x_train, dataset.y_train
    num_params = index["network"]["num_params"]
    groups = [todo[g:g + parallel] for g in range(0, len(todo), parallel)]
    log = MetricLog(out)  # TensorBoard: per-epoch loss / train accuracy of every expert, and its test accuracy

    def train_group(_, g: int) -> tuple[None, dict]:
        """Train experts ``groups[g]`` together; their files and index entries are final when it returns."""
        group = groups[g]
        t0 = time.time()
        k_init = jnp.stack([jax.random.fold_in(jax.random.fold_in(root, i), 0) for i in group])
        k_train = jnp.stack([jax.random.fold_in(jax.random.fold_in(root, i), 1) for i in group])
        state = trainer.init(k_init)
        # each expert's rows go straight to a memory-mapped partial file (not kept in memory)
        partial = [out / f".{expert_file(i)}.partial" for i in group]
        maps = [np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(config.epochs + 1, num_params))
                for p in partial]

        def record(epoch: int, st, metrics=None) -> None:
            rows = flatten_stacked(st.variables["params"], len(group))
            for mm, row in zip(maps, rows):
                mm[epoch] = row

        record(0, state)  # epoch 0 = the initialisation
        state, history = fit(trainer, state, x, y, k_train, on_epoch=record, progress=progress,
                             desc=f"experts {group[0]}-{group[-1]}")
        test_acc = evaluate_accuracy(network, state.variables, dataset.x_test, dataset.y_test, mesh=mesh)
        seconds = (time.time() - t0) / len(group)
        for mm in maps:
            mm.flush()
        del maps, mm  # close the memory maps before renaming
        for m, i in enumerate(group):
            for h in history:
                log.scalars(h["epoch"], {"loss": float(h["loss"][m]), "train_acc": 100.0 * float(h["acc"][m])},
                            prefix=f"expert_{i}/")
            log.scalars(i, {"expert_test_acc": 100.0 * float(test_acc[m])})
            os.replace(partial[m], out / expert_file(i))
            index["experts"].append({
                "index": i, "file": expert_file(i), "train_loss": float(history[-1]["loss"][m]),
                "train_acc": round(100.0 * float(history[-1]["acc"][m]), 4),
                "test_acc": round(100.0 * float(test_acc[m]), 4), "seconds": round(seconds, 2)})
            index["experts"].sort(key=lambda e: e["index"])
            write_index(out, index)
        return None, {"experts": len(group)}

    # resume is by the index: the experts it lists are kept, the loop trains the groups of the others
    try:
        run_loop(train_group, None, RunConfig(steps=len(groups), unit="group", desc=f"experts ({len(done)} done)",
                                              progress=progress))
    finally:
        log.close()
    return ExpertBuffer(out)


def expert_rows(buffer: ExpertBuffer) -> list[dict]:
    """One table row per finished expert."""
    return [{"expert": e["index"], "file": e["file"], "train_acc": e["train_acc"], "test_acc": e["test_acc"],
             "seconds": e["seconds"]} for e in buffer.experts]

