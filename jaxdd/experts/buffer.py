"""Expert buffers on disk: one compact file per expert, a JSON index, streaming reads.

Layout of a buffer folder (written by :func:`jaxdd.experts.train_experts` / ``jaxdd experts``)::

    buffer.json          the index: format, network and parameter layout, dataset, training
                         config, seed, and one entry per finished expert (file, accuracies, time)
    expert_00000.npy     float32 (epochs + 1, P): row e = all P parameters after epoch e
    expert_00001.npy     (row 0 = the initialisation), flattened in the order of the index's
    ...                  ``params`` list (``jax.tree_util`` order of ``net.init(key)["params"]``)

Every file is written atomically (``jaxdd.utils.io.atomic_path``), the expert file before its index
entry, so a killed run leaves only finished experts in the index. Reading memory-maps the
``.npy`` files: :meth:`ExpertBuffer.flat` touches only the requested epoch's row, so distillation
streams two rows per iteration and never holds the buffer in memory. This is the MTT "replay
buffer" (Cazenavette et al. 2022, ``buffer.py``) without pickles.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np

from jaxdd.models import Network
from jaxdd.utils.io import read_json, write_json

FORMAT = "jaxdd-expert-buffer"
VERSION = 1
INDEX = "buffer.json"


def expert_file(index: int) -> str:
    return f"expert_{index:05d}.npy"


def param_layout(network: Network) -> list[dict]:
    """``[{"path", "shape", "dtype"}, ...]`` of ``network``'s parameters in flattening order."""
    shapes = jax.eval_shape(network.init, jax.random.key(0))["params"]
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    return [{"path": jax.tree_util.keystr(p), "shape": list(s.shape), "dtype": str(s.dtype)} for p, s in flat]


def params_to_vector(params: Any) -> np.ndarray:
    """All leaves of one model's parameter pytree as a (P,) float32 vector (``jax.tree_util`` order)."""
    return np.concatenate([np.asarray(x, np.float32).reshape(-1) for x in jax.tree.leaves(params)])


def flatten_stacked(params: Any, num_models: int) -> np.ndarray:
    """(M, P) float32 rows of M stacked models (every leaf has a leading model axis of size M)."""
    return np.concatenate([np.asarray(x, np.float32).reshape(num_models, -1) for x in jax.tree.leaves(params)],
                          axis=1)


def vector_to_params(flat: Any, network: Network) -> Any:
    """The parameter pytree of ``network`` from a (P,) vector in the buffer's order (numpy or jax)."""
    shapes = jax.eval_shape(network.init, jax.random.key(0))["params"]
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    sizes = [int(np.prod(s.shape)) for s in leaves]
    if flat.shape[-1] != sum(sizes):
        raise ValueError(f"a parameter vector of {flat.shape[-1]} values does not fit network {network.name!r} "
                         f"({sum(sizes)} parameters); use the network the buffer was trained with")
    out, start = [], 0
    for s, n in zip(leaves, sizes):
        out.append(flat[..., start:start + n].reshape(flat.shape[:-1] + tuple(s.shape)).astype(s.dtype))
        start += n
    return jax.tree_util.tree_unflatten(treedef, out)


def dataset_record(dataset) -> dict:
    """What identifies the data a buffer was trained on (checked when the buffer is used)."""
    d = dataset.describe()
    indices = np.ascontiguousarray(np.asarray(dataset.original_indices, np.int64))
    return {"name": d["name"], "source": d["source"], "image_shape": d["image_shape"],
            "num_classes": d["num_classes"], "class_names": d["class_names"], "train_size": d["train_size"],
            "train_indices_sha1": hashlib.sha1(indices.tobytes()).hexdigest(),  # which examples (pruned subsets)
            "mean": np.asarray(dataset.mean, np.float64).round(6).tolist(),
            "std": np.asarray(dataset.std, np.float64).round(6).tolist(), "zca": dataset.zca is not None}


def network_record(network: Network) -> dict:
    layout = param_layout(network)
    return {"name": network.name, "input_shape": list(network.input_shape), "num_classes": network.num_classes,
            "num_params": int(sum(int(np.prod(p["shape"])) for p in layout)), "params": layout}


