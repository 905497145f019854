"""Smoke tests of ``jaxdd eval`` and ``jaxdd baseline`` on a tiny npz dataset (1 epoch)."""

import json

import numpy as np
import pytest

from jaxdd.cli import main
from jaxdd.data import load_dataset
from jaxdd.data.distilled import DistilledSet


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    r = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=r.integers(0, 256, (24, 8, 8, 1), dtype=np.uint8), y_train=np.arange(24) % 3,
             x_test=r.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8), y_test=np.arange(12) % 3,
             class_names=np.array(["a", "b", "c"]))
    return path


def test_baseline_cli(npz, tmp_path, capsys):
    out = tmp_path / "base.json"
    rc = main(["baseline", "--dataset", str(npz), "--ipc", "1,2", "--full", "--arch", "convnet-d1-w4",
               "--models", "2", "--epochs", "1", "--seed", "3", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "random IPC 1" in printed and "full" in printed and "±" in printed
    res = json.loads(out.read_text())
    assert res["config"]["command"] == "baseline" and res["config"]["seed"] == 3 and res["config"]["epochs"] == 1
    assert [r["set"] for r in res["results"]] == ["random IPC 1", "random IPC 2", "full"]
    assert [r["train_size"] for r in res["results"]] == [3, 6, 24]
    assert all(len(r["accs"]) == 2 for r in res["results"]) and res["dataset"]["num_classes"] == 3
    for ipc in (1, 2):
        png = tmp_path / f"base_random_ipc{ipc}.png"
        assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_eval_cli_cross_architecture(npz, tmp_path, capsys):
    ds = load_dataset(str(npz))
    idx = np.array([0, 1, 2, 3, 4, 5])
    DistilledSet(images=ds.x_train[idx], labels=ds.y_train[idx], num_classes=3, dataset=str(npz), mean=ds.mean,
                 std=ds.std, config={"method": "test"}).save(tmp_path / "set")
    out = tmp_path / "eval.json"
    rc = main(["eval", "--distilled", str(tmp_path / "set"), "--archs", "convnet-d1-w4,mlp", "--models", "2",
               "--epochs", "1", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "convnet-d1-w4" in printed and "mlp" in printed
    res = json.loads(out.read_text())
    assert res["config"]["command"] == "eval" and res["config"]["model"] == "convnet-d1-w4,mlp"
    assert [r["arch"] for r in res["results"]] == ["convnet-d1-w4", "mlp"]
    assert res["distilled"]["ipc"] == 2 and res["dataset"]["name"] == "tiny"


def test_cli_errors_are_reported_without_traceback(npz, tmp_path, capsys):
    assert main(["baseline", "--dataset", str(npz), "--ipc", "1", "--preset", "nope", "--out",
                 str(tmp_path / "x.json")]) == 1
    assert "unknown evaluation preset" in capsys.readouterr().err
    assert main(["baseline", "--dataset", str(npz), "--ipc", "1,x", "--out", str(tmp_path / "x.json")]) == 1
    assert "--ipc" in capsys.readouterr().err
    assert main(["eval", "--distilled", str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")]) == 1
    assert "not a distilled set" in capsys.readouterr().err
