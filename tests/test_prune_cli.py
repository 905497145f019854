"""``jaxdd score`` and ``jaxdd prune`` end to end on a tiny npz dataset."""

import json

import numpy as np
import pytest

from jaxdd.cli import main
from jaxdd.data import load_dataset
from jaxdd.utils.io import read_json


@pytest.fixture(scope="module")
def npz_dataset(tmp_path_factory):
    r = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("data")
    path = d / "tiny.npz"
    np.savez(path, x_train=r.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8), y_train=np.arange(24) % 3,
             x_test=r.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), y_test=np.arange(6) % 3,
             class_names=np.array(["a", "b", "c"]))
    other = d / "other.npz"
    np.savez(other, x_train=r.integers(0, 256, (21, 8, 8, 3), dtype=np.uint8), y_train=np.arange(21) % 3,
             x_test=r.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), y_test=np.arange(6) % 3)
    return path, other


def test_score_then_prune(npz_dataset, tmp_path, capsys):
    data, _ = npz_dataset
    out = tmp_path / "scores.npz"
    rc = main(["score", "--dataset", str(data), "--model", "convnet-w8-d1", "--score", "grand", "--models", "2",
               "--epochs", "1", "--score-epochs", "0,1", "--train-batch", "8", "--batch-size", "16",
               "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "median" in printed and "wrote" in printed
    with np.load(out) as z:
        assert z["scores"].shape == (24,) and z["raw"].shape == (2, 2, 24)
        np.testing.assert_allclose(z["scores"], z["raw"].mean((0, 1)), rtol=1e-6)
        np.testing.assert_array_equal(z["indices"], np.arange(24))
        cfg = json.loads(str(z["config"]))
    assert cfg["score"] == "grand" and cfg["num_models"] == 2 and cfg["score_epochs"] == [0, 1]
    summary = read_json(tmp_path / "scores.json")
    assert summary["config"]["model"] == "convnet-w8-d1" and len(summary["per_class"]) == 4
    assert (tmp_path / "scores_extremes.png").stat().st_size > 0 and (tmp_path / "scores_hist.png").exists()

    sub = tmp_path / "subset.npz"
    assert main(["prune", "--dataset", str(data), "--scores", str(out), "--keep", "0.5", "--order", "hard",
                 "--out", str(sub)]) == 0
    assert "kept" in capsys.readouterr().out
    ds = load_dataset(str(sub))
    np.testing.assert_array_equal(np.bincount(ds.y_train), [4, 4, 4])
    with np.load(out) as z, np.load(sub) as s:
        scores, kept = z["scores"], s["train_indices"]
        for c in range(3):  # the kept examples are the hardest of their class
            idx = np.flatnonzero(np.arange(24) % 3 == c)
            np.testing.assert_array_equal(np.sort(kept[kept % 3 == c]), np.sort(idx[np.argsort(-scores[idx])[:4]]))
    assert read_json(tmp_path / "subset.json")["config"]["order"] == "hard"


def test_checkpoint_scoring_and_errors(npz_dataset, tmp_path, capsys):
    import jax

    from jaxdd.models import create_network
    from jaxdd.utils.checkpoint import Checkpointer

    data, other = npz_dataset
    net = create_network("convnet-w8-d1", num_classes=3, input_shape=(8, 8, 3))
    with Checkpointer(tmp_path / "ck") as ck:
        ck.save(3, net.init(jax.random.key(0)))
    out = tmp_path / "s.npz"
    assert main(["score", "--dataset", str(data), "--model", "convnet-w8-d1", "--score", "confidence",
                 "--checkpoint", str(tmp_path / "ck"), "--out", str(out)]) == 0
    with np.load(out) as z:
        assert z["raw"].shape == (1, 1, 24) and np.all((z["scores"] >= 0) & (z["scores"] <= 1))
    capsys.readouterr()
    # keep outside (0, 1]
    assert main(["prune", "--dataset", str(data), "--scores", str(out), "--keep", "1.5", "--out",
                 str(tmp_path / "x.npz")]) == 1
    assert "keep must be a fraction in (0, 1]" in capsys.readouterr().err
    # scores of another dataset
    assert main(["prune", "--dataset", str(other), "--scores", str(out), "--keep", "0.5", "--out",
                 str(tmp_path / "x.npz")]) == 1
    assert "score the same dataset" in capsys.readouterr().err
    assert main(["prune", "--dataset", str(data), "--scores", str(tmp_path / "missing.npz"), "--keep", "0.5",
                 "--out", str(tmp_path / "x.npz")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["score", "--dataset", str(data), "--model", "convnet-w8-d1", "--score", "loss", "--epochs", "1",
                 "--score-epochs", "5", "--out", str(tmp_path / "y.npz")]) == 1
    assert "must lie in" in capsys.readouterr().err
