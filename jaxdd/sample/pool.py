"""Pools: candidate images per class, with provenance, that DGS chooses a distilled set from.

A pool can come from several runs of a distillation method with different seeds, snapshots along
one run, generated images, or real images (DGS is then a core-set selector). Pool size is
typically 5 x IPC per class.

**On disk** a pool is a folder with

* ``pool.npz``: ``images`` (N, H, W, C) float32, normalised like the dataset
  (``(x - mean) / std``, then ZCA if ``zca``); ``labels`` (N,) int32; and the provenance of every
  image: ``run`` (index into ``sources``), ``seed`` (the seed of that run), ``iteration`` (the
  distillation iteration of the snapshot; -1 for real / unknown) and ``source_index`` (the image's
  index in its source: the synthetic slot, or the real training index); -1 where unknown;
* ``pool.json``: ``format_version``, ``dataset``, ``num_classes``, ``mean``, ``std``, ``zca``,
  ``per_class`` sizes, ``sources`` (one record per run: ``kind`` = distill | real | distilled |
  npz, method, seed, path, config ...) and the ``config`` that built the pool.

:func:`load_pool` also reads a distilled-set folder (``distilled.npz`` + ``distilled.json``) and
any ``.npz`` with ``images`` and ``labels`` (optional provenance arrays and ``mean``/``std``):
uint8 images are pixels and are normalised with the dataset's statistics; float images are taken as
normalised with the npz's ``mean``/``std`` if present, else with the dataset's.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.data.dataset import Dataset
from jaxdd.data.distilled import DistilledSet, validate
from jaxdd.data.sampler import ClassIndex, class_sample_indices
from jaxdd.utils.io import read_json, save_npz, write_json
from jaxdd.utils.labels import hard_labels

POOL_FORMAT_VERSION = 1
PROVENANCE = ("run", "seed", "iteration", "source_index")


@dataclasses.dataclass(frozen=True, eq=False)
class Pool:
    images: np.ndarray  # (N, H, W, C) float32, normalised
    labels: np.ndarray  # (N,) int32
    num_classes: int
    dataset: str
    mean: np.ndarray
    std: np.ndarray
    run: np.ndarray  # (N,) int32 index into ``sources``
    seed: np.ndarray  # (N,) int64 seed of the source run (-1 unknown)
    iteration: np.ndarray  # (N,) int64 distillation iteration (-1 real / unknown)
    source_index: np.ndarray  # (N,) int64 index within the source (-1 unknown)
    zca: bool = False
    sources: tuple = ()  # one dict per run
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        labels = np.asarray(self.labels)
        if labels.ndim != 1:
            raise ValueError(f"pool labels must be hard class indices (N,), got shape {labels.shape}; "
                             "use labels.argmax(-1) for soft labels")
        validate(self.images, labels, self.num_classes)
        for name in PROVENANCE:
            if np.shape(getattr(self, name)) != labels.shape:
                raise ValueError(f"pool provenance {name!r} needs one entry per image ({len(labels)}), "
                                 f"got shape {np.shape(getattr(self, name))}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.images)[1:])

    def class_sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def provenance(self, indices: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``run``, ``seed``, ``iteration``, ``source_index`` of the given images (all by default)."""
        idx = slice(None) if indices is None else np.asarray(indices)
        return {name: np.asarray(getattr(self, name))[idx] for name in PROVENANCE}

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Pool":
        idx = np.asarray(indices, np.int64)
        return dataclasses.replace(self, images=np.asarray(self.images)[idx], labels=np.asarray(self.labels)[idx],
                                   **self.provenance(idx))

    def denormalized(self) -> np.ndarray:
        if self.zca:
            raise ValueError("pool images are ZCA-whitened: map them back with the whitened Dataset.denormalize")
        return np.clip(np.asarray(self.images) * self.std + self.mean, 0.0, 1.0)

    def for_dataset(self, ds: Dataset) -> "Pool":
        """This pool checked against ``ds`` (image shape, classes, ZCA) and re-normalised with
        ``ds``'s mean/std if they differ: ``x' = (x * std_pool + mean_pool - mean_ds) / std_ds``."""
        if self.image_shape != ds.image_shape:
            raise ValueError(f"pool images are {self.image_shape} but {ds.name} images are {ds.image_shape}: "
                             "build the pool for this dataset (same image size and channels)")
        if self.num_classes != ds.num_classes:
            raise ValueError(f"the pool has {self.num_classes} classes but {ds.name} has {ds.num_classes}")
        if self.zca != (ds.zca is not None):
            want = "with --zca" if self.zca else "without --zca"
            raise ValueError(f"the pool is {'' if self.zca else 'not '}ZCA-whitened: load the dataset {want}")
        same = np.allclose(self.mean, ds.mean, atol=1e-6) and np.allclose(self.std, ds.std, atol=1e-6)
        if same or self.zca:  # whitened pools are taken as whitened with the dataset's own transform
            return self
        pixels = np.asarray(self.images) * self.std + self.mean
        return dataclasses.replace(self, images=((pixels - ds.mean) / ds.std).astype(np.float32),
                                   mean=np.asarray(ds.mean, np.float32), std=np.asarray(ds.std, np.float32))

    def to_distilled(self, indices: Sequence[int] | np.ndarray, config: dict | None = None) -> DistilledSet:
        """The chosen images as a distilled set (provenance recorded in ``config['provenance']``)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        prov = {k: v.tolist() for k, v in self.provenance(idx).items()}
        return DistilledSet(images=np.asarray(self.images, np.float32)[idx], labels=np.asarray(self.labels)[idx],
                            num_classes=self.num_classes, dataset=self.dataset, mean=self.mean, std=self.std,
                            zca=self.zca, config={**(config or {}), "pool_indices": idx.tolist(), "provenance": prov})

    def describe(self) -> dict:
        return {"format_version": POOL_FORMAT_VERSION, "dataset": self.dataset, "num_classes": self.num_classes,
                "size": len(self), "per_class": self.class_sizes().tolist(), "image_shape": list(self.image_shape),
                "mean": self.mean, "std": self.std, "zca": self.zca, "sources": list(self.sources),
                "config": self.config}

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        save_npz(folder / "pool.npz", images=np.asarray(self.images, np.float32),
                 labels=np.asarray(self.labels, np.int32), **self.provenance())
        write_json(folder / "pool.json", self.describe())
        return folder


def make_pool(images, labels, num_classes: int, dataset: str, mean, std, *, zca: bool = False,
              run=None, seed=None, iteration=None, source_index=None, sources: Sequence[dict] = (),
              config: dict | None = None) -> Pool:
    """A :class:`Pool` with provenance arrays defaulting to run 0 and -1 (unknown)."""
    labels = np.asarray(labels).astype(np.int32)
    n = len(labels)

    def col(v, default, dtype):
        return np.full(n, default, dtype) if v is None else np.broadcast_to(np.asarray(v, dtype), (n,)).copy()

    return Pool(images=np.asarray(images, np.float32), labels=labels, num_classes=int(num_classes),
                dataset=dataset, mean=np.asarray(mean, np.float32), std=np.asarray(std, np.float32),
                run=col(run, 0, np.int32), seed=col(seed, -1, np.int64), iteration=col(iteration, -1, np.int64),
                source_index=col(source_index, -1, np.int64), zca=bool(zca), sources=tuple(sources),
                config=dict(config or {}))


def concatenate_pools(pools: Sequence[Pool]) -> Pool:
    """One pool holding all images of ``pools`` (same dataset shape and normalisation); the
    ``run`` indices are offset so that they keep pointing at the right ``sources`` record."""
    if not pools:
        raise ValueError("no pools to concatenate")
    first = pools[0]
    for p in pools[1:]:
        if (p.image_shape, p.num_classes, p.zca) != (first.image_shape, first.num_classes, first.zca) or not (
                np.allclose(p.mean, first.mean) and np.allclose(p.std, first.std)):
            raise ValueError("pools to concatenate need the same image shape, classes and normalisation: "
                             "load them with Pool.for_dataset(ds) first")
    offsets = np.cumsum([0] + [len(p.sources) or 1 for p in pools[:-1]])
    sources = [s for p in pools for s in (p.sources or ({"kind": "unknown"},))]
    cat = lambda name: np.concatenate([np.asarray(getattr(p, name)) for p in pools])  # noqa: E731
    return dataclasses.replace(first, images=cat("images"), labels=cat("labels"),
                               run=np.concatenate([p.run + o for p, o in zip(pools, offsets)]).astype(np.int32),
                               seed=cat("seed"), iteration=cat("iteration"), source_index=cat("source_index"),
                               sources=tuple(sources))


def pool_from_distilled(sets: Sequence[DistilledSet], seeds: Sequence[int] | None = None,
                        iterations: Sequence[int] | None = None, sources: Sequence[dict] | None = None,
                        config: dict | None = None) -> Pool:
    """Pool the images of several distilled sets (e.g. runs with different seeds): set ``r`` is run
    ``r`` with ``seeds[r]`` and snapshot ``iterations[r]``; ``source_index`` is the slot in the set."""
    if not sets:
        raise ValueError("no distilled sets to pool")
    pools = []
    for r, s in enumerate(sets):
        seed = -1 if seeds is None else int(seeds[r])
        it = -1 if iterations is None else int(iterations[r])
        record = dict(sources[r]) if sources else {"kind": "distilled", "method": s.config.get("method"),
                                                   "seed": seed, "iteration": it, "config": s.config}
        pools.append(make_pool(s.images, s.hard_labels, s.num_classes, s.dataset, s.mean, s.std, zca=s.zca,
                               seed=seed, iteration=it, source_index=np.arange(len(s.images)),
                               sources=[record]))
    return dataclasses.replace(concatenate_pools(pools), config=dict(config or {}))


@functools.partial(jax.jit, static_argnames=("per_class",))
def _real_indices(key, index: ClassIndex, per_class: int) -> jax.Array:
    classes = jnp.arange(index.num_classes)
    keys = jax.random.split(key, index.num_classes)
    return jax.vmap(lambda k, c: class_sample_indices(k, index, c, per_class))(keys, classes)


def real_pool(key: jax.Array, ds: Dataset, per_class: int, config: dict | None = None) -> Pool:
    """``per_class`` distinct real training images of every class (DGS as a core-set selector);
    ``source_index`` is the index in the full training split (``Dataset.original_indices``)."""
    counts = ds.class_counts()
    if per_class < 1 or per_class > counts.min():
        c = int(counts.argmin())
        raise ValueError(f"a real pool of {per_class} images per class needs 1 <= size <= {counts.min()} "
                         f"(class {c} ({ds.class_names[c]}) of {ds.name} has {counts[c]} training images)")
    index = ClassIndex.from_labels(ds.y_train, ds.num_classes)
    idx = np.asarray(_real_indices(key, index, int(per_class))).reshape(-1)
    return make_pool(ds.x_train[idx], ds.y_train[idx], ds.num_classes, ds.name, ds.mean, ds.std,
                     zca=ds.zca is not None, seed=-1, iteration=-1, source_index=ds.original_indices[idx],
                     sources=[{"kind": "real", "dataset": ds.name, "per_class": int(per_class)}],
                     config=dict(config or {}))


def load_pool(path: str | os.PathLike, ds: Dataset | None = None) -> Pool:
    """Read a pool folder, a distilled-set folder or an ``.npz`` of images and labels (module
    docstring); with ``ds`` the pool is checked and re-normalised for it (:meth:`Pool.for_dataset`)."""
    path = Path(path)
    if path.is_dir() and (path / "pool.npz").exists():
        meta = read_json(path / "pool.json") if (path / "pool.json").exists() else None
        if meta is None:
            raise FileNotFoundError(f"{path} has pool.npz but no pool.json: re-create it with `jaxdd pool`")
        if meta.get("format_version") != POOL_FORMAT_VERSION:
            raise ValueError(f"{path}: pool format version {meta.get('format_version')} is not supported "
                             f"(this jaxdd reads version {POOL_FORMAT_VERSION})")
        with np.load(path / "pool.npz") as z:
            pool = Pool(images=z["images"], labels=z["labels"].astype(np.int32), num_classes=int(meta["num_classes"]),
                        dataset=meta["dataset"], mean=np.asarray(meta["mean"], np.float32),
                        std=np.asarray(meta["std"], np.float32), zca=bool(meta.get("zca")),
                        sources=tuple(meta.get("sources", ())), config=meta.get("config", {}),
                        **{k: z[k] for k in PROVENANCE})
    elif path.is_dir() and (path / "distilled.npz").exists():
        pool = pool_from_distilled([DistilledSet.load(path)],
                                   sources=[{"kind": "distilled", "path": str(path)}])
    elif path.is_file() and path.suffix == ".npz":
        pool = _pool_from_npz(path, ds)
    else:
        raise FileNotFoundError(f"{path} is not a pool: expected a folder with pool.npz + pool.json (from "
                                "`jaxdd pool`), a distilled-set folder, or an .npz file with images and labels")
    return pool if ds is None else pool.for_dataset(ds)


def _pool_from_npz(path: Path, ds: Dataset | None) -> Pool:
    with np.load(path, allow_pickle=False) as z:
        if "images" not in z.files or "labels" not in z.files:
            raise ValueError(f"{path} needs arrays 'images' and 'labels' (it has {sorted(z.files)}); save it "
                             "with np.savez(path, images=..., labels=...)")
        arrays = {k: z[k] for k in z.files}
    images, labels = arrays["images"], arrays["labels"]
    if images.ndim == 3:
        images = images[..., None]
    labels = hard_labels(labels)
    if ds is None and ("mean" not in arrays or images.dtype == np.uint8):
        raise ValueError(f"{path}: give the dataset to read this npz pool (its images are normalised with "
                         "the dataset's mean/std unless the npz has 'mean' and 'std')")
    if images.dtype == np.uint8:
        mean, std = ds.mean, ds.std
        images = (images.astype(np.float32) / 255.0 - mean) / std
    elif "mean" in arrays and "std" in arrays:
        mean, std = arrays["mean"], arrays["std"]
    else:
        mean, std = ds.mean, ds.std
    num_classes = ds.num_classes if ds is not None else int(labels.max()) + 1
    prov = {k: arrays.get(k) for k in PROVENANCE}
    return make_pool(images, labels, num_classes, ds.name if ds is not None else path.stem, mean, std,
                     zca=bool(arrays.get("zca", ds is not None and ds.zca is not None)),
                     sources=[{"kind": "npz", "path": str(path)}], **prov)


def build_distill_pool(method: str, ds: Dataset, ipc: int, *, runs: int = 5, seed: int = 0,
                       iterations: int | None = None, model: str = "convnet", out: str | os.PathLike | None = None,
                       final_eval: bool = False, progress: bool = True, config: dict | None = None,
                       **overrides: Any) -> Pool:
    """Run distillation ``method`` ``runs`` times (seeds ``seed .. seed + runs - 1``) at ``ipc``
    through the driver (:func:`jaxdd.distill.distill`) and pool the final sets. ``overrides`` set
    method config fields (e.g. ``batch_real=64``). With ``out`` each run writes to
    ``out/seed{S}`` and a run found there is resumed (finished runs are reused)."""
    from jaxdd.distill import RealData, build_method, distill
    from jaxdd.models import create_network

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    net = create_network(model, num_classes=ds.num_classes, input_shape=ds.image_shape)
    real = RealData.from_dataset(ds)
    m = build_method(method, net, ipc=int(ipc), **overrides)
    its = m.config.iterations if iterations is None else int(iterations)
    sets, seeds, sources = [], [], []
    for r in range(runs):
        s = int(seed) + r
        run_out = None if out is None else Path(out) / f"seed{s}"
        resume = run_out is not None and (run_out / "checkpoints").exists()
        res = distill(m, real, ds, seed=s, iterations=its, out=run_out, resume=resume, final_eval=final_eval,
                      progress=progress)
        sets.append(res.distilled)
        seeds.append(s)
        sources.append({"kind": "distill", "method": method, "seed": s, "iteration": its,
                        "path": None if run_out is None else str(run_out), "seconds": round(res.seconds, 1),
                        "evaluation": res.evaluation, "config": res.distilled.config})
    return pool_from_distilled(sets, seeds=seeds, iterations=[its] * runs, sources=sources, config=config)
