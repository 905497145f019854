"""The distillation driver and CLI: kill-and-resume, NaN guard, outputs, difficulty tracking."""

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdd.data import load_dataset
from jaxdd.data.distilled import DistilledSet
from jaxdd.distill import RealData, build_method, distill, synthetic_difficulty
from jaxdd.distill.driver import NonFiniteError
from jaxdd.models import create_network
from jaxdd.utils.checkpoint import Checkpointer

ARCH = "mlp-w16"  # fast to compile; the ConvNet paths are covered in test_distill_losses/methods


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_npz):
    root = tmp_path_factory.mktemp("distill")
    ds = load_dataset(tiny_npz)
    net = create_network(ARCH, num_classes=3, input_shape=(8, 8, 1))
    return root, ds, net, RealData.from_dataset(ds)


def _dsa(net, **kw):
    return build_method("dsa", net, ipc=1, batch_real=4, outer_loop=2, inner_loop=1, sdc=0.05, iterations=4, **kw)


def test_kill_and_resume_is_bit_identical(env, tmp_path):
    _, ds, net, real = env
    common = dict(checkpoint_every=2, track_every=1, final_eval=False, progress=False)
    full = distill(_dsa(net), real, ds, out=tmp_path / "a", **common)

    def kill(it, state, metrics):
        if it == 3:  # after the checkpoint at 2, before the one at 4
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(_dsa(net), real, ds, out=tmp_path / "b", callback=kill, **common)
    with Checkpointer(tmp_path / "b" / "checkpoints") as ck:
        assert ck.latest_step() == 2
    with pytest.raises(ValueError, match="already holds a distillation run.*--resume"):
        distill(_dsa(net), real, ds, out=tmp_path / "b", **common)
    resumed = distill(_dsa(net), real, ds, out=tmp_path / "b", resume=True, **common)
    assert resumed.resumed_from == 2
    np.testing.assert_array_equal(np.asarray(resumed.distilled.images), np.asarray(full.distilled.images))
    assert resumed.history == full.history
    assert [h["iteration"] for h in full.history if "grand" in h] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="different method config"):
        distill(_dsa(net, lr_img=0.5), real, ds, out=tmp_path / "b", resume=True, **common)


@dataclasses.dataclass(frozen=True)
class _NaNAt:
    """Wraps a method; its synthetic images become NaN from iteration ``at`` on."""

    inner: Any
    at: int
    name: str = "nan-test"

    @property
    def config(self):
        return self.inner.config

    @property
    def network(self):
        return self.inner.network

    eval_preset = property(lambda self: self.inner.eval_preset)
    extendable = property(lambda self: self.inner.extendable)

    def for_dataset(self, dataset):
        return self

    def init(self, key, real):
        return self.inner.init(key, real)

    def update(self, state, real):
        state, metrics = self.inner.update(state, real)
        return state.replace(images=jnp.where(state.step >= self.at, jnp.nan, state.images)), metrics

    def synthetic(self, state):
        return self.inner.synthetic(state)


@dataclasses.dataclass(frozen=True)
class _CountSynthetic(_NaNAt):
    """Counts ``synthetic`` calls (each one is a full decode for LD3M)."""

    calls: list = dataclasses.field(default_factory=list, hash=False, compare=False)

    def synthetic(self, state):
        self.calls.append(int(state.step))
        return self.inner.synthetic(state)


def test_synthetic_is_computed_once_per_iteration(env, tmp_path):
    """Tracking, quick evaluation, the grid and the final set share one ``synthetic`` per iteration."""
    _, ds, net, real = env
    method = _CountSynthetic(build_method("dm", net, ipc=1, batch_real=4, iterations=2), at=99)
    distill(method, real, ds, out=tmp_path, checkpoint_every=1, track_every=1, eval_every=1, eval_epochs=1,
            eval_models=1, final_eval=False, progress=False)
    assert method.calls == [0, 1, 2]


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(env, tmp_path):
    _, ds, net, real = env
    method = _NaNAt(build_method("dm", net, ipc=1, batch_real=4, iterations=6), at=3)
    with pytest.raises(NonFiniteError, match=r"iteration 3: the synthetic set became NaN or inf.*lower the image "
                                             r"learning rate.*last good checkpoint \(iteration 2\)"):
        distill(method, real, ds, out=tmp_path, checkpoint_every=2, final_eval=False, progress=False)
    with Checkpointer(tmp_path / "checkpoints") as ck:
        assert ck.all_steps() == [2]
        _, state, meta = ck.restore(method.init(jax.random.key(0), real))
    assert np.all(np.isfinite(np.asarray(state.images))) and int(state.step) == 2
    assert [h["iteration"] for h in meta["history"] if "loss" in h] == [1, 2]


