"""DD-Ranking's robust scores of a distilled set: label-robust (LRS) and augmentation-robust (ARS).

From DD-Ranking (Li et al. 2025, "DD-Ranking: Rethinking the Evaluation of Dataset Distillation",
NUS-HPC-AI-Lab/DD-Ranking, README "Benchmark"), with accuracies as fractions in [0, 1]:

* hard-label recovery ``HLR = Acc(real, hard) − Acc(syn, hard)``: how far the synthetic set, trained
  with hard labels, stays below the full real training set;
* improvement over random ``IOR = Acc(syn, any) − Acc(rdm, any)``: the gain over the same number of
  random real images per class, both under the set's own evaluation ("any": its labels, lr,
  augmentation, i.e. the preset);
* ``α = w·IOR − (1 − w)·HLR`` and ``LRS = (e^α − e^{−1}) / (e − e^{−1})`` (w = 0.5 by default);
* ``β = γ·(Acc(syn, aug) − Acc(rdm, aug)) + (1 − γ)·(Acc(syn, no aug) − Acc(rdm, no aug))`` and
  ``ARS = (e^β − e^{−1}) / (e − e^{−1})`` (γ = 0.5), with and without DSA augmentation.

With fractions, α and β lie in [−1, 1] and both scores in [0, 1] as the README states (the reference
code subtracts accuracies in percent). As in the reference, each score is computed per evaluation run
(here: per trained model, the i-th model of every evaluation sharing its initialisation) and
reported as mean and population std over runs. The random set is ``jaxdd.data.random_real`` with the
synthetic set's IPC; with soft labels it keeps its hard labels (the reference labels it with a
teacher model, which jaxdd does not provide). ``Acc(real, hard)`` trains on the whole training split
(slow on large data); pass ``real_acc`` (%, e.g. from ``jaxdd baseline --full``) to reuse a known one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np

from jaxdd.data.distilled import DistilledSet
from jaxdd.evaluate.presets import Preset, get_preset
from jaxdd.data.sampler import random_real
from jaxdd.evaluate.protocol import check_compatible, evaluate_set, full_data

METRICS = ("lrs", "ars")


def normalised_exp(a: Any) -> np.ndarray:
    """``(e^a − e^{−1}) / (e − e^{−1})``: maps [−1, 1] onto [0, 1]."""
    return (np.exp(np.asarray(a, np.float64)) - math.exp(-1)) / (math.e - math.exp(-1))


def _runs(values: Any) -> np.ndarray:
    return np.atleast_1d(np.asarray(values, np.float64)) / 100.0


def _summary(values: np.ndarray) -> dict:
    return {"runs": [float(v) for v in values], "mean": float(np.mean(values)), "std": float(np.std(values))}


def _check_weight(name: str, w: float) -> float:
    if not 0.0 <= float(w) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {w}")
    return float(w)


def label_robust_score(acc_real_hard: Any, acc_syn_hard: Any, acc_syn_any: Any, acc_rdm_any: Any,
                       w: float = 0.5) -> dict:
    """HLR, IOR and LRS from test accuracies in % (scalars, or one value per evaluation run;
    broadcast). Returns {"hlr", "ior", "lrs"}, each {"runs", "mean", "std"} (HLR/IOR as fractions)."""
    w = _check_weight("the LRS weight w", w)
    real, syn_h, syn_a, rdm_a = np.broadcast_arrays(*map(_runs, (acc_real_hard, acc_syn_hard, acc_syn_any,
                                                                  acc_rdm_any)))
    hlr, ior = real - syn_h, syn_a - rdm_a
    return {"hlr": _summary(hlr), "ior": _summary(ior), "lrs": _summary(normalised_exp(w * ior - (1 - w) * hlr))}


def augmentation_robust_score(acc_syn_aug: Any, acc_rdm_aug: Any, acc_syn_naug: Any, acc_rdm_naug: Any,
                              gamma: float = 0.5) -> dict:
    """ARS from test accuracies in % with (aug) and without (naug) augmentation. Returns
    {"gain_aug", "gain_naug", "ars"}, each {"runs", "mean", "std"} (gains as fractions)."""
    gamma = _check_weight("the ARS weight gamma", gamma)
    syn_a, rdm_a, syn_n, rdm_n = np.broadcast_arrays(*map(_runs, (acc_syn_aug, acc_rdm_aug, acc_syn_naug,
                                                                   acc_rdm_naug)))
    gain_aug, gain_naug = syn_a - rdm_a, syn_n - rdm_n
    return {"gain_aug": _summary(gain_aug), "gain_naug": _summary(gain_naug),
            "ars": _summary(normalised_exp(gamma * gain_aug + (1 - gamma) * gain_naug))}


def _variant(p: Preset, suffix: str, **changes) -> Preset:
    """``p`` with preset fields (``dsa``) or TrainConfig fields (``soft_labels``) changed; ``p`` itself
    when nothing changes (so the evaluation is shared)."""
    config = {k: changes.pop(k) for k in list(changes) if k in {f.name for f in dataclasses.fields(p.config)}}
    q = dataclasses.replace(p, config=dataclasses.replace(p.config, **config), **changes)
    return p if q == p else dataclasses.replace(q, name=f"{p.name}{suffix}")


def parse_metrics(text: str) -> list[str]:
    """``"lrs,ars"`` -> ["lrs", "ars"]; unknown names raise ``ValueError``."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if not names or bad:
        raise ValueError(f"unknown robust metric(s) {bad or text!r}; choose from {', '.join(METRICS)} (e.g. lrs,ars)")
    return names


