"""The evaluation protocol: train fresh networks on a set only, test them on the real test set.

Accuracy of a training set S (distilled, random real or the full data) under a preset
(:mod:`jaxdd.evaluate.presets`): ``num_models`` freshly initialised networks are trained together on
S with :mod:`jaxdd.train` and tested on ``dataset.x_test``; the result is the list of per-model test
accuracies (in %) and their mean ± std (population std, ``np.std``, as the reference code). This is
the protocol of DC/DSA/DM/MTT/DATM (``evaluate_synset`` of VICO-UoE/DatasetCondensation and
GeorgeCazenavette/mtt-distillation); always report the random-real baseline (IPC
random real images per class) under the same preset next to a distilled set.

``lr-grid``: a held-out split of the real training data (``holdout_indices``: 10 % at random, at most
5,000 images) scores one model per candidate lr trained on S; the best (ties: the smaller lr) is used
for the final models. For a distilled set the held-out images may have been seen by the distillation
(it used the whole training split); the random-real baseline samples from the rest, and ``full_data``
selects the lr with models trained on the rest, then trains the final models on everything.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jaxdd.data.distilled import DistilledSet, validate
from jaxdd.evaluate.presets import Preset, get_preset
from jaxdd.models.adapters import as_network
from jaxdd.train import Trainer, evaluate_accuracy, fit
from jaxdd.utils.labels import hard_labels, is_soft

HOLDOUT_FRACTION = 0.1
HOLDOUT_MAX = 5000


def holdout_indices(key: jax.Array, n: int, fraction: float = HOLDOUT_FRACTION,
                    max_size: int = HOLDOUT_MAX) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held_out): sorted disjoint indices of ``range(n)``; ``held_out`` is a random
    ``min(max(1, round(fraction n)), max_size)`` of them."""
    if n < 2:
        raise ValueError(f"need at least 2 training images to hold some out for the lr grid, got {n}")
    size = min(max(1, int(round(fraction * n))), max_size, n - 1)
    perm = np.asarray(jax.random.permutation(key, n))
    return np.sort(perm[size:]), np.sort(perm[:size])


def _prepare_labels(y: Any, num_classes: int, soft: bool) -> tuple[np.ndarray, str]:
    """Labels as the preset trains on them and a note saying what was used."""
    y = np.asarray(y)
    if not is_soft(y):
        return y.astype(np.int32), "hard"
    rows = y.astype(np.float64)
    if np.any(rows < -1e-6) or not np.allclose(rows.sum(-1), 1.0, atol=1e-3):
        raise ValueError("soft labels must be probability rows (non-negative, each summing to 1); if they are "
                         "logits, store softmax(logits) instead")
    if soft:
        return y.astype(np.float32), "soft"
    return hard_labels(y).astype(np.int32), "argmax of soft labels (the preset trains on hard labels)"


def _num_models(preset: Preset, num_models: int | None) -> int:
    m = preset.num_models if num_models is None else num_models
    if not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"num_models must be a positive integer, got {m!r}")
    return int(m)


def _check_lr(lr: Any) -> float:
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"the learning rate must be a positive finite number, got {lr}")
    return lr


def select_lr(x: Any, y: Any, x_val: Any, y_val: Any, dataset, arch: Any, preset: str | Preset, key: jax.Array,
              *, epochs: int | None = None, mesh=None, progress: bool = True) -> tuple[float, dict[float, float]]:
    """Pick the lr of ``preset.lr_grid`` whose model, trained on (x, y), is most accurate on
    (x_val, y_val). One model per candidate, all trained at once (per-model lr). Returns
    (lr, {lr: held-out accuracy in %})."""
    p = get_preset(preset)
    grid = p.lr_grid or (p.config.lr,)
    cfg = p.train_config(dataset, epochs)
    y, _ = _prepare_labels(y, dataset.num_classes, cfg.soft_labels)
    net = as_network(arch, dataset.image_shape, dataset.num_classes)
    trainer = Trainer(net, cfg, mesh=mesh)
    k_init, k_train = jax.random.split(key)
    state, _ = fit(trainer, trainer.init(k_init, len(grid)), x, y, k_train, lr=np.asarray(grid, np.float32),
                   progress=progress, desc=f"{net.name} lr grid")
    accs = np.round(100.0 * evaluate_accuracy(net, state.variables, x_val, np.asarray(y_val), mesh=mesh)
                    .astype(np.float64), 4)
    best = int(np.argmax(accs))  # first maximum: ties go to the smaller lr (grid is ascending)
    return float(grid[best]), {float(g): float(a) for g, a in zip(grid, accs)}


