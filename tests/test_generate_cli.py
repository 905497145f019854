"""``jaxdd generate`` end to end with a tiny prior trained here on a small real Fashion-MNIST subset."""

import json

import numpy as np
import pytest

from jaxdd.cli import main
from jaxdd.data.distilled import DistilledSet
from test_generative_training import CLI_MODEL, fmnist, fmnist_npz  # noqa: F401 (fixtures)

CLF = ["--clf-model", "mlp", "--clf-epochs", "1", "--steps", "4", "--no-progress"]


@pytest.fixture(scope="module")
def prior_dir(fmnist_npz, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("prior")
    assert main(["prior", "train", "--dataset", str(fmnist_npz), "--steps", "4", "--ae-steps", "2", *CLI_MODEL,
                 "--sample-every", "4", "--grid-per-class", "1", "--sample-steps", "2", "--out", str(out),
                 "--no-progress"]) == 0
    return out


def test_generate_dag_pool_and_acs_outputs(prior_dir, fmnist_npz, fmnist, tmp_path, capsys):  # noqa: F811
    from jaxdd.sample.pool import load_pool

    base = ["generate", "--prior", str(prior_dir), "--dataset", str(fmnist_npz), *CLF]
    # DAG on a 2 x IPC pool, then DGS: IPC 1 of each class chosen from the pool
    out = tmp_path / "dag"
    assert main([*base, "--ipc", "1", "--guidance", "dag", "--target", "uniform", "--pool-factor", "2",
                 "--window", "1,2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kl_target_achieved" in printed and "s/image" in printed
    ds = DistilledSet.load(out)
    assert ds.images.shape == (10, 28, 28, 1) and ds.labels.tolist() == list(range(10))
    pool = load_pool(out / "pool", fmnist)
    assert len(pool) == 20 and np.all(pool.class_sizes() == 2) and pool.sources[0]["guidance"] == "dag"
    np.testing.assert_array_equal(ds.images, pool.images[ds.config["pool_indices"]])
    record = json.loads((out / "generate.json").read_text())
    assert record["config"]["guidance"] == "dag" and len(record["per_class"]) == 10 and "dag_abs_error" in record
    assert 0 <= record["coverage"] <= 1 and record["seconds_per_image"] > 0
    assert np.isnan(record["diversity"])  # IPC 1: no pair within a class
    for name in ("samples.png", "difficulty.png", "classifier/classifier.json"):
        assert (out / name).exists(), name

    # the pool goes to `jaxdd sample`, the set to `jaxdd eval`
    assert main(["sample", "--pool", str(out / "pool"), "--dataset", str(fmnist_npz), "--ipc", "1", "--target",
                 "hill", "--out", str(tmp_path / "dgs"), "--classifier", str(out / "classifier")]) == 0
    assert main(["eval", "--distilled", str(out), "--archs", "mlp", "--models", "1", "--epochs", "1",
                 "--out", str(tmp_path / "eval.json")]) == 0
    capsys.readouterr()

    # ACS, K = 2 at IPC 2 (the classifier from before is reused)
    acs = tmp_path / "acs"
    acs_args = [*base, "--ipc", "2", "--guidance", "acs", "--curricula", "2", "--disc-epochs", "2",
                "--disc-model", "mlp", "--window", "1,2", "--classifier", str(out / "classifier"), "--out", str(acs)]
    assert main(acs_args) == 0
    record = json.loads((acs / "generate.json").read_text())
    assert record["acs"]["curricula"] == 2 and len(record["disc_loss"]) == 2 and record["diversity"] > 0
    assert (acs / "checkpoints").exists() and DistilledSet.load(acs).labels.tolist() == list(np.repeat(range(10), 2))
    # the run is done: --resume reruns nothing and writes the same set
    first = DistilledSet.load(acs).images
    assert main([*acs_args, "--resume"]) == 0
    np.testing.assert_array_equal(DistilledSet.load(acs).images, first)
    assert json.loads((acs / "generate.json").read_text())["curricula_run_now"] == []


def test_generate_errors_before_work(prior_dir, fmnist_npz, tmp_path, capsys):  # noqa: F811
    base = ["generate", "--prior", str(prior_dir), "--dataset", str(fmnist_npz), *CLF]
    cases = [(["--ipc", "3", "--guidance", "acs", "--curricula", "2"], "must divide IPC=3"),
             (["--ipc", "1", "--target", "bell"], "neither a preset"),
             (["--ipc", "1", "--guidance", "dag", "--window", "3,9"], "guidance window"),
             (["--ipc", "1", "--curricula", "2"], "--curricula applies to --guidance acs"),
             (["--ipc", "1", "--resume"], "--resume continues an ACS run")]
    for extra, message in cases:
        out = tmp_path / "x"
        assert main([*base, *extra, "--out", str(out)]) == 1, extra
        assert message in capsys.readouterr().err, extra
        assert not out.exists(), extra  # nothing written
    r = np.random.default_rng(0)
    other = tmp_path / "other.npz"
    np.savez(other, x_train=r.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8), y_train=np.arange(12) % 3,
             x_test=r.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8), y_test=np.arange(3))
    assert main(["generate", "--prior", str(prior_dir), "--dataset", str(other), "--ipc", "1", "--out",
                 str(tmp_path / "y"), "--no-progress"]) == 1
    assert "10 classes vs 3" in capsys.readouterr().err and not (tmp_path / "y").exists()
