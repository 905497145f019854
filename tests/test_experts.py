"""Expert buffers: training, per-expert files, kill-and-resume, streaming reads, refusals, CLI."""

import json

import jax
import numpy as np
import pytest

import jaxdd.experts.training as training
from jaxdd.data.dataset import from_arrays
from jaxdd.experts import ExpertBuffer, ExpertConfig, params_to_vector, train_experts, vector_to_params
from jaxdd.models import create_network
from jaxdd.utils.mesh import data_mesh

CFG = ExpertConfig(epochs=2, batch_size=8)


def make_dataset(name="tiny8", seed=0, classes=("a", "b", "c")):
    r = np.random.default_rng(seed)
    x = r.integers(0, 256, size=(24, 8, 8, 1), dtype=np.uint8)
    xt = r.integers(0, 256, size=(9, 8, 8, 1), dtype=np.uint8)
    return from_arrays(name, x, np.repeat(np.arange(3), 8), xt, np.repeat(np.arange(3), 3), class_names=list(classes))


@pytest.fixture(scope="module")
def tiny():
    ds = make_dataset()
    return ds, create_network("mlp-w16", num_classes=3, input_shape=(8, 8, 1))


@pytest.fixture(scope="module")
def buffer(tiny, tmp_path_factory):
    ds, net = tiny
    return train_experts(ds, net, tmp_path_factory.mktemp("buf") / "b", 3, CFG, parallel=1, progress=False)


def test_buffer_layout_and_streaming(tiny, buffer):
    ds, net = tiny
    assert buffer.num_experts == 3 and buffer.num_epochs == 2 and buffer.num_params == net.num_params()
    files = sorted(p.name for p in buffer.path.iterdir() if not p.name.startswith("events.out.tfevents."))
    assert files == ["buffer.json", "expert_00000.npy", "expert_00001.npy", "expert_00002.npy"]
    for i, traj in buffer.stream():
        assert isinstance(traj, np.memmap) and traj.shape == (3, buffer.num_params) and traj.dtype == np.float32
        # row 0 is the initialisation of expert i: net.init(fold_in(fold_in(key(seed), i), 0))
        init = net.init(jax.random.fold_in(jax.random.fold_in(jax.random.key(0), i), 0))["params"]
        np.testing.assert_allclose(traj[0], params_to_vector(init), rtol=1e-6)
        assert not np.allclose(traj[1], traj[0]) and not np.allclose(traj[2], traj[1])
    np.testing.assert_array_equal(buffer.flat(1, 2), np.load(buffer.path / "expert_00001.npy")[2])
    pair = buffer.pair(np.int32(2), np.int32(0), 2)
    np.testing.assert_array_equal(pair, np.load(buffer.path / "expert_00002.npy")[[0, 2]])
    params = buffer.params(0, 1, net)
    assert jax.tree.structure(params) == jax.tree.structure(net.init(jax.random.key(0))["params"])
    np.testing.assert_array_equal(params_to_vector(params), buffer.flat(0, 1))
    np.testing.assert_array_equal(params_to_vector(vector_to_params(buffer.flat(0, 1), net)), buffer.flat(0, 1))
    index = json.loads((buffer.path / "buffer.json").read_text())
    assert index["train"]["lr"] == 0.01 and index["train"]["momentum"] == 0.0 and index["train"]["augment"]
    assert [e["index"] for e in index["experts"]] == [0, 1, 2]
    with pytest.raises(ValueError, match="epoch 3 is outside"):
        buffer.flat(0, 3)
    with pytest.raises(ValueError, match="expert 5 does not exist"):
        buffer.flat(5, 0)


def test_experts_are_independent_of_grouping(tiny, buffer, tmp_path):
    ds, net = tiny
    grouped = train_experts(ds, net, tmp_path / "g", 3, CFG, parallel=2, progress=False)
    for i in range(3):  # vmapped with another expert or alone: the same trajectory
        np.testing.assert_allclose(grouped.trajectory(i), buffer.trajectory(i), rtol=1e-5, atol=1e-6)