def evaluate_set(x: Any, y: Any, dataset, arch: Any = "convnet", preset: str | Preset = "dc",
                 key: jax.Array | None = None, num_models: int | None = None, lr: float | None = None,
                 mesh=None, *, epochs: int | None = None, holdout: tuple[Any, Any] | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Test accuracy of ``num_models`` fresh ``arch`` networks trained on (x, y) only (``arch``: a
    network name, or a ``Network`` / own model, see ``jaxdd.models.adapters.as_network``).

    ``x`` (N, H, W, C) normalised like ``dataset``; ``y`` int labels (N,) or probability rows (N, C)
    (trained with soft CE under ``datm``; otherwise their argmax is used and noted). ``lr``
    overrides the preset's (required for ``mtt``/``datm``: the set's learned lr); under ``lr-grid``
    without ``lr`` the lr is selected on ``holdout`` = (x_val, y_val) (default: a held-out split of
    ``dataset``'s training data). Returns {"arch", "preset", "accs" (%), "mean", "std", "lr",
    "epochs", "num_models", "train_size", "labels", "config", ["lr_grid"]}.
    """
    if key is None:
        raise ValueError("evaluate_set needs an explicit PRNG key: key=jax.random.key(seed)")
    p = get_preset(preset)
    m = _num_models(p, num_models)
    cfg = p.train_config(dataset, epochs)
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(dataset.image_shape):
        raise ValueError(f"images of shape {x.shape} do not match {dataset.name}'s images "
                         f"(N, {', '.join(map(str, dataset.image_shape))}); evaluate on the dataset they came from")
    validate(x, y, dataset.num_classes)
    y, label_note = _prepare_labels(y, dataset.num_classes, cfg.soft_labels)
    k_init, k_train, k_grid = jax.random.split(key, 3)
    grid = None
    if lr is None:
        if p.lr_from_set:
            raise ValueError(f"preset {p.name!r} trains with the set's learned lr, but none was given: pass lr "
                             "(DistilledSet.lr, or --lr), or use the dc / dc-dsa preset")
        if p.lr_grid:
            if holdout is None:
                k_split, k_grid = jax.random.split(k_grid)
                _, val = holdout_indices(k_split, len(dataset.y_train))
                holdout = (dataset.x_train[val], dataset.y_train[val])
            lr, grid = select_lr(x, y, holdout[0], holdout[1], dataset, arch, p, k_grid, epochs=epochs, mesh=mesh,
                                 progress=progress)
        else:
            lr = cfg.lr
    lr = _check_lr(lr)
    net = as_network(arch, dataset.image_shape, dataset.num_classes)
    trainer = Trainer(net, cfg, mesh=mesh)
    state, _ = fit(trainer, trainer.init(k_init, m), x, y, k_train, lr=lr, progress=progress,
                   desc=f"{net.name} {p.name} ({m} models)")
    accs = np.round(100.0 * evaluate_accuracy(net, state.variables, dataset.x_test, dataset.y_test, mesh=mesh)
                    .astype(np.float64), 4)
    result = {"arch": net.name, "preset": p.name, "accs": accs.tolist(), "mean": round(float(np.mean(accs)), 4),
              "std": round(float(np.std(accs)), 4), "lr": lr, "epochs": cfg.epochs, "num_models": m,
              "train_size": len(x), "labels": label_note, "config": dataclasses.asdict(cfg)}
    if grid is not None:
        result["lr_grid"] = grid
    return result


def check_compatible(distilled: DistilledSet, dataset) -> None:
    """Raise ``ValueError`` unless ``distilled`` was made from (a set normalised like) ``dataset``."""
    if distilled.num_classes != dataset.num_classes:
        raise ValueError(f"the distilled set has {distilled.num_classes} classes but {dataset.name} has "
                         f"{dataset.num_classes}; evaluate on the dataset it was distilled from ({distilled.dataset})")
    if tuple(distilled.images.shape[1:]) != tuple(dataset.image_shape):
        raise ValueError(f"distilled images are {tuple(distilled.images.shape[1:])} but {dataset.name} images are "
                         f"{tuple(dataset.image_shape)}; evaluate on {distilled.dataset} (same image size)")
    if distilled.zca != (dataset.zca is not None):
        fix = "load the dataset with zca=True (--zca)" if distilled.zca else "load the dataset without zca"
        raise ValueError(f"the distilled set is {'' if distilled.zca else 'not '}ZCA-whitened but {dataset.name} "
                         f"is {'not ' if distilled.zca else ''}: {fix}")
    same = np.allclose(distilled.mean, dataset.mean, atol=1e-3) and np.allclose(distilled.std, dataset.std, atol=1e-3)
    if not same:
        raise ValueError(f"the distilled set was normalised with mean {np.round(distilled.mean, 4).tolist()}, std "
                         f"{np.round(distilled.std, 4).tolist()} but {dataset.name} uses mean "
                         f"{np.round(dataset.mean, 4).tolist()}, std {np.round(dataset.std, 4).tolist()}: evaluate on "
                         f"the dataset it was distilled from ({distilled.dataset})")


def evaluate_distilled(distilled: DistilledSet, dataset, archs: Sequence[Any] = ("convnet",),
                       preset: str | Preset = "dc", key: jax.Array | None = None, num_models: int | None = None,
                       lr: float | None = None, mesh=None, *, epochs: int | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """Cross-architecture evaluation of a distilled set: :func:`evaluate_set` for every arch (same key;
    names, or networks / own models).

    Under ``mtt``/``datm`` the set's learned lr is used unless ``lr`` is given. Returns
    {"results": [one evaluate_set dict per arch], "distilled": {dataset, ipc, size, soft_labels, lr}}.
    """
    from tqdm.auto import tqdm

    if key is None:
        raise ValueError("evaluate_distilled needs an explicit PRNG key: key=jax.random.key(seed)")
    archs = list(archs)
    if not archs:
        raise ValueError("archs is empty: name at least one network, e.g. ['convnet']")
    check_compatible(distilled, dataset)
    p = get_preset(preset)
    if lr is None and p.lr_from_set:
        lr = distilled.lr
        if lr is None:
            raise ValueError(f"preset {p.name!r} needs the set's learned lr but this distilled set has none: pass lr "
                             "(--lr) or use the dc / dc-dsa preset")
    results = []
    for arch in tqdm(archs, desc="architectures", disable=not progress or len(archs) == 1, leave=False):
        results.append(evaluate_set(distilled.images, distilled.labels, dataset, arch, p, key, num_models, lr, mesh,
                                    epochs=epochs, progress=progress))
    info = {"dataset": distilled.dataset, "ipc": distilled.ipc, "size": int(len(distilled.images)),
            "soft_labels": distilled.soft_labels, "lr": distilled.lr}
    return {"results": results, "distilled": info}


def random_real_baseline(dataset, ipc: int, arch: str = "convnet", preset: str | Preset = "dc",
                         key: jax.Array | None = None, num_models: int | None = None, lr: float | None = None,
                         mesh=None, *, epochs: int | None = None, progress: bool = True,
                         return_set: bool = False, sampler: Callable | None = None):
    """Accuracy of ``ipc`` random real training images per class under ``preset``
    (``jaxdd.data.random_real``), or of the images ``sampler(key, dataset, ipc) -> (x, y)`` chooses
    (a selection baseline, e.g. ``jaxdd.prune.coreset.coreset_sampler("kcenter")``). Returns the
    :func:`evaluate_set` dict with "ipc" added, or (dict, x, y) with ``return_set=True`` (e.g. to
    save an image grid of the set)."""
    from jaxdd.data.sampler import random_real

    if key is None:
        raise ValueError("random_real_baseline needs an explicit PRNG key: key=jax.random.key(seed)")
    p = get_preset(preset)
    k_sample, k_split, k_eval = jax.random.split(key, 3)
    pool, holdout = dataset, None
    if p.lr_grid and lr is None:  # sample the set from the images the lr grid does not score on
        rest, val = holdout_indices(k_split, len(dataset.y_train))
        pool, holdout = dataset.subset(rest), (dataset.x_train[val], dataset.y_train[val])
    x, y = (sampler or random_real)(k_sample, pool, ipc)
    x, y = np.asarray(x), np.asarray(y)
    result = evaluate_set(x, y, dataset, arch, p, k_eval, num_models, lr, mesh, epochs=epochs, holdout=holdout,
                          progress=progress)
    result = {"ipc": int(ipc), **result}
    return (result, x, y) if return_set else result


def full_data(dataset, arch: str = "convnet", preset: str | Preset = "dc", key: jax.Array | None = None,
              num_models: int | None = None, lr: float | None = None, mesh=None, *, epochs: int | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Accuracy of networks trained on the whole training split under ``preset`` (the upper bound
    next to distilled sets). Under ``lr-grid`` the lr is chosen with models trained on the training
    data minus a held-out split, then the final models train on everything."""
    if key is None:
        raise ValueError("full_data needs an explicit PRNG key: key=jax.random.key(seed)")
    p = get_preset(preset)
    k_split, k_grid, k_eval = jax.random.split(key, 3)
    grid = None
    if p.lr_grid and lr is None:
        rest, val = holdout_indices(k_split, len(dataset.y_train))
        lr, grid = select_lr(dataset.x_train[rest], dataset.y_train[rest], dataset.x_train[val],
                             dataset.y_train[val], dataset, arch, p, k_grid, epochs=epochs, mesh=mesh,
                             progress=progress)
    result = evaluate_set(dataset.x_train, dataset.y_train, dataset, arch, p, k_eval, num_models, lr, mesh,
                          epochs=epochs, progress=progress)
    if grid is not None:
        result["lr_grid"] = grid
    return result
