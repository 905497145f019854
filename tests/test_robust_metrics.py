"""DD-Ranking's label-robust (LRS) and augmentation-robust (ARS) scores: hand-computed values, the
evaluations they run, and ``jaxdd eval --metrics lrs,ars``."""

import json
import math

import jax
import numpy as np
import pytest

from jaxdd.cli import main
from jaxdd.data import load_dataset
from jaxdd.data.distilled import DistilledSet
from jaxdd.data.sampler import random_real
from jaxdd.evaluate import evaluate_set
from jaxdd.evaluate.robust import (augmentation_robust_score, label_robust_score, normalised_exp, parse_metrics,
                                   robust_scores)

E, INV_E = 2.718281828459045, 0.36787944117144233


def test_lrs_hand_computed():
    # real 90 %, synthetic 50 % with hard labels, 60 % under its own evaluation, random 40 %:
    # HLR = 0.40, IOR = 0.20, alpha = 0.5 * 0.2 - 0.5 * 0.4 = -0.1
    r = label_robust_score(90.0, 50.0, 60.0, 40.0)
    assert r["hlr"]["mean"] == pytest.approx(0.40) and r["ior"]["mean"] == pytest.approx(0.20)
    assert r["lrs"]["mean"] == pytest.approx((0.9048374180359595 - INV_E) / (E - INV_E), abs=1e-12)
    assert r["lrs"]["std"] == 0.0
    # w = 1: only IOR; the extremes map to 0 and 1
    assert label_robust_score(100, 0, 100, 0, w=1.0)["lrs"]["mean"] == pytest.approx(1.0)
    assert label_robust_score(100, 0, 0, 100, w=0.0)["lrs"]["mean"] == pytest.approx(0.0)
    # per run (the real accuracy broadcast): alphas 0.5 * 0.1 - 0.5 * 0.5 = -0.2 and 0.5 * 0.3 - 0.5 * 0.3 = 0
    r = label_robust_score(80.0, [30.0, 50.0], [40.0, 60.0], [30.0, 30.0])
    runs = [(math.exp(-0.2) - INV_E) / (E - INV_E), (1 - INV_E) / (E - INV_E)]
    np.testing.assert_allclose(r["lrs"]["runs"], runs, rtol=1e-12)
    assert r["lrs"]["mean"] == pytest.approx(np.mean(runs)) and r["lrs"]["std"] == pytest.approx(np.std(runs))
    with pytest.raises(ValueError, match=r"w must lie in \[0, 1\]"):
        label_robust_score(1, 1, 1, 1, w=1.5)


def test_ars_hand_computed():
    # with DSA: 70 vs 50 (+0.2); without: 55 vs 50 (+0.05); gamma 0.5 -> beta 0.125
    r = augmentation_robust_score(70.0, 50.0, 55.0, 50.0)
    assert r["gain_aug"]["mean"] == pytest.approx(0.2) and r["gain_naug"]["mean"] == pytest.approx(0.05)
    assert r["ars"]["mean"] == pytest.approx((math.exp(0.125) - INV_E) / (E - INV_E), abs=1e-12)
    assert augmentation_robust_score(70.0, 50.0, 55.0, 50.0, gamma=0.0)["ars"]["mean"] == pytest.approx(
        normalised_exp(0.05))
    assert parse_metrics(" LRS, ars") == ["lrs", "ars"]
    with pytest.raises(ValueError, match="unknown robust metric"):
        parse_metrics("lrs,fid")


@pytest.fixture(scope="module")
def tiny_set(tiny_npz):
    ds = load_dataset(tiny_npz)
    x, y = random_real(jax.random.key(5), ds, 2)
    return ds, DistilledSet(images=np.asarray(x), labels=np.asarray(y), num_classes=3, dataset=tiny_npz,
                            mean=np.asarray(ds.mean), std=np.asarray(ds.std), lr=None, zca=False, config={})


def test_robust_scores_run_the_defining_evaluations(tiny_set):
    ds, syn = tiny_set
    key = jax.random.key(0)
    common = dict(num_models=2, epochs=2, progress=False)
    r = robust_scores(syn, ds, ["lrs", "ars"], "mlp-w16", "dc", key, real_acc=75.0, **common)
    acc = {k: v["accs"] for k, v in r["accuracies"].items()}
    assert set(acc) == {"syn-hard", "syn-any", "rdm-any", "syn-aug", "rdm-aug", "syn-naug", "rdm-naug"}
    # the defining evaluations, rebuilt here: hard-label set under dc = its own evaluation; the random set
    # is random_real(fold_in(key, 1)) of the same IPC; "aug" turns DSA on, "naug" is plain dc
    own = evaluate_set(syn.images, syn.labels, ds, "mlp-w16", "dc", key, **common)
    xr, yr = random_real(jax.random.fold_in(key, 1), ds, 2)
    rdm = evaluate_set(np.asarray(xr), np.asarray(yr), ds, "mlp-w16", "dc", key, **common)
    assert acc["syn-hard"] == acc["syn-any"] == acc["syn-naug"] == own["accs"]
    assert acc["rdm-any"] == acc["rdm-naug"] == rdm["accs"]
    assert r["accuracies"]["syn-aug"]["config"]["augment"] and not r["accuracies"]["syn-naug"]["config"]["augment"]
    assert r["accuracies"]["syn-hard"] is r["accuracies"]["syn-any"]  # dc on hard labels: one shared evaluation
    # the scores from those accuracies by the README formulas, computed here in plain Python
    lrs = [(math.exp(0.5 * (s - q) / 100 - 0.5 * (75.0 - h) / 100) - INV_E) / (E - INV_E)
           for s, q, h in zip(acc["syn-any"], acc["rdm-any"], acc["syn-hard"])]
    ars = [(math.exp(0.5 * (a - b) / 100 + 0.5 * (c - d) / 100) - INV_E) / (E - INV_E)
           for a, b, c, d in zip(acc["syn-aug"], acc["rdm-aug"], acc["syn-naug"], acc["rdm-naug"])]
    np.testing.assert_allclose(r["lrs"]["lrs"]["runs"], lrs, rtol=1e-12)
    np.testing.assert_allclose(r["ars"]["ars"]["runs"], ars, rtol=1e-12)
    with pytest.raises(ValueError, match=r"accuracy in %, in \[0, 100\]"):
        robust_scores(syn, ds, ["lrs"], "mlp-w16", "dc", key, real_acc=0.9 * 100 + 20, **common)
    with pytest.raises(ValueError, match="learned lr"):
        robust_scores(syn, ds, ["lrs"], "mlp-w16", "mtt", key, real_acc=75.0, **common)


def test_eval_cli_metrics(tiny_set, tmp_path, capsys):
    ds, syn = tiny_set
    syn.save(tmp_path / "set")
    out = tmp_path / "r.json"
    assert main(["eval", "--distilled", str(tmp_path / "set"), "--dataset", syn.dataset, "--archs", "mlp-w16",
                 "--models", "2", "--epochs", "2", "--metrics", "lrs,ars", "--real-acc", "80",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    (robust,) = res["robust"]
    assert robust["arch"] == "mlp-w16" and 0.0 <= robust["lrs"]["lrs"]["mean"] <= 1.0
    # the plain evaluation is the set's own ("any") evaluation, shared
    assert robust["accuracies"]["syn-any"]["accs"] == res["results"][0]["accs"]
    assert "LRS" in capsys.readouterr().out
    assert main(["eval", "--distilled", str(tmp_path / "set"), "--dataset", syn.dataset, "--metrics", "xyz",
                 "--out", str(out)]) == 1
    assert "unknown robust metric" in capsys.readouterr().err
