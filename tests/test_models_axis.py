"""K seeded models split over a ``models`` mesh axis (jaxdd.utils.mesh.models_mesh) against each
model trained alone on one device."""

import jax
import numpy as np
import pytest

from jaxdd.models import create_network
from jaxdd.train import TrainConfig, Trainer, evaluate_accuracy, fit
from jaxdd.utils.mesh import models_mesh


@pytest.mark.parametrize("loop", ["scan", "steps"])
def test_models_split_over_devices_match_models_trained_alone(tiny_dataset, loop):
    net = create_network("mlp-w16", num_classes=3, input_shape=tiny_dataset.image_shape)
    cfg = TrainConfig(lr=0.01, epochs=2, batch_size=16, schedule="constant")
    x, y = tiny_dataset.x_train, tiny_dataset.y_train
    keys = jax.random.split(jax.random.key(0), 4)
    split = Trainer(net, cfg, mesh=models_mesh(4), loop=loop)
    state = split.init(keys)
    for leaf in jax.tree.leaves(state.variables):  # one whole model per device
        assert {s.data.shape[0] for s in leaf.addressable_shards} == {1}
    state, _ = fit(split, state, x, y, keys, progress=False)
    acc = evaluate_accuracy(net, state.variables, tiny_dataset.x_test, tiny_dataset.y_test, mesh=split.mesh)
    alone = Trainer(net, cfg, loop=loop)
    for i in range(4):  # model i alone with keys[i:i+1]: the same data order and initialisation
        ref, _ = fit(alone, alone.init(keys[i:i + 1]), x, y, keys[i:i + 1], progress=False)
        # no cross-device reduction in the split run: the same float32 operations per model;
        # 1e-6 allows for XLA fusing the vmapped and the single-model programs differently
        for a, b in zip(jax.tree.leaves(state.variables), jax.tree.leaves(ref.variables)):
            np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b)[0], rtol=1e-5, atol=1e-6)
        ref_acc = evaluate_accuracy(net, ref.variables, tiny_dataset.x_test, tiny_dataset.y_test)
        assert acc[i] == pytest.approx(ref_acc[0])


def test_models_axis_needs_a_multiple_of_its_devices(tiny_dataset):
    net = create_network("mlp-w16", num_classes=3, input_shape=tiny_dataset.image_shape)
    with pytest.raises(ValueError, match="cannot split 3 models over the 4 devices"):
        Trainer(net, TrainConfig(), mesh=models_mesh(4)).init(jax.random.key(0), 3)
