"""MTT as a distillation method: buffer checks, one update against a direct computation, SDC,
kill-and-resume through the driver, 8 devices vs 1, the CLI."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.data import load_dataset
from jaxdd.distill import RealData, build_method, distill
from jaxdd.augment import dsa
from jaxdd.distill.trajectory import student_plan
from jaxdd.experts import ExpertConfig, train_experts
from jaxdd.models import create_network
from jaxdd.utils.mesh import data_mesh

ARCH = "mlp-w16"
SETTINGS = dict(syn_steps=3, expert_epochs=1, max_start_epoch=2, lr_img=1.0, lr_lr=1e-4, iterations=4)


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_npz):
    root = tmp_path_factory.mktemp("mtt")
    ds = load_dataset(tiny_npz)
    net = create_network(ARCH, num_classes=3, input_shape=(8, 8, 1))
    buf = train_experts(ds, net, root / "buffer", 2, ExpertConfig(epochs=3, batch_size=8), parallel=2,
                        progress=False)
    return root, ds, net, buf, RealData.from_dataset(ds)


def mtt(env, **kw):
    _, _, net, buf, _ = env
    return build_method("mtt", kw.pop("network", net), mesh=kw.pop("mesh", None), buffer=str(buf.path),
                        **{**SETTINGS, "ipc": 2, **kw})


def test_config_resolution_and_refusals(env, tiny_npz):
    root, ds, net, buf, _ = env
    m = build_method("mtt", net, buffer=str(buf.path), ipc=1, max_start_epoch=2)
    # unset fields come from the authors' row of the buffer's dataset (no row for 'tiny': CIFAR-10's)
    assert m.config.syn_steps == 50 and m.config.expert_epochs == 2 and m.config.lr_teacher == 0.01
    # grey "tiny" is no digit dataset: flip kept
    assert "cifar10 ipc 1" in m.config.defaults_source and m.config.dsa_strategy == "color_crop_cutout_flip_scale_rotate"
    fm = build_method("mtt", net, buffer=str(buf.path), ipc=10, defaults="fashion_mnist", max_start_epoch=1)
    assert fm.config.syn_steps == 20 and "fashion_mnist ipc 10 (ours)" in fm.config.defaults_source
    with pytest.raises(ValueError, match="needs an expert buffer"):
        build_method("mtt", net, ipc=1)
    with pytest.raises(ValueError, match="trained with network 'mlp-w16', not 'mlp-w8'"):
        mtt(env, network=create_network("mlp-w8", num_classes=3, input_shape=(8, 8, 1)))
    with pytest.raises(ValueError, match=r"holds epochs 0..3"):
        mtt(env, max_start_epoch=3, expert_epochs=2)
    with pytest.raises(ValueError, match="memory must be one of"):
        mtt(env, memory="magic")
    other = load_dataset(tiny_npz, zca=True)
    with pytest.raises(ValueError, match="ZCA off in the buffer, on here"):
        distill(mtt(env), RealData.from_dataset(other), other, final_eval=False, progress=False)


def _unrolled_student_loss(net, images, labels, lr, start, target, rows, keys, dsa_strategy, sdc):
    """MTT's loss written out (mtt-distillation ``distill.py``): N plain SGD steps of the student from
    the expert's epoch-t parameters on the planned minibatches (per-sample DSA, train mode), the
    normalised distance ‖θ_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖², plus λ times the mean over steps
    of the mean per-example gradient norm at each student state (SDC), one example at a time."""
    leaves = lambda tree: jax.tree.leaves(tree)  # noqa: E731
    params, pens = start, []
    for idx, k in zip(rows, keys):  # the minibatch rows (numpy) and DSA keys of the steps
        xb, yb = images[idx], labels[idx]
        if dsa_strategy:
            xb = dsa(k, xb, dsa_strategy, siamese=False)

        def ce(p, xb, yb):
            logits, _ = net.apply({"params": p}, xb, train=True)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, yb[:, None], -1)[:, 0])

        norms = []
        for i in range(len(idx)):
            g_i = jax.grad(ce)(params, xb[i:i + 1], yb[i:i + 1])
            norms.append(jnp.sqrt(sum(jnp.sum(t ** 2) for t in leaves(g_i))))
        pens.append(sum(norms) / len(norms))
        g = jax.grad(ce)(params, xb, yb)
        params = jax.tree.map(lambda p, gi: p - lr * gi, params, g)
    num = sum(jnp.sum((a - b) ** 2) for a, b in zip(leaves(params), leaves(target)))
    den = sum(jnp.sum((a - b) ** 2) for a, b in zip(leaves(start), leaves(target)))
    return num / den + sdc * sum(pens) / len(pens)


def test_update_matches_an_unrolled_student_written_out(env):
    """One MTT update against the loss recomputed with a plain Python unroll of the student (its
    minibatches and DSA keys from the documented ``student_plan``), and the first SGD step."""
    _, ds, net, buf, real = env
    m = mtt(env, sdc=0.5, batch_syn=4)  # 6 images in batches of 4: 3 steps span two epochs
    cfg = m.config
    state = m.init(jax.random.key(0), real)
    assert state.images.shape == (6, 8, 8, 1) and state.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert float(state.syn_lr) == pytest.approx(0.01)
    new, metrics = jax.jit(m.update)(state, real)
    e, t = int(metrics["expert"]), int(metrics["start_epoch"])
    assert 0 <= e < 2 and 0 <= t < 2 and int(new.step) == 1
    plan = student_plan(jax.random.split(state.key, 4)[3], 6, 3, 4)
    rows, keys = np.asarray(plan.batches), [plan.aug_keys[i] for i in range(3)]
    assert sorted(rows[:2].ravel().tolist()[:6]) == list(range(6))  # the first epoch sees every image
    start, target = buf.params(e, t, net), buf.params(e, t + 1, net)

    def unrolled(images, lr):
        return _unrolled_student_loss(net, images, state.labels, lr, start, target, rows, keys, cfg.dsa_strategy, 0.5)

    loss, (g_img, g_lr) = jax.jit(jax.value_and_grad(unrolled, argnums=(0, 1)))(state.images, state.syn_lr)
    # float32 losses of order 1: summation-order noise ~1e-7, far below rtol 1e-5
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], metrics["match"] + 0.5 * metrics["sdc"], rtol=1e-5)
    # first SGD step (momentum buffers start at zero): x <- x - lr_img g, α <- α - lr_lr g_α
    np.testing.assert_allclose(new.images, state.images - 1.0 * g_img, rtol=1e-5,
                               atol=1e-6 * float(jnp.abs(g_img).max()))
    np.testing.assert_allclose(new.syn_lr, state.syn_lr - 1e-4 * g_lr, rtol=1e-5)
    assert float(jnp.abs(g_lr)) > 0 and not np.allclose(new.images, state.images)
    images, labels, lr = m.synthetic(new)
    assert labels.dtype == jnp.int32 and float(lr) == float(new.syn_lr)


def test_kill_and_resume_through_the_driver(env, tmp_path, monkeypatch):
    import jaxdd.distill.driver as driver

    _, ds, _, _, real = env
    straight = distill(mtt(env), real, ds, out=tmp_path / "a", checkpoint_every=2, final_eval=False, progress=False)

    def killed(*args, **kwargs):  # the process dies right after the checkpoint of iteration 2 is committed
        raise KeyboardInterrupt

    monkeypatch.setattr(driver, "_save_grid", killed)
    with pytest.raises(KeyboardInterrupt):
        distill(mtt(env), real, ds, out=tmp_path / "b", checkpoint_every=2, final_eval=False, progress=False)
    monkeypatch.undo()
    resumed = distill(mtt(env), real, ds, out=tmp_path / "b", resume=True, checkpoint_every=2, final_eval=False,
                      progress=False)
    assert resumed.resumed_from == 2
    np.testing.assert_array_equal(resumed.distilled.images, straight.distilled.images)
    assert resumed.distilled.lr == straight.distilled.lr
    assert [h.get("expert") for h in resumed.history] == [h.get("expert") for h in straight.history]
    with pytest.raises(ValueError, match="different method config"):
        distill(mtt(env, lr_img=5.0), real, ds, out=tmp_path / "b", resume=True, final_eval=False, progress=False)


def test_eight_devices_equal_one(env, sharding_spy):
    _, _, _, _, real = env
    one, eight = mtt(env, ipc=8, batch_syn=8), mtt(env, ipc=8, batch_syn=8, mesh=data_mesh(8))
    assert one.config == eight.config
    state = one.init(jax.random.key(1), real)
    a, ma = jax.jit(one.update)(state, real)
    assert sharding_spy.splits(8) == []
    b, mb = jax.jit(eight.update)(state, real)
    np.testing.assert_allclose(mb["loss"], ma["loss"], rtol=1e-5)
    np.testing.assert_allclose(b.images, a.images, rtol=1e-4, atol=1e-5)
    # placement: the student batches (8 of the 24 images) were split over the 8 devices
    assert ((8, 8, 8, 1), ("data",)) in sharding_spy.splits(8)
    assert len(b.images.sharding.device_set) == 8 and len(a.images.sharding.device_set) == 1
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        mtt(env, ipc=2, mesh=data_mesh(8)).init(jax.random.key(0), real)


def test_cli_distills_with_a_buffer(env, tiny_npz, tmp_path, capsys):
    from jaxdd.cli import main

    root, _, _, buf, _ = env
    out = tmp_path / "run"
    rc = main(["distill", "--method", "mtt", "--dataset", tiny_npz, "--model", ARCH, "--ipc", "1",
               "--iterations", "2", "--lr-img", "1", "--set", f"buffer={buf.path}", "--set", "syn_steps=2", "--set",
               "max_start_epoch=2", "--set", "expert_epochs=1", "--eval-epochs", "2", "--eval-models", "1",
               "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "mtt" in text and "mtt:" in text
    from jaxdd.data.distilled import DistilledSet

    d = DistilledSet.load(out / "distilled")
    assert d.lr is not None and d.config["method_config"]["buffer"] == str(buf.path)
    assert d.config["eval_preset"] == "mtt"


def test_config_is_recorded_resolved(env):
    m = mtt(env)
    d = dataclasses.asdict(m.config)
    assert d["syn_steps"] == 3 and d["lr_teacher"] == 0.01 and d["min_start_epoch"] == 0
