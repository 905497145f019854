"""``jaxdd pool`` and ``jaxdd sample`` end to end on a tiny on-disk dataset (MLP classifier, 1 epoch)."""

import json

import numpy as np
import pytest

from jaxdd.cli import main
from jaxdd.data.distilled import DistilledSet


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    r = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=r.integers(0, 256, size=(60, 16, 16, 3), dtype=np.uint8), y_train=np.repeat(np.arange(3), 20),
             x_test=r.integers(0, 256, size=(15, 16, 16, 3), dtype=np.uint8), y_test=np.repeat(np.arange(3), 5),
             class_names=np.array(["a", "b", "c"]))
    return str(path)


def test_pool_then_sample(tiny_npz, tmp_path, capsys):
    pool_dir, out = tmp_path / "pool", tmp_path / "dgs"
    assert main(["pool", "--method", "real", "--ipc", "2", "--dataset", tiny_npz, "--out", str(pool_dir)]) == 0
    meta = json.loads((pool_dir / "pool.json").read_text())
    assert meta["per_class"] == [10, 10, 10] and meta["config"]["method"] == "real"
    assert (pool_dir / "pool.png").exists() and (pool_dir / "pool_build.json").exists()
    capsys.readouterr()

    args = ["sample", "--pool", str(pool_dir), "--dataset", tiny_npz, "--ipc", "2", "--target", "uniform",
            "--out", str(out), "--clf-model", "mlp", "--clf-epochs", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "class" in printed and "filled" in printed and "trained" in printed
    chosen = DistilledSet.load(out)
    assert chosen.images.shape == (6, 16, 16, 3) and chosen.labels.tolist() == [0, 0, 1, 1, 2, 2]
    pool_images = np.load(pool_dir / "pool.npz")["images"]
    np.testing.assert_array_equal(chosen.images, pool_images[chosen.config["pool_indices"]])
    assert chosen.config["method"] == "dgs" and chosen.config["target"] == "uniform"
    record = json.loads((out / "sample.json").read_text())
    assert record["config"]["ipc"] == 2 and len(record["per_class"]) == 3
    assert all(r["target"] == "1 1 0 0 0 0 0 0 0 0" for r in record["per_class"])
    for name in ("chosen.png", "difficulty.png", "scores.npz", "classifier/classifier.json"):
        assert (out / name).exists(), name

    # same seed and the saved classifier: the same choice; the random baseline from the same pool
    assert main(args[:-4] + ["--out", str(tmp_path / "again"), "--classifier", str(out / "classifier")]) == 0
    assert "loaded" in capsys.readouterr().out
    assert DistilledSet.load(tmp_path / "again").config["pool_indices"] == chosen.config["pool_indices"]
    assert main(args[:8] + ["random", "--out", str(tmp_path / "rand"), "--classifier", str(out / "classifier")]) == 0
    assert len(DistilledSet.load(tmp_path / "rand").labels) == 6


def test_cli_errors_are_one_line(tiny_npz, tmp_path, capsys):
    pool_dir = tmp_path / "pool"
    assert main(["pool", "--method", "real", "--ipc", "1", "--size", "2", "--dataset", tiny_npz, "--out", str(pool_dir)]) == 0
    capsys.readouterr()
    assert main(["sample", "--pool", str(pool_dir), "--dataset", tiny_npz, "--ipc", "3", "--target", "hill",
                 "--out", str(tmp_path / "x"), "--clf-model", "mlp", "--clf-epochs", "1"]) == 1
    assert "fewer images than IPC=3 for class 0 (a) (2 images)" in capsys.readouterr().err
    assert main(["sample", "--pool", str(pool_dir), "--dataset", tiny_npz, "--ipc", "1", "--target", "bell",
                 "--out", str(tmp_path / "x")]) == 1
    assert "neither a preset" in capsys.readouterr().err
    assert main(["pool", "--method", "real", "--dataset", tiny_npz, "--out", str(pool_dir)]) == 1
    assert "--method needs --ipc" in capsys.readouterr().err


def test_pool_from_distillation_runs(tiny_npz, tmp_path, capsys):
    out = tmp_path / "dm_pool"
    assert main(["pool", "--method", "dm", "--runs", "2", "--ipc", "1", "--iterations", "2", "--batch-real", "2",
                 "--set", "dsa=false", "--model", "convnet-d1-w8", "--dataset", tiny_npz, "--seed", "5",
                 "--out", str(out)]) == 0
    assert "distill" in capsys.readouterr().out
    meta = json.loads((out / "pool.json").read_text())
    assert meta["per_class"] == [2, 2, 2]
    assert [(s["kind"], s["method"], s["seed"], s["iteration"]) for s in meta["sources"]] == [
        ("distill", "dm", 5, 2), ("distill", "dm", 6, 2)]
    assert meta["sources"][0]["config"]["method_config"]["batch_real"] == 2
    assert meta["sources"][0]["config"]["method_config"]["dsa"] is False
    with np.load(out / "pool.npz") as z:
        assert z["seed"].tolist() == [5, 5, 5, 6, 6, 6] and z["iteration"].tolist() == [2] * 6
        run0 = DistilledSet.load(out / "runs" / "seed5" / "distilled")
        np.testing.assert_array_equal(z["images"][:3], run0.images)
    # merging existing sets and pools with --from
    merged = tmp_path / "merged"
    assert main(["pool", "--from", str(out), str(out / "runs" / "seed6" / "distilled"), "--dataset", tiny_npz,
                 "--out", str(merged)]) == 0
    assert json.loads((merged / "pool.json").read_text())["per_class"] == [3, 3, 3]
