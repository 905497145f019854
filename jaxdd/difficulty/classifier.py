"""The DGS difficulty classifier: trained on the real data (or loaded), it scores pool and real
images by confidence difficulty ``d = 1 - p(y|x)`` (Li et al., arXiv 2601.10090).

With M stacked models (``num_models``) the ensemble probability is used:
``d = 1 - (1/M) sum_m softmax(f_m(x))_y``. Training uses the one trainer, :mod:`jaxdd.train`.

Your own model: ``DifficultyClassifier(Model(apply_fn), stacked_params, meta={})`` (a
:class:`jaxdd.models.adapters.Model`, params with a leading model axis) scores and measures accuracy
the same way, and :func:`train_classifier` trains one that can initialise fresh networks
(``jaxdd.models.adapters.as_network``); saving and loading by name need a jaxdd network.

Saved as a folder: ``classifier.json`` (model, classes, input shape, train config, dataset) and
``ckpt/`` (an orbax checkpoint of the stacked variables, :mod:`jaxdd.utils.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdd.data.dataset import Dataset
from jaxdd.difficulty import score_models
from jaxdd.models import Network, create_network
from jaxdd.utils.labels import hard_labels
from jaxdd.models.adapters import Model, ModelNetwork, as_network
from jaxdd.train import Trainer, TrainConfig, evaluate_accuracy, fit
from jaxdd.utils.checkpoint import Checkpointer
from jaxdd.utils.io import read_json, write_json
from jaxdd.utils.labels import hard_labels

DEFAULT_EPOCHS = 5


@dataclasses.dataclass(frozen=True, eq=False)
class DifficultyClassifier:
    net: Network | Model
    variables: Any  # stacked (leading model axis M): a Network's variables or a Model's params
    meta: dict

    @property
    def num_models(self) -> int:
        return int(jax.tree.leaves(self.variables)[0].shape[0])

    def scores(self, images: np.ndarray, labels: np.ndarray, batch_size: int = 500, progress: bool = False,
               desc: str = "score") -> np.ndarray:
        """Confidence difficulty of every image (N,) in [0, 1], averaged over the M models
        (:func:`jaxdd.difficulty.score_models` with ``confidence``)."""
        d = score_models(self.net, self.variables, images, hard_labels(np.asarray(labels)), "confidence",
                         batch_size=batch_size, progress=progress, desc=desc,
                         stacked=None if isinstance(self.net, Network) else True)
        return np.clip(d.mean(0), 0.0, 1.0)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Accuracy of each of the M models (M,)."""
        if isinstance(self.net, Network):
            return evaluate_accuracy(self.net, self.variables, images, labels)
        wrong = score_models(self.net, self.variables, images, labels, "misclass", progress=False, stacked=True)
        return 1.0 - wrong.mean(1)

    def save(self, folder: str | os.PathLike) -> Path:
        if not isinstance(self.net, Network) or isinstance(self.net, ModelNetwork):
            raise ValueError("only a classifier built on a jaxdd network can be saved (it is reloaded by network "
                             "name); keep your own model's parameters with your own checkpointing")
        folder = Path(folder)
        with Checkpointer(folder / "ckpt", max_to_keep=1) as ckpt:
            ckpt.save(0, self.variables, metadata=self.meta)
        write_json(folder / "classifier.json", self.meta)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, ds: Dataset | None = None) -> "DifficultyClassifier":
        folder = Path(folder)
        if not (folder / "classifier.json").exists():
            raise FileNotFoundError(f"{folder} holds no difficulty classifier (classifier.json + ckpt/); "
                                    "train one with `jaxdd sample ... --classifier FOLDER`")
        meta = read_json(folder / "classifier.json")
        shape = tuple(meta["input_shape"])
        if ds is not None and (shape != ds.image_shape or meta["num_classes"] != ds.num_classes):
            raise ValueError(f"the classifier in {folder} is for {meta['num_classes']} classes of {shape} images "
                             f"({meta.get('dataset')}), not {ds.name} {ds.image_shape} with {ds.num_classes} "
                             "classes: use another --classifier folder")
        net = create_network(meta["model"], num_classes=meta["num_classes"], input_shape=shape)
        shapes = jax.eval_shape(lambda k: jax.vmap(net.init)(jax.random.split(k, meta["num_models"])),
                                jax.random.key(0))
        template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
        with Checkpointer(folder / "ckpt") as ckpt:
            _, variables, _ = ckpt.restore(template)
        return cls(net=net, variables=variables, meta=meta)


def train_classifier(key: jax.Array, ds: Dataset, model: Any = "convnet", config: TrainConfig | None = None,
                     num_models: int = 1, progress: bool = True) -> DifficultyClassifier:
    """Train ``num_models`` networks on the real training set of ``ds`` with :func:`jaxdd.train.fit`
    (default: the DC protocol's SGD for :data:`DEFAULT_EPOCHS` epochs). ``model``: a network name,
    or an own model that can initialise fresh networks (``jaxdd.models.adapters.as_network``)."""
    config = config or TrainConfig(epochs=DEFAULT_EPOCHS)
    net = as_network(model, ds.image_shape, ds.num_classes)
    trainer = Trainer(net, config)
    k_init, k_fit = jax.random.split(key)
    state = trainer.init(k_init, num_models=num_models)
    state, history = fit(trainer, state, ds.x_train, ds.y_train, k_fit, progress=progress, desc="classifier")
    meta = {"model": net.name, "num_classes": ds.num_classes, "input_shape": list(ds.image_shape),
            "num_models": num_models, "dataset": ds.name, "train_config": dataclasses.asdict(config),
            "final_train_acc": float(np.mean(history[-1]["acc"])) if history else None}
    return DifficultyClassifier(net=net, variables=state.variables, meta=meta)


def load_or_train_classifier(folder: str | os.PathLike | None, key: jax.Array, ds: Dataset, model: str = "convnet",
                             config: TrainConfig | None = None, num_models: int = 1,
                             progress: bool = True) -> tuple[DifficultyClassifier, bool]:
    """The classifier saved in ``folder`` if there is one, else a new one trained on ``ds`` (and saved
    to ``folder`` when given). Returns ``(classifier, trained_now)``."""
    if folder is not None and (Path(folder) / "classifier.json").exists():
        return DifficultyClassifier.load(folder, ds), False
    clf = train_classifier(key, ds, model=model, config=config, num_models=num_models, progress=progress)
    if folder is not None:
        clf.save(folder)
    return clf, True
