"""DATM: the window schedule, initialisation from an expert, learned soft labels, skipped updates,
soft-label evaluation, SDC."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.data import load_dataset
from jaxdd.distill import RealData, build_method, distill
from jaxdd.distill.datm import start_window
from jaxdd.experts import ExpertConfig, train_experts
from jaxdd.models import create_network
from jaxdd.train import predict_logits

SETTINGS = dict(syn_steps=3, expert_epochs=1, min_start_epoch=0, current_max_start_epoch=1, max_start_epoch=3,
                expansion_end_epoch=4, lr_img=10.0, lr_y=5.0, iterations=4, ipc=2)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("datm")
    r = np.random.default_rng(1)
    # learnable toy data: class c is bright in its own third of the image
    x = r.integers(0, 90, (30, 9, 9), dtype=np.uint8)
    y = np.repeat(np.arange(3), 10)
    for i, c in enumerate(y):
        x[i, 3 * c:3 * c + 3] += 160
    np.savez(root / "toy.npz", x_train=x, y_train=y, x_test=x[::3], y_test=y[::3], class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(str(root / "toy.npz"))
    net = create_network("mlp-w16", num_classes=3, input_shape=(9, 9, 1))
    buf = train_experts(ds, net, root / "buffer", 2, ExpertConfig(epochs=4, batch_size=10, lr=0.05), parallel=2,
                        progress=False)
    return ds, net, buf, RealData.from_dataset(ds)


def datm(env, **kw):
    _, net, buf, _ = env
    return build_method("datm", net, buffer=str(buf.path), **{**SETTINGS, **kw})


def test_window_schedule_hand_computed():
    # current_max 2 -> max 10 over 100 iterations: hi = min(2 + floor(8 it / 100), 10)
    expected = {0: 2, 12: 2, 13: 3, 49: 5, 50: 6, 99: 9, 100: 10, 500: 10}
    for it, hi in expected.items():
        assert start_window(it, 1, 2, 10, 100) == (1, hi)
        assert int(jax.jit(lambda s: start_window(s, 1, 2, 10, 100)[1])(jnp.int32(it))) == hi


def test_window_grows_during_distillation(env):
    _, _, _, real = env
    m = datm(env)
    state = m.init(jax.random.key(0), real)
    step = jax.jit(m.update)
    seen = []
    for _ in range(4):
        state, metrics = step(state, real)
        seen.append((int(metrics["max_start"]), int(metrics["start_epoch"])))
    # iterations 0..3 with expansion_end 4: hi = 1 + floor(2 it / 4) = 1, 1, 2, 2
    assert [hi for hi, _ in seen] == [1, 1, 2, 2]
    assert all(0 <= t < hi for hi, t in seen)


def test_init_from_correctly_classified_images_and_expert_logits(env):
    ds, net, buf, real = env
    m = datm(env, ipc=3)
    state = m.init(jax.random.key(3), real)
    variables = jax.tree.map(lambda a: a[None], m.label_expert_variables())
    np.testing.assert_array_equal(
        m.label_expert_variables()["params"]["classifier"]["kernel"], buf.params(0, 4, net)["classifier"]["kernel"])
    logits = np.asarray(predict_logits(net, variables, ds.x_train)[0])
    every = np.stack([np.asarray(predict_logits(net, {"params": jax.tree.map(lambda a: a[None], buf.params(k, 4, net))},
                                                ds.x_train)[0]) for k in range(2)])  # both experts' logits
    for c in range(3):
        cls = np.flatnonzero(ds.y_train == c)
        correct = set(cls[logits[cls].argmax(-1) == c].tolist())
        chosen = []
        for img, row in zip(np.asarray(state.images[3 * c:3 * c + 3]), np.asarray(state.labels[3 * c:3 * c + 3])):
            j = int(np.flatnonzero(np.all(ds.x_train == img, axis=(1, 2, 3)))[0])  # a real image of class c
            assert ds.y_train[j] == c
            ok = every[:, j].argmax(-1) == c  # DATM: the mean logits of the experts that classify it correctly
            np.testing.assert_allclose(row, every[ok, j].mean(0), rtol=1e-5, atol=1e-5)
            chosen.append(j)
        assert len(set(chosen)) == 3
        assert sum(j in correct for j in chosen) == min(3, len(correct))
    assert len(correct) >= 3  # the toy experts learn the task, so all chosen images are correct


def test_soft_labels_are_learned_and_skips_keep_the_state(env):
    _, _, _, real = env
    m = datm(env, sdc=0.3, skip_threshold=None)  # the toy loss exceeds the default threshold 1.0
    state = m.init(jax.random.key(0), real)
    new, metrics = jax.jit(m.update)(state, real)
    assert float(metrics["skipped"]) == 0 and "sdc" in metrics
    assert not np.allclose(new.labels, state.labels) and not np.allclose(new.images, state.images)
    _, labels, lr = m.synthetic(new)
    np.testing.assert_allclose(labels, jax.nn.softmax(new.labels, -1), rtol=1e-6)
    np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-5)
    skipper = datm(env, skip_threshold=1e-12)
    kept, metrics = jax.jit(skipper.update)(state, real)
    assert float(metrics["skipped"]) == 1 and int(kept.step) == 1
    for f in ("images", "labels", "syn_lr"):
        np.testing.assert_array_equal(getattr(kept, f), getattr(state, f))
    assert not np.array_equal(jax.random.key_data(kept.key), jax.random.key_data(state.key))


def test_soft_label_evaluation(env):
    ds, _, _, real = env
    res = distill(datm(env, iterations=2), real, ds, eval_final_epochs=3, eval_final_models=1, progress=False)
    assert res.distilled.soft_labels and res.distilled.lr is not None
    r = res.evaluation["results"][0]
    assert r["preset"] == "datm" and r["labels"] == "soft" and r["config"]["soft_labels"]
    assert r["lr"] == pytest.approx(res.distilled.lr)


def test_bad_settings(env):
    with pytest.raises(ValueError, match="current_max_start_epoch"):
        datm(env, current_max_start_epoch=4)
    with pytest.raises(ValueError, match="init must be 'real'"):
        datm(env, init="noise")
    with pytest.raises(ValueError, match="label_expert 5 does not exist"):
        datm(env, label_expert=5)


def test_eight_devices_equal_one(env, sharding_spy):
    """DATM (soft labels learned, SDC) with every student batch split over 8 devices vs one device."""
    from jaxdd.utils.mesh import data_mesh

    _, _, _, real = env
    one, eight = datm(env, ipc=4, batch_syn=8, sdc=0.1), datm(env, ipc=4, batch_syn=8, sdc=0.1, mesh=data_mesh(8))
    state = one.init(jax.random.key(2), real)
    a, ma = jax.jit(one.update)(state, real)
    assert sharding_spy.splits(8) == []
    b, mb = jax.jit(eight.update)(state, real)
    assert float(ma["skipped"]) == float(mb["skipped"]) == 0
    np.testing.assert_allclose(mb["loss"], ma["loss"], rtol=1e-5)
    np.testing.assert_allclose(b.images, a.images, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.labels, a.labels, rtol=1e-4, atol=1e-5)  # the learned soft-label logits
    assert not np.allclose(a.labels, state.labels)
    # placement: the student batches (8 of the 12 images) were split over the 8 devices
    assert ((8, 9, 9, 1), ("data",)) in sharding_spy.splits(8)
    assert len(b.images.sharding.device_set) == 8 and len(a.images.sharding.device_set) == 1
