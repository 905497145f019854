"""Logit-based scores, the forgetting tracker, dataset drivers (streaming, sharding, ensembles)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.difficulty import drivers as D, scores as S
from jaxdd.models import create_network
from jaxdd.utils.mesh import data_mesh


def logits_from_probs(p):
    return jnp.log(jnp.asarray(p, jnp.float32))


def test_el2n_confidence_loss_on_hand_made_logits():
    p = [[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [0.1, 0.8, 0.1]]
    z = logits_from_probs(p) + 3.0  # softmax is shift invariant
    y = jnp.array([0, 0, 2])
    np.testing.assert_allclose(S.el2n(z, y), [np.sqrt(0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2),
                                             np.sqrt(0.75 ** 2 + 0.25 ** 2 + 0.5 ** 2),
                                             np.sqrt(0.1 ** 2 + 0.8 ** 2 + 0.9 ** 2)], rtol=1e-5)
    np.testing.assert_allclose(S.confidence_difficulty(z, y), [0.3, 0.75, 0.9], rtol=1e-5)
    np.testing.assert_allclose(S.loss_value(z, y), -np.log([0.7, 0.25, 0.1]), rtol=1e-5)
    np.testing.assert_array_equal(S.misclassified(z, y), [0.0, 1.0, 1.0])
    # one-hot rows give the same numbers as class indices
    oh = jax.nn.one_hot(y, 3)
    for fn in (S.el2n, S.confidence_difficulty, S.loss_value, S.misclassified):
        # the loss logsumexp(z) - z_y cancels terms of size ~4 (z + 3): float32 noise ~ 4 eps = 5e-7
        np.testing.assert_allclose(fn(z, oh), fn(z, y), rtol=1e-6, atol=4e-6)
    # soft labels: 1 - <p, y> and ||p - y||
    soft = jnp.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(S.confidence_difficulty(z, soft), [1 - 0.45, 0.5, 1 - (0.02 + 0.16 + 0.06)], rtol=1e-5)
    with pytest.raises(ValueError, match="do not fit logits"):
        S.el2n(z, jnp.zeros((3, 1, 1)))


def test_misclassification_probability():
    y = jnp.array([0, 1])
    ens = jnp.array([[[2.0, 0.0], [0.0, 1.0]],     # both right
                     [[0.0, 2.0], [0.0, 1.0]],     # first wrong
                     [[0.0, 2.0], [3.0, 1.0]]])    # both wrong
    # float32 holds 1/3 only to 6e-8 relative (numpy's default rtol 1e-7 is under 2 roundings)
    np.testing.assert_allclose(S.misclassification_probability(ens, y), [2 / 3, 1 / 3], rtol=1e-6)


def test_forgetting_on_scripted_accuracy_sequence():
    seq = np.array([  # rows: evaluations; columns: 4 examples
        [0, 1, 0, 1],
        [1, 0, 0, 1],
        [0, 1, 0, 1],
        [1, 0, 0, 1],
        [1, 1, 0, 0],
    ], bool)
    st = S.forgetting_init(4)
    for row in seq:
        st = jax.jit(S.forgetting_update)(st, row)
    # example 0: 1->0 once (step 2->3); example 1: 1->0 at steps 1->2 and 3->4: twice;
    # example 2: never learned (+inf); example 3: forgotten once at the end
    np.testing.assert_array_equal(S.forgetting_scores(st), [1.0, 2.0, np.inf, 1.0])
    np.testing.assert_array_equal(st.seen, [5, 5, 5, 5])
    # the same events, fed as minibatches of indices in shuffled order
    st2 = S.forgetting_init(4)
    r = np.random.default_rng(0)
    for row in seq:
        perm = r.permutation(4)
        for part in (perm[:2], perm[2:]):
            st2 = S.forgetting_update(st2, row[part], indices=jnp.asarray(part))
    np.testing.assert_array_equal(S.forgetting_scores(st2), S.forgetting_scores(st))
    with pytest.raises(ValueError, match="indices="):
        S.forgetting_update(st, np.ones(3, bool))


# ------------------------------------------------------------------------------------- drivers

@pytest.fixture(scope="module")
def small():
    net = create_network("convnet-w8-d1", num_classes=3, input_shape=(8, 8, 3))
    r = np.random.default_rng(0)
    x = r.normal(size=(21, 8, 8, 3)).astype(np.float32)
    y = np.arange(21) % 3
    return net, x, y


@pytest.mark.parametrize("score", ["grand", "grand-last", "el2n", "loss", "confidence", "misclass"])
def test_streamed_scores_equal_one_batch(small, score):
    net, x, y = small
    v = net.init(jax.random.key(0))
    full = np.asarray(D.batch_scores(net, v, jnp.asarray(x), jnp.asarray(y), score))
    streamed = D.score_models(net, v, x, y, score, batch_size=8, progress=False)  # 3 batches, last padded
    assert streamed.shape == (1, 21)
    np.testing.assert_allclose(streamed[0], full, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("score", ["grand", "el2n"])
def test_sharded_equals_unsharded(small, score, sharding_spy):
    net, x, y = small
    keys = jax.random.split(jax.random.key(1), 2)
    stacked = jax.vmap(net.init)(keys)  # two models
    one = D.score_models(net, stacked, x, y, score, batch_size=8, progress=False)
    assert sharding_spy.splits(8) == []
    sharded = D.score_models(net, stacked, x, y, score, batch_size=8, mesh=data_mesh(8), progress=False)
    assert one.shape == sharded.shape == (2, 21)
    np.testing.assert_allclose(sharded, one, rtol=1e-5, atol=1e-7)
    # placement: every scored batch (images and labels) was split over the 8 devices
    splits = sharding_spy.splits(8)
    assert ((8,) + x.shape[1:], ("data",)) in splits and ((8,), ("data",)) in splits, splits


def test_driver_errors(small):
    net, x, y = small
    v = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match="unknown score"):
        D.score_models(net, v, x, y, "grandd")
    with pytest.raises(ValueError, match="one label"):
        D.score_models(net, v, x, y[:5], "el2n")
    with pytest.raises(ValueError, match="use ensemble_scores"):
        D.score_models(net, v, x, y, "forgetting", progress=False)
    with pytest.raises(ValueError, match="must lie in"):
        D.ensemble_scores(net, x, y, jax.random.key(0), score="el2n", epochs=2, score_epochs=[3], progress=False)
    other = create_network("convnet-w4-d1", num_classes=3, input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="do not belong"):
        D.score_models(net, other.init(jax.random.key(0)), x, y, "el2n")


def test_ensemble_runner_averages_models_and_epochs(small):
    from jaxdd.train import TrainConfig, Trainer, fit

    net, x, y = small
    cfg = TrainConfig(batch_size=7, schedule="constant")
    res = D.ensemble_scores(net, x, y, jax.random.key(3), score="el2n", num_models=2, epochs=2,
                            score_epochs=[0, 2], train_config=cfg, batch_size=8, progress=False)
    assert res.raw.shape == (2, 2, 21) and res.epochs == (0, 2) and res.train_acc.shape == (2, 2)
    np.testing.assert_allclose(res.scores, res.raw.mean((0, 1)), rtol=1e-6)
    assert res.config["num_models"] == 2 and res.config["score_epochs"] == [0, 2]
    # independent replay with the trainer's public API and the same keys
    trainer = Trainer(net, TrainConfig(batch_size=7, schedule="constant", epochs=2))
    k_init, k_train = jax.random.split(jax.random.key(3))
    st0 = trainer.init(k_init, 2)
    st2, _ = fit(trainer, st0, x, y, k_train, progress=False)
    for t, st in ((0, st0), (1, st2)):
        for m in range(2):
            logits = net.logits(st.model_variables(m), jnp.asarray(x))
            np.testing.assert_allclose(res.raw[t, m], S.el2n(logits, jnp.asarray(y)), rtol=1e-4, atol=1e-6)


def test_ensemble_forgetting_matches_replay(small):
    from jaxdd.train import TrainConfig, Trainer, fit

    net, x, y = small
    cfg = TrainConfig(batch_size=7, lr=0.05, schedule="constant")
    res = D.ensemble_scores(net, x, y, jax.random.key(4), score="forgetting", num_models=2, epochs=4,
                            train_config=cfg, progress=False)
    trainer = Trainer(net, TrainConfig(batch_size=7, lr=0.05, schedule="constant", epochs=4))
    k_init, k_train = jax.random.split(jax.random.key(4))
    correct = []

    def on_epoch(e, st, metrics):
        correct.append(np.stack([np.asarray(net.logits(st.model_variables(m), jnp.asarray(x)).argmax(-1)) == y
                                 for m in range(2)]))

    fit(trainer, trainer.init(k_init, 2), x, y, k_train, progress=False, on_epoch=on_epoch)
    c = np.stack(correct)  # (E, M, N); before training nothing counts as learned
    events = ((c[:-1] & ~c[1:]).sum(0)).astype(float)
    expected = np.where(c.any(0), events, np.inf).mean(0)
    np.testing.assert_array_equal(res.scores, expected)


def test_load_model_from_checkpoint(tmp_path, small):
    from jaxdd.train import Trainer
    from jaxdd.utils.checkpoint import Checkpointer

    net, x, y = small
    v = net.init(jax.random.key(9))
    with Checkpointer(tmp_path / "one") as ck:
        ck.save(1, v, {"note": "variables"})
    got, meta = D.load_model(net, str(tmp_path / "one"))
    assert meta["note"] == "variables"
    jax.tree.map(np.testing.assert_array_equal, got, v)
    state = Trainer(net).init(jax.random.key(2), 3)
    with Checkpointer(tmp_path / "three") as ck:
        ck.save(5, state)
    got, _ = D.load_model(net, str(tmp_path / "three"))
    jax.tree.map(np.testing.assert_array_equal, got, state.variables)
    other = create_network("convnet-w4-d1", num_classes=3, input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="neither"):
        D.load_model(other, str(tmp_path / "one"))


def test_ensemble_resumes_from_checkpoint(small, tmp_path, monkeypatch):
    from jaxdd.train import TrainConfig

    net, x, y = small
    kw = dict(score="loss", num_models=2, epochs=3, score_epochs=[1, 3], train_config=TrainConfig(batch_size=7),
              batch_size=8, progress=False)
    whole = D.ensemble_scores(net, x, y, jax.random.key(5), **kw)
    real = D.score_models
    calls = []

    def dying(*a, **k):  # the run is killed while scoring epoch 3
        calls.append(k["desc"])
        if "epoch 3" in k["desc"]:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(D, "score_models", dying)
    with pytest.raises(KeyboardInterrupt):
        D.ensemble_scores(net, x, y, jax.random.key(5), checkpoint_dir=str(tmp_path / "ck"), **kw)
    monkeypatch.setattr(D, "score_models", real)
    resumed = D.ensemble_scores(net, x, y, jax.random.key(5), checkpoint_dir=str(tmp_path / "ck"), **kw)
    np.testing.assert_array_equal(resumed.raw, whole.raw)
    np.testing.assert_array_equal(resumed.train_acc, whole.train_acc)
    with pytest.raises(ValueError, match=r"different run settings \(num_models: 2 in the checkpoint, 1 now\)"):
        D.ensemble_scores(net, x, y, jax.random.key(5), checkpoint_dir=str(tmp_path / "ck"),
                          **{**kw, "num_models": 1})