def test_outputs_final_evaluation_and_tracking(env, tmp_path):
    _, ds, net, real = env
    method = build_method("dm", net, ipc=2, batch_real=4, iterations=2)
    res = distill(method, real, ds, out=tmp_path, checkpoint_every=1, eval_every=2, eval_epochs=1, eval_models=1,
                  eval_final_epochs=2, eval_final_models=1, progress=False)
    for name in ("grid.png", "difficulty.png", "loss.png", "history.json", "results.json"):
        assert (tmp_path / name).is_file(), name
    loaded = DistilledSet.load(tmp_path / "distilled")
    np.testing.assert_array_equal(loaded.images, np.asarray(res.state.images))
    assert loaded.ipc == 2 and loaded.config["method"] == "dm" and loaded.config["method_config"]["batch_real"] == 4
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["table"][0]["method"] == "dm" and results["table"][0]["epochs"] == 2
    assert 0.0 <= results["table"][0]["acc_mean"] <= 100.0
    assert results["config"]["eval_preset"] == "dc-dsa"
    hist = json.loads((tmp_path / "history.json").read_text())
    assert [h["iteration"] for h in hist if "grand" in h] == [0, 1, 2]
    assert [h["iteration"] for h in hist if "eval_acc" in h] == [2]
    # the tracked difficulty is the mean GraNd over the same fresh networks
    k_track = jax.random.fold_in(jax.random.key(0), 2)
    g = np.asarray(synthetic_difficulty(net, res.state.images, res.state.labels, k_track, 4)).mean(0)
    assert [h for h in hist if "grand" in h][-1]["grand"] == pytest.approx(float(g.mean()), rel=1e-5)
    assert results["final_grand"] == pytest.approx(float(g.mean()), rel=1e-5)


def test_synthetic_difficulty_is_grand_under_fresh_networks(env):
    """Per-example gradient norms under fresh networks, against one jax.grad per example."""
    _, _, net, _ = env
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 8, 1)), jnp.float32)
    y = jnp.array([0, 1, 2, 0])
    key = jax.random.key(7)
    got = np.asarray(synthetic_difficulty(net, x, jax.nn.one_hot(y, 3), key, 3))  # soft rows -> argmax
    for m, k in enumerate(jax.random.split(key, 3)):
        v = net.init(k)
        for i in range(4):
            g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
                net.logits({"params": p}, x[i:i + 1]), y[i:i + 1]).sum())(v["params"])
            norm = np.sqrt(sum(float(jnp.sum(t ** 2)) for t in jax.tree.leaves(g)))
            assert got[m, i] == pytest.approx(norm, rel=1e-5)


def test_cli_runs_writes_and_reports_errors(env, tiny_npz, tmp_path, capsys):
    from jaxdd.cli import main

    root, ds, _, _ = env
    data = tiny_npz
    scores = tmp_path / "scores.npz"
    np.savez(scores, scores=np.random.default_rng(0).uniform(size=24))
    out = tmp_path / "run"
    argv = ["distill", "--method", "dm", "--dataset", data, "--model", ARCH, "--ipc", "1", "--iterations", "2",
            "--batch-real", "4", "--sdc", "0.01", "--weights", str(scores), "--eval-epochs", "1", "--eval-models", "1",
            "--checkpoint-every", "1", "--set", "momentum=0.9", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "acc_mean" in printed and "synthetic-set GraNd" in printed
    results = json.loads((out / "results.json").read_text())
    cfg = results["config"]
    assert cfg["method_config"]["momentum"] == 0.9 and cfg["method_config"]["sdc"] == 0.01
    assert cfg["difficulty_weights"] and cfg["weights"] == str(scores)
    assert main(argv) == 1  # the folder holds a run and --resume was not given
    assert "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0  # already finished: nothing left to run, same outputs
    assert main(["distill", "--dataset", data, "--model", ARCH, "--ipc", "9", "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 1
    assert "ipc=9 is larger than class 0" in capsys.readouterr().err
    assert main(["distill", "--dataset", data, "--model", ARCH, "--set", "lr_imgg=1", "--out", str(tmp_path / "y"),
                 "--no-progress"]) == 1
    assert "has no setting(s) ['lr_imgg']" in capsys.readouterr().err


def test_driver_with_eight_devices_equals_one(env, sharding_spy):
    """distill(..., mesh=8 devices): the state is placed on the mesh, every real batch is split over
    it, and two DSA iterations (2 outer loops, SDC) give the images of the single-device run."""
    from jaxdd.utils.mesh import data_mesh

    _, ds, net, real = env
    mesh = data_mesh(8)
    kw = dict(ipc=1, batch_real=8, outer_loop=2, inner_loop=1, sdc=0.05, iterations=2)
    common = dict(track_every=10, final_eval=False, progress=False)
    one = distill(build_method("dsa", net, **kw), real, ds, **common)
    assert sharding_spy.splits(8) == []
    eight = distill(build_method("dsa", net, mesh=mesh, **kw), real, ds, mesh=mesh, **common)
    np.testing.assert_allclose(eight.distilled.images, one.distilled.images, rtol=1e-4, atol=1e-5)
    assert eight.distilled.config["devices"] == 8 and one.distilled.config["devices"] == 1
    # placement: the state lives on the 8 devices and the real batches were split over them
    assert len(eight.state.images.sharding.device_set) == 8 and len(one.state.images.sharding.device_set) == 1
    assert ((3, 8, 8, 8, 1), (None, "data")) in sharding_spy.splits(8)
