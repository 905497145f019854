"""Evaluation presets: how a (distilled) training set is scored (the DC/MTT/DATM
reference evaluation, ``evaluate_synset`` of VICO-UoE/DatasetCondensation).

A preset fixes the SGD recipe used to train fresh networks on the set (``jaxdd.train``):

================  =====================================================================================
``dc``            SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, Epoch = 300 (301 epochs trained,
                  lr x0.1 after epoch 151 with fresh momentum: the reference ``evaluate_synset``), no
                  augmentation (DC, Zhao et al. ICLR 2021)
``dc-dsa``        as ``dc`` with 1000 epochs and per-sample DSA augmentation (DSA, Zhao & Bilen ICML 2021;
                  also used for DM sets). Aliases ``dsa``, ``dm``.
``mtt``           as ``dc-dsa``, lr = the set's learned synthetic lr (MTT, Cazenavette et al. CVPR 2022)
``datm``          as ``mtt`` with soft labels (soft cross-entropy) and batch 128 (DATM, Guo et al. ICLR 2024)
``lr-grid``       as ``dc``, lr chosen from {0.001, 0.005, 0.01, 0.05, 0.1} by accuracy on a held-out split
                  of the real training data (one model per candidate), then ``num_models`` trained with it
================  =====================================================================================

The DSA strategy follows the dataset: ``color_crop_cutout_scale_rotate`` (no flip) for digit
datasets (MNIST and its variants, SVHN), ``color_crop_cutout_flip_scale_rotate`` otherwise,
Fashion-MNIST included (``jaxdd.augment.default_strategy``, the reference README's rule).

``epochs`` is the reference ``epoch_eval_train``: under the default ``reference`` schedule
``epochs + 1`` epochs are trained (301 for ``dc``, 1001 for ``dc-dsa``), see ``jaxdd.train``.
"""

from __future__ import annotations

import dataclasses

from jaxdd.train import TrainConfig

LR_GRID = (0.001, 0.005, 0.01, 0.05, 0.1)
DEFAULT_NUM_MODELS = 5


@dataclasses.dataclass(frozen=True)
class Preset:
    """An evaluation recipe. ``config.augment`` is resolved per dataset when ``dsa`` is set."""

    name: str
    config: TrainConfig
    dsa: bool = False
    lr_from_set: bool = False  # use the distilled set's learned lr (required)
    lr_grid: tuple[float, ...] = ()  # choose lr on a held-out split
    num_models: int = DEFAULT_NUM_MODELS
    description: str = ""

    def train_config(self, dataset, epochs: int | None = None) -> TrainConfig:
        """The :class:`TrainConfig` for ``dataset`` (DSA strategy resolved), epochs overridable."""
        changes = {}
        if epochs is not None:
            if not isinstance(epochs, int) or epochs < 1:
                raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
            changes["epochs"] = epochs
        if self.dsa:
            changes["augment"] = dsa_strategy(dataset)
        return dataclasses.replace(self.config, **changes)


def dsa_strategy(dataset) -> str:
    """The reference DSA strategy for a :class:`jaxdd.data.Dataset` (by its name and source)."""
    from jaxdd.augment import default_strategy

    return default_strategy(dataset)

_DC = TrainConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256, epochs=300, schedule="reference")
_DSA = dataclasses.replace(_DC, epochs=1000)

PRESETS: dict[str, Preset] = {
    "dc": Preset("dc", _DC, description="SGD lr 0.01, mom 0.9, wd 5e-4, batch 256, epochs 300 (+1, lr x0.1 "
                                        "after 151), no augmentation"),
    "dc-dsa": Preset("dc-dsa", _DSA, dsa=True,
                     description="as dc, epochs 1000 (+1, lr x0.1 after 501), DSA augmentation"),
    "mtt": Preset("mtt", _DSA, dsa=True, lr_from_set=True,
                  description="as dc-dsa, lr = the set's learned lr"),
    "datm": Preset("datm", dataclasses.replace(_DSA, batch_size=128, soft_labels=True), dsa=True, lr_from_set=True,
                   description="as mtt, soft labels (soft cross-entropy), batch 128"),
    "lr-grid": Preset("lr-grid", _DC, lr_grid=LR_GRID,
                      description="as dc, lr chosen from {0.001,0.005,0.01,0.05,0.1} on a held-out real split"),
}
ALIASES = {"dsa": "dc-dsa", "dm": "dc-dsa", "lr_grid": "lr-grid", "dc_dsa": "dc-dsa"}


def available_presets() -> list[str]:
    return list(PRESETS)


def get_preset(preset: str | Preset) -> Preset:
    """A :class:`Preset` by name (aliases ``dsa``/``dm`` = ``dc-dsa``), or the preset itself."""
    if isinstance(preset, Preset):
        return preset
    if not isinstance(preset, str):
        raise ValueError(f"preset must be a name or a Preset, got {preset!r}")
    key = preset.strip().lower()
    key = ALIASES.get(key, key)
    if key not in PRESETS:
        raise ValueError(f"unknown evaluation preset {preset!r}; choose one of "
                         f"{', '.join(list(PRESETS) + sorted(ALIASES))}")
    return PRESETS[key]