def test_kill_and_resume_is_bit_identical(tiny, buffer, tmp_path, monkeypatch):
    ds, net = tiny
    real_fit = training.fit
    calls = {"n": 0}

    def dying_fit(*args, **kwargs):  # killed after the first epoch of the second expert
        calls["n"] += 1
        if calls["n"] == 2:
            record = kwargs["on_epoch"]

            def die(epoch, state, metrics):
                record(epoch, state, metrics)
                raise KeyboardInterrupt

            kwargs["on_epoch"] = die
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(training, "fit", dying_fit)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        train_experts(ds, net, out, 3, CFG, parallel=1, progress=False)
    monkeypatch.undo()
    assert [e["index"] for e in ExpertBuffer(out).experts] == [0]
    assert (out / ".expert_00001.npy.partial").exists() and not (out / "expert_00001.npy").exists()
    first = (out / "expert_00000.npy").stat().st_mtime_ns
    resumed = train_experts(ds, net, out, 3, CFG, parallel=1, progress=False)
    assert (out / "expert_00000.npy").stat().st_mtime_ns == first  # finished experts are kept
    assert resumed.num_experts == 3
    for i in range(3):
        np.testing.assert_array_equal(resumed.trajectory(i), buffer.trajectory(i))
    with pytest.raises(ValueError, match="different settings"):
        train_experts(ds, net, out, 3, ExpertConfig(epochs=3, batch_size=8), progress=False)


def test_eight_devices_equal_one(tiny, buffer, tmp_path, sharding_spy):
    ds, net = tiny
    sharded = train_experts(ds, net, tmp_path / "s", 1, CFG, mesh=data_mesh(8), progress=False)
    np.testing.assert_allclose(sharded.trajectory(0), buffer.trajectory(0), rtol=1e-4, atol=1e-6)
    # placement: the training minibatches were split over the 8 devices
    assert any(spec == (None, "data") for _, spec in sharding_spy.splits(8)), sharding_spy.seen


def test_buffer_of_another_architecture_or_dataset_is_refused(tiny, buffer):
    ds, net = tiny
    buffer.check_compatible(net, ds)
    with pytest.raises(ValueError, match="trained with network 'mlp-w16', not 'mlp-w8'"):
        buffer.check_compatible(create_network("mlp-w8", num_classes=3, input_shape=(8, 8, 1)))
    with pytest.raises(ValueError, match="different layout"):
        buffer.check_compatible(create_network("mlp-w16", num_classes=4, input_shape=(8, 8, 1)))
    with pytest.raises(ValueError, match="was trained on 'tiny8', which does not match 'other'"):
        buffer.check_compatible(net, make_dataset("other", seed=5, classes=("x", "y", "z")))
    with pytest.raises(FileNotFoundError, match="not an expert buffer"):
        ExpertBuffer(buffer.path / "nowhere")
    with pytest.raises(ValueError, match="num_experts"):
        train_experts(ds, net, buffer.path, 0, CFG)
    with pytest.raises(ValueError, match="epochs"):
        ExpertConfig(epochs=0)


def test_cli_trains_resumes_and_reports(tmp_path, tiny_npz, capsys):
    from jaxdd.cli import main

    out = tmp_path / "buffers"
    args = ["experts", "--dataset", tiny_npz, "--num-experts", "1", "--epochs", "1", "--arch", "mlp-w16",
            "--batch", "8", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "expert" in text and "test_acc" in text and "1 experts x 1 epochs" in text
    summary = json.loads((out / "experts.json").read_text())
    assert summary["config"]["num_experts"] == 1 and len(summary["experts"]) == 1
    args[args.index("--num-experts") + 1] = "2"
    assert main(args) == 0  # resumes: adds the second expert
    assert ExpertBuffer(out).num_experts == 2
    args[args.index("--epochs") + 1] = "2"
    assert main(args) == 1  # other settings: refused, no traceback
    assert "different settings" in capsys.readouterr().err