class ExpertBuffer:
    """Read access to a buffer folder; expert files are memory-mapped on demand.

    ``buffer.num_experts`` finished experts, each with ``buffer.num_epochs + 1`` parameter rows
    (epochs 0..E). ``flat(i, e)`` is row e of expert i as a (P,) float32 array; ``params(i, e,
    network)`` the pytree; ``stream()`` yields ``(i, trajectory)`` one expert at a time.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        index = self.path / INDEX
        if not index.exists():
            raise FileNotFoundError(f"{self.path} is not an expert buffer: {INDEX} is missing (create one with "
                                    "`jaxdd experts --dataset NAME --num-experts N --epochs E --out FOLDER`)")
        self.index = read_json(index)
        if self.index.get("format") != FORMAT or self.index.get("version") != VERSION:
            raise ValueError(f"{index} is not a {FORMAT} v{VERSION} index (found format {self.index.get('format')!r}, "
                             f"version {self.index.get('version')!r}); recreate the buffer with `jaxdd experts`")
        self.experts = sorted(self.index.get("experts", []), key=lambda e: e["index"])
        if not self.experts:
            raise ValueError(f"the expert buffer {self.path} has no finished expert yet; run (or resume) "
                             "`jaxdd experts` until at least one expert is saved")
        self._open: dict[int, np.ndarray] = {}

    # -- description ---------------------------------------------------------------------------
    @property
    def num_experts(self) -> int:
        return len(self.experts)

    @property
    def num_epochs(self) -> int:
        """E: trajectories hold epochs 0..E (E + 1 rows)."""
        return int(self.index["train"]["epochs"])

    @property
    def num_params(self) -> int:
        return int(self.index["network"]["num_params"])

    @property
    def network_name(self) -> str:
        return self.index["network"]["name"]

    @property
    def lr(self) -> float:
        """The experts' SGD learning rate (MTT's default initial synthetic lr)."""
        return float(self.index["train"]["lr"])

    def describe(self) -> dict:
        return {"path": str(self.path), "num_experts": self.num_experts, "epochs": self.num_epochs,
                "network": self.network_name, "num_params": self.num_params,
                "dataset": self.index["dataset"]["name"], "zca": self.index["dataset"]["zca"],
                "train": self.index["train"]}

    # -- compatibility -------------------------------------------------------------------------
    def check_compatible(self, network: Network, dataset=None) -> None:
        """``ValueError`` unless the buffer was trained with ``network`` (same name and parameter
        layout) and, if given, on ``dataset`` (same image shape, classes, normalisation, ZCA)."""
        net = self.index["network"]
        fix = (f"train experts for it (`jaxdd experts --arch {network.name} ...`) or distil with the buffer's "
               f"network {net['name']!r}")
        if net["name"] != network.name:
            raise ValueError(f"the expert buffer {self.path} was trained with network {net['name']!r}, not "
                             f"{network.name!r}; {fix}")
        layout = param_layout(network)
        if [(p["path"], p["shape"]) for p in layout] != [(p["path"], p["shape"]) for p in net["params"]]:
            raise ValueError(f"the expert buffer {self.path} holds parameters of a different layout than network "
                             f"{network.name!r} for {network.num_classes} classes of {network.input_shape} images "
                             f"({net['num_params']} vs {sum(int(np.prod(p['shape'])) for p in layout)} parameters); "
                             f"{fix}")
        if dataset is None:
            return
        mine, other = self.index["dataset"], dataset_record(dataset)
        problems = []
        if mine["image_shape"] != other["image_shape"] or mine["num_classes"] != other["num_classes"]:
            problems.append(f"{mine['num_classes']} classes of {mine['image_shape']} images vs "
                            f"{other['num_classes']} of {other['image_shape']}")
        if mine["class_names"] != other["class_names"]:
            problems.append("different class names")
        if mine["zca"] != other["zca"]:
            problems.append(f"ZCA {'on' if mine['zca'] else 'off'} in the buffer, {'on' if other['zca'] else 'off'} "
                            "here (--zca)")
        if not (np.allclose(mine["mean"], other["mean"], atol=1e-3) and np.allclose(mine["std"], other["std"], atol=1e-3)):
            problems.append(f"normalisation mean {mine['mean']} std {mine['std']} vs {other['mean']} {other['std']}")
        if problems:
            raise ValueError(f"the expert buffer {self.path} was trained on {mine['name']!r}, which does not match "
                             f"{other['name']!r}: {'; '.join(problems)}. Use a buffer trained on this dataset "
                             f"(`jaxdd experts --dataset {other['name']} ...`) with the same --zca setting")

    # -- reading -------------------------------------------------------------------------------
    def trajectory(self, i: int) -> np.ndarray:
        """Expert i's (E + 1, P) trajectory, memory-mapped (read lazily)."""
        if not 0 <= i < self.num_experts:
            raise ValueError(f"expert {i} does not exist: the buffer has {self.num_experts} finished experts")
        if i not in self._open:
            entry = self.experts[i]
            path = self.path / entry["file"]
            if not path.exists():
                raise FileNotFoundError(f"{path} is listed in {self.path / INDEX} but missing; resume "
                                        "`jaxdd experts` on this folder to recreate it")
            arr = np.load(path, mmap_mode="r")
            want = (self.num_epochs + 1, self.num_params)
            if arr.shape != want or arr.dtype != np.float32:
                raise ValueError(f"{path} holds {arr.dtype}{list(arr.shape)}, expected float32{list(want)}; the "
                                 "file is damaged: delete it and resume `jaxdd experts` to retrain that expert")
            if len(self._open) >= 4:  # keep a few maps open, not the whole buffer
                self._open.pop(next(iter(self._open)))
            self._open[i] = arr
        return self._open[i]

    def flat(self, i: int, epoch: int) -> np.ndarray:
        """(P,) float32 parameters of expert i after ``epoch`` (0 = initialisation)."""
        if not 0 <= epoch <= self.num_epochs:
            raise ValueError(f"epoch {epoch} is outside the buffer's trajectories (epochs 0..{self.num_epochs})")
        return np.array(self.trajectory(i)[epoch])

    def params(self, i: int, epoch: int, network: Network) -> Any:
        """Expert i's parameter pytree after ``epoch`` for ``network``."""
        return vector_to_params(self.flat(i, epoch), network)

    def pair(self, expert: Any, start: Any, expert_epochs: int) -> np.ndarray:
        """(2, P): rows ``start`` and ``start + expert_epochs`` of expert ``expert`` (host callback
        of the trajectory-matching methods; ``expert``/``start`` may be 0-d arrays)."""
        i, t = int(expert), int(start)
        return np.stack([self.flat(i, t), self.flat(i, t + expert_epochs)])

    def stream(self, experts: Any = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(i, trajectory)`` for the given experts (default all), one at a time."""
        for i in (range(self.num_experts) if experts is None else experts):
            yield int(i), self.trajectory(int(i))

    def __repr__(self) -> str:
        return (f"ExpertBuffer({str(self.path)!r}: {self.num_experts} experts x {self.num_epochs} epochs of "
                f"{self.network_name})")


def write_index(folder: Path, index: dict) -> None:
    write_json(folder / INDEX, index)