def robust_scores(distilled: DistilledSet, dataset, metrics: Sequence[str] = METRICS, arch: str = "convnet",
                  preset: str | Preset = "dc", key: jax.Array | None = None, num_models: int | None = None, *,
                  lr: float | None = None, epochs: int | None = None, real_acc: float | None = None,
                  w: float = 0.5, gamma: float = 0.5, mesh=None, progress: bool = True,
                  syn_any: dict | None = None) -> dict:
    """LRS and/or ARS of ``distilled`` for one ``arch`` under ``preset`` (the set's own evaluation).

    Trains ``num_models`` networks on each needed set (synthetic, random real of the same IPC, the
    full data unless ``real_acc`` is given) under the needed preset variants (hard labels; DSA on
    and off) with the initialisation key ``key``; each evaluation is run once and shared (``syn_any``:
    the :func:`evaluate_set` result of the set under ``preset`` with the same key and lr, reused).
    ``lr`` overrides the preset's / the set's learned lr for every evaluation but the full data. The
    random set has ``distilled.ipc`` images per class (its largest class count). Returns
    {"lrs": ..., "ars": ..., "accuracies": {name: evaluate_set dict}, "w", "gamma", "real_acc"}.
    """
    metrics = list(metrics)
    if key is None:
        raise ValueError("robust_scores needs an explicit PRNG key: key=jax.random.key(seed)")
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ValueError(f"unknown robust metric(s) {bad or metrics}; choose from {', '.join(METRICS)}")
    w, gamma = _check_weight("the LRS weight w", w), _check_weight("the ARS weight gamma", gamma)
    if real_acc is not None and not 0.0 <= float(real_acc) <= 100.0:
        raise ValueError(f"real_acc is a test accuracy in %, in [0, 100]; got {real_acc}")
    check_compatible(distilled, dataset)
    p = get_preset(preset)
    if lr is None and p.lr_from_set:
        lr = distilled.lr
    if p.lr_from_set and lr is None:
        raise ValueError(f"preset {p.name!r} needs the set's learned lr but this distilled set has none; use the "
                         "dc / dc-dsa preset")
    k_sample, k_eval = jax.random.fold_in(key, 1), key  # k_eval = key: the plain evaluation's models
    variants = {"any": p, "hard": _variant(p, "-hard", soft_labels=False),
                "aug": _variant(p, "+dsa", dsa=True), "naug": _variant(p, "-noaug", dsa=False)}
    sets = {"syn": (distilled.images, distilled.labels), "rdm": random_real(k_sample, dataset, distilled.ipc)}
    cache: dict[tuple, dict] = {} if syn_any is None else {("syn", p): syn_any}

    def acc(which: str, variant: str) -> dict:
        """evaluate_set of a set under a preset variant, once (aug = any when the preset has DSA)."""
        tag = (which, variants[variant])
        if tag not in cache:
            x, y = sets[which]
            cache[tag] = evaluate_set(np.asarray(x), np.asarray(y), dataset, arch, variants[variant], k_eval,
                                      num_models, lr, mesh, epochs=epochs, progress=progress)
        return cache[tag]

    out: dict[str, Any] = {"w": w, "gamma": gamma}
    names: dict[str, dict] = {}
    if "lrs" in metrics:
        if real_acc is None:
            real = full_data(dataset, arch, variants["hard"], k_eval, num_models, None, mesh, epochs=epochs,
                             progress=progress)
            names["real-hard"] = real
            real_runs = real["accs"]
        else:
            real_runs = float(real_acc)
        names.update({"syn-hard": acc("syn", "hard"), "syn-any": acc("syn", "any"), "rdm-any": acc("rdm", "any")})
        out["lrs"] = label_robust_score(real_runs, names["syn-hard"]["accs"], names["syn-any"]["accs"],
                                        names["rdm-any"]["accs"], w)
        out["real_acc"] = real_acc
    if "ars" in metrics:
        names.update({"syn-aug": acc("syn", "aug"), "rdm-aug": acc("rdm", "aug"), "syn-naug": acc("syn", "naug"),
                      "rdm-naug": acc("rdm", "naug")})
        out["ars"] = augmentation_robust_score(names["syn-aug"]["accs"], names["rdm-aug"]["accs"],
                                               names["syn-naug"]["accs"], names["rdm-naug"]["accs"], gamma)
    out["accuracies"] = names
    return out
