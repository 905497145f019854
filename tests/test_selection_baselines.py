"""k-Center greedy and Herding selection baselines against slow numpy loops, and the CLI."""

import json

import chex
import jax
import numpy as np
import pytest

from jaxdd.cli import main
from jaxdd.data import load_dataset
from jaxdd.data.distilled import DistilledSet
from jaxdd.prune.coreset import coreset_sampler, embed_features, herding, kcenter_greedy, select_per_class


def slow_kcenter(f: np.ndarray, k: int) -> list[int]:
    mean = f.mean(0)
    first = min(range(len(f)), key=lambda i: (sum((f[i] - mean) ** 2), i))
    chosen = [first]
    while len(chosen) < k:
        best, best_d = None, -1.0
        for i in range(len(f)):
            d = min(float(np.sum((f[i] - f[c]) ** 2)) for c in chosen)
            if d > best_d:  # strict: ties keep the lowest index
                best, best_d = i, d
        chosen.append(best)
    return chosen


def slow_herding(f: np.ndarray, k: int) -> list[int]:
    mu = f.mean(0)
    chosen, total = [], np.zeros_like(mu)
    for t in range(1, k + 1):
        best, best_d = None, np.inf
        for i in range(len(f)):
            if i in chosen:
                continue
            d = float(np.sum((mu - (total + f[i]) / t) ** 2))
            if d < best_d:
                best, best_d = i, d
        chosen.append(best)
        total = total + f[best]
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kcenter_and_herding_match_slow_loops_in_float64(seed):
    # float64 (x64 on): the jitted and the looped distances agree to the last bit up to summation
    # order, and random Gaussian features have no near-ties at that precision
    f = np.random.default_rng(seed).normal(size=(23, 5))
    with jax.enable_x64(True):
        assert kcenter_greedy(f, 7).tolist() == slow_kcenter(f, 7)
        assert herding(f, 7).tolist() == slow_herding(f, 7)
        assert sorted(herding(f, 23).tolist()) == list(range(23))  # all of them, each once


def test_hand_computed_cases():
    f = np.array([[0.0], [2.0], [10.0], [3.0], [4.0], [-4.0]], np.float32)  # exact in float32
    # k-Center: mean 2.5; 2 (idx 1) and 3 (idx 3) tie nearest -> idx 1; farthest from {2}: 10 (idx 2);
    # then the largest min-distance: -4 (6 from 2) -> idx 5
    assert kcenter_greedy(f, 3).tolist() == [1, 2, 5]
    # Herding: t=1 nearest 2.5 -> idx 1 (tie with idx 3); t=2 (2 + f)/2 = 2.5 at f=3 -> idx 3;
    # t=3 (5 + f)/3 nearest 2.5: f=4 gives 3 (gap 0.5), f=0 gives 1.67 (gap 0.83) -> idx 4
    assert herding(f, 3).tolist() == [1, 3, 4]
    with pytest.raises(ValueError, match="cannot choose 7 of 6"):
        herding(f, 7)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        kcenter_greedy(np.zeros(5), 1)


def test_select_per_class_picks_within_each_class():
    r = np.random.default_rng(0)
    f = r.normal(size=(30, 4))
    labels = np.repeat([2, 0, 1], 10)
    with jax.enable_x64(True):  # float64 as the loop (no float32 near-ties)
        idx = select_per_class(f, labels, 3, "kcenter")
    assert labels[idx].tolist() == [0] * 3 + [1] * 3 + [2] * 3
    for c in range(3):
        members = np.flatnonzero(labels == c)
        expect = members[slow_kcenter(f[members], 3)]
        np.testing.assert_array_equal(idx[3 * c:3 * c + 3], expect)
    with pytest.raises(ValueError, match="fewer than the 11 per class"):
        select_per_class(f, labels, 11, "herding")
    with pytest.raises(ValueError, match="unknown selection"):
        select_per_class(f, labels, 1, "kmeans")


def test_embed_features_batches_like_one_call(tiny_dataset):
    from jaxdd.models import create_network

    key = jax.random.key(0)
    feats = embed_features(tiny_dataset, "convnet", key, batch_size=16)  # 60 images: the last batch is padded
    net = create_network("convnet", num_classes=3, input_shape=tiny_dataset.image_shape)
    v = net.init(jax.random.split(key)[0])
    whole = np.asarray(net.embed(v, tiny_dataset.x_train)).reshape(60, -1)
    # same float32 program on other batch shapes: agreement to float32 rounding of O(1) features
    chex.assert_trees_all_close(feats, whole, rtol=1e-4, atol=1e-5)
    x, y = coreset_sampler("herding")(key, tiny_dataset, 2)
    assert x.shape == (6, 16, 16, 3) and y.tolist() == [0, 0, 1, 1, 2, 2]


def test_baseline_cli_select(tiny_npz, tmp_path):
    out = tmp_path / "b.json"
    assert main(["baseline", "--dataset", tiny_npz, "--ipc", "2,1", "--select", "kcenter", "--models", "1",
                 "--epochs", "1", "--save-sets", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["results"][0]["set"] == "kcenter IPC 2" and res["config"]["select"] == "kcenter"
    assert (tmp_path / "b_kcenter_ipc2.png").exists()
    # the saved sets are the k-Center choices on one randomly initialised ConvNet's features (key(seed))
    ds = load_dataset(tiny_npz)
    feats = embed_features(ds, "convnet", jax.random.key(0))
    for ipc in (2, 1):
        saved = DistilledSet.load(tmp_path / f"b_kcenter_ipc{ipc}")
        np.testing.assert_array_equal(saved.images, ds.x_train[select_per_class(feats, ds.y_train, ipc, "kcenter")])
        assert saved.labels.tolist() == np.repeat([0, 1, 2], ipc).tolist() and saved.dataset == ds.name
    assert main(["baseline", "--dataset", tiny_npz, "--ipc", "1", "--embed-epochs", "2", "--out", str(out)]) == 1
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        coreset_sampler("herding", epochs=-1)
