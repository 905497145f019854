"""Fast per-example gradient norms (jaxdd.difficulty.gradnorm) against vmap(grad) and a Python loop."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdd.difficulty import gradnorm as G
from jaxdd.models import create_network
from jaxdd.models.layers import Conv, Dense, Norm
from jaxdd.models.network import Network
from jaxdd.utils.labels import cross_entropy


def loop_norms(net, variables, x, y):
    """Independent reference: one jax.grad per example in a Python loop, norms in NumPy (float64)."""
    def loss(params, xi, yi):
        return cross_entropy(net.logits({**variables, "params": params}, xi), yi)[0]

    grad = jax.jit(jax.grad(loss))
    out = []
    for i in range(x.shape[0]):
        g = grad(variables["params"], x[i:i + 1], y[i:i + 1])
        out.append(np.sqrt(sum(np.sum(np.asarray(l, np.float64) ** 2) for l in jax.tree.leaves(g))))
    return np.array(out)


def ref_sq_by_param(net, variables, x, y):
    """Independent reference per parameter: vmap(grad) per-example gradients, squared norms in float64."""
    def loss(params, xi, yi):
        return cross_entropy(net.logits({**variables, "params": params}, xi[None]), yi[None])[0]

    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(variables["params"], x, y)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    return {"/".join(k.key for k in kp): np.sum(np.asarray(g, np.float64).reshape(g.shape[0], -1) ** 2, 1)
            for kp, g in flat}


def fast_sq(net, v, x, y, **kw):
    return {k: np.asarray(a) for k, a in jax.jit(lambda v, x, y: G.grad_sq_norms_by_param(net, v, x, y, **kw))(v, x, y).items()}


def assert_same_per_param(fast, ref, rtol=1e-4):
    assert set(fast) == set(ref)
    total = np.sqrt(sum(ref.values()))
    for k in ref:  # e.g. conv biases before instance norm: zero in exact arithmetic, compare on the total's scale
        np.testing.assert_allclose(np.sqrt(fast[k]), np.sqrt(ref[k]), rtol=rtol, atol=1e-5 * total.max(), err_msg=k)
    np.testing.assert_allclose(np.sqrt(sum(fast.values())), total, rtol=rtol)


def batch(shape, n, classes, seed=1):
    x = jax.random.normal(jax.random.key(seed), (n, *shape))
    y = jnp.arange(n) % classes
    return x, y


def perturb_stats(variables, seed=3):
    """Non-trivial BatchNorm running statistics (init has mean 0, var 1)."""
    if "batch_stats" not in variables:
        return variables
    leaves, tree = jax.tree.flatten(variables["batch_stats"])
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [l + 0.3 * jnp.abs(jax.random.normal(k, l.shape)) for l, k in zip(leaves, keys)]
    return {**variables, "batch_stats": jax.tree.unflatten(tree, new)}


def small_resnet(norm):
    """ResNet-18's layers (strided 3x3 and 1x1 convs without bias, projection shortcuts) with one block
    per stage and tiny widths, to keep compile times small."""
    from jaxdd.models.resnet import ResNet

    return Network(f"resnet-tiny-{norm}", ResNet(num_classes=3, stage_sizes=(1, 1, 1, 1), widths=(4, 6, 6, 8),
                                                   norm=norm, downsample="conv"), (16, 16, 3), 3)


NETS = {
    "convnet-in": lambda: create_network("convnet-w8-d2", num_classes=3, input_shape=(12, 12, 3)),
    "convnet-bn": lambda: create_network("convnet-w8-d2-bn", num_classes=3, input_shape=(12, 12, 3)),
    "resnet-in": lambda: small_resnet("instancenorm"),
    "resnet-bn": lambda: small_resnet("batchnorm"),
    "mlp": lambda: create_network("mlp-w16", num_classes=3, input_shape=(8, 8, 3)),
    "vit": lambda: create_network("vit-p4-w16-d1-h2", num_classes=3, input_shape=(8, 8, 3)),  # token sequences
}


@pytest.mark.parametrize("name", list(NETS))
def test_fast_norms_match_vmap_grad_and_loop(name):
    net = NETS[name]()
    v = perturb_stats(net.init(jax.random.key(0)))
    x, y = batch(net.input_shape, 4, 3)
    ref = ref_sq_by_param(net, v, x, y)
    fast = fast_sq(net, v, x, y)
    assert "<other>" not in fast  # every parameter lives in a recognised layer
    assert_same_per_param(fast, ref)
    if name in ("convnet-in", "resnet-in", "mlp"):
        np.testing.assert_allclose(np.sqrt(sum(fast.values())), loop_norms(net, v, x, y), rtol=1e-4)


def test_grand_reference_is_vmap_grad():
    net = NETS["mlp"]()
    v = net.init(jax.random.key(0))
    x, y = batch(net.input_shape, 3, 3)
    np.testing.assert_allclose(jax.jit(lambda v, x, y: G.grand_reference(net, v, x, y))(v, x, y),
                               loop_norms(net, v, x, y), rtol=2e-5)


def test_strided_conv_and_both_conv_forms():
    """Strided/padded convs with narrow and wide inputs and a Dense on a sequence, every form."""
    class Strided(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.relu(Conv(4, strides=(2, 2), padding=1)(x))
            x = nn.relu(Conv(20, kernel_size=(3, 3), strides=(2, 2), padding=2)(x))  # Cin 4 (narrow)
            x = nn.relu(Conv(6, kernel_size=(2, 2), padding=0)(x))                   # Cin 20 (wide)
            x = nn.relu(Dense(5)(x.reshape(x.shape[0], -1, x.shape[-1])))              # Dense on a sequence
            return Dense(3)(x.reshape(x.shape[0], -1))

    net = Network("strided", Strided(), (11, 11, 2), 3)
    v = net.init(jax.random.key(0))
    x, y = batch((11, 11, 2), 4, 3)
    ref = ref_sq_by_param(net, v, x, y)
    for method in ("direct", "ghost"):  # "auto" picks one of these per layer
        assert_same_per_param(fast_sq(net, v, x, y, method=method), ref)


class Shared(nn.Module):
    """Weights used twice, and a free parameter no recognised layer owns."""

    @nn.compact
    def __call__(self, x, train=False):
        conv = Conv(4, padding=1, name="conv")
        h = nn.relu(conv(x))
        h = nn.relu(conv(h[..., :x.shape[-1]] + x))           # same conv kernel again
        h = h + self.param("offset", nn.initializers.normal(1.0), (h.shape[-1],))
        f = h.reshape(h.shape[0], -1)
        dense = Dense(f.shape[-1], name="mix")
        f = dense(jnp.tanh(dense(f)))                           # same Dense twice
        return Dense(3, name="classifier")(f)


def test_shared_weights_and_uncovered_parameters():
    net = Network("shared", Shared(), (6, 6, 4), 3)
    v = net.init(jax.random.key(0))
    x, y = batch((6, 6, 4), 4, 3)
    sq = jax.eval_shape(lambda v, x, y: G.grad_sq_norms_by_param(net, v, x, y), v, x, y)
    assert "<other>" in sq  # the free "offset" parameter goes through the exact fallback
    fast = jax.jit(lambda v, x, y: G.grad_norms(net, v, x, y))(v, x, y)
    np.testing.assert_allclose(fast, loop_norms(net, v, x, y), rtol=1e-4)


def test_last_layer_norm():
    net = create_network("convnet-w8-d2", num_classes=3, input_shape=(12, 12, 3))
    v = net.init(jax.random.key(0))
    x, y = batch((12, 12, 3), 5, 3)
    ref = ref_sq_by_param(net, v, x, y)
    last = np.asarray(jax.jit(lambda v, x, y: G.last_layer_grad_norms(net, v, x, y))(v, x, y))
    np.testing.assert_allclose(last, np.sqrt(ref["classifier/kernel"] + ref["classifier/bias"]), rtol=1e-5)
    # closed form ||p - y|| * sqrt(1 + ||phi||^2) (Paul et al., 2021)
    phi = net.embed(v, x)
    p = jax.nn.softmax(net.logits(v, x))
    closed = np.linalg.norm(p - jax.nn.one_hot(y, 3), axis=1) * np.sqrt(1 + np.sum(np.asarray(phi) ** 2, 1))
    np.testing.assert_allclose(last, closed, rtol=1e-5)
    # restricting to named layers
    two = fast_sq(net, v, x, y, layers=["classifier", "convs_1"])
    assert set(two) == {"classifier/kernel", "classifier/bias", "convs_1/kernel", "convs_1/bias"}
    assert_same_per_param(two, {k: ref[k] for k in two})


def test_soft_labels_and_gradient_wrt_images():
    net = create_network("convnet-w4-d1", num_classes=3, input_shape=(6, 6, 2))
    v = net.init(jax.random.key(0))
    x, _ = batch((6, 6, 2), 3, 3)
    y = jax.nn.softmax(jax.random.normal(jax.random.key(5), (3, 3)))
    # jitted: op by op, every primitive of these (second-order) programs would compile on its own
    np.testing.assert_allclose(jax.jit(lambda x: G.grad_norms(net, v, x, y))(x),
                               jax.jit(lambda x: G.grand_reference(net, v, x, y))(x), rtol=1e-5)
    # SDC differentiates the norm w.r.t. the (synthetic) images: second-order terms must agree
    fast = jax.jit(jax.grad(lambda x: G.grad_norms(net, v, x, y).sum()))(x)
    ref = jax.jit(jax.grad(lambda x: G.grand_reference(net, v, x, y).sum()))(x)
    np.testing.assert_allclose(fast, ref, rtol=1e-3, atol=1e-6)


def test_batchnorm_in_training_mode_is_refused():
    class TrainBN(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = Conv(4)(x)
            x = nn.BatchNorm(use_running_average=False)(x)  # batch statistics regardless of train
            return Dense(3)(x.reshape(x.shape[0], -1))

    net = Network("trainbn", TrainBN(), (6, 6, 3), 3)
    v = net.init(jax.random.key(0))
    x, y = batch((6, 6, 3), 4, 3)
    with pytest.raises(ValueError, match="training mode.*inference mode"):
        G.grad_norms(net, v, x, y)


def test_bad_input_errors():
    net = create_network("convnet-w8-d1", num_classes=3, input_shape=(8, 8, 3))
    v = net.init(jax.random.key(0))
    x, y = batch((8, 8, 3), 4, 3)
    with pytest.raises(ValueError, match="leading batch axis"):
        G.grad_norms(net, v, x, y[:3])
    with pytest.raises(ValueError, match="unknown method"):
        G.grad_norms(net, v, x, y, method="fast")
    with pytest.raises(ValueError, match="not recognised layers.*choose from"):
        G.grad_norms(net, v, x, y, layers=["nope"])


def test_norm_layers_see_examples_separately():
    """A batch-mixing layer input (leading axis not a multiple of B) is refused, not mis-scored."""
    class Mix(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            f = x.reshape(x.shape[0], -1)
            f = Dense(5)(f.reshape(-1, 3)[:7])   # 7 rows of 3 values from a batch of 4 x 9
            return jnp.broadcast_to(Dense(3)(f).mean(0), (x.shape[0], 3))

    net = Network("mix", Mix(), (3, 3, 1), 3)
    v = net.init(jax.random.key(0))
    x = jnp.ones((4, 3, 3, 1))
    with pytest.raises(ValueError, match="not a multiple of the batch"):
        G.grad_norms(net, v, x, jnp.zeros((4,), jnp.int32))


def test_norm_layer_kinds_layernorm():
    class LN(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.relu(Norm("layernorm")(Conv(4)(x)))
            x = nn.LayerNorm()(x.reshape(x.shape[0], -1))
            return Dense(3)(x)

    net = Network("ln", LN(), (5, 5, 2), 3)
    v = net.init(jax.random.key(0))
    v = {"params": jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(7), a.shape), v["params"])}
    x, y = batch((5, 5, 2), 4, 3)
    assert_same_per_param(fast_sq(net, v, x, y), ref_sq_by_param(net, v, x, y))


@pytest.mark.parametrize("strides,padding,ksize", [((1, 1), ((1, 1), (1, 1)), (3, 3)),
                                                    ((2, 1), ((0, 2), (1, 0)), (2, 3)),
                                                    ((2, 2), ((2, 2), (2, 2)), (3, 3))])
def test_patch_gram_forms_equal_the_im2col_gram(strides, padding, ksize):
    """Both forms of a conv's patch Gram (im2col patches, shifted pixel Gram) against the Gram of
    lax.conv_general_dilated_patches, in float64 (agreement to ~1e-12, far below any form's error)."""
    with jax.enable_x64(True):
        a = jax.random.normal(jax.random.key(0), (2, 7, 6, 3), jnp.float64)
        pat = jax.lax.conv_general_dilated_patches(a, ksize, strides, padding,
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
        out_hw = pat.shape[1:3]
        pat = pat.reshape(2, -1, pat.shape[-1])
        want = np.einsum("bpk,bqk->bpq", np.asarray(pat), np.asarray(pat))
        for form in ("patches", "pixels"):
            got = G._patch_gram(a, ksize, strides, padding, out_hw, form)
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12, err_msg=form)


class _SmallMaps(nn.Module):
    """Convs on small feature maps with many channels, where the pixel-Gram form of the norms is the
    cheapest, after a strided conv where the im2col patch Gram is."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(Conv(16, strides=(2, 2), padding=1)(x))           # 8x8x4 -> 4x4: direct / patches
        x = nn.relu(Norm("instancenorm")(Conv(16, padding=1)(x)))     # 4x4x16: pixels
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(Conv(12, padding=1)(x))                            # 2x2x16: pixels
        return Dense(3)(x.reshape(x.shape[0], -1))


def test_pixel_gram_norms_and_their_image_gradient_match_vmap_grad(monkeypatch):
    """The Gram form with the pixel Gram (what auto picks for two of these layers, checked): per-example
    norms and the SDC image gradient through them equal vmap(grad)'s, in float64."""
    from jaxdd.difficulty.sdc import per_example_grad_norms

    forms = []
    patch_gram = G._patch_gram
    monkeypatch.setattr(G, "_patch_gram", lambda *a: forms.append(a[-1]) or patch_gram(*a))
    net = Network("small-maps", _SmallMaps(), (8, 8, 4), 3)
    with jax.enable_x64(True):
        v = jax.tree.map(lambda t: t.astype(jnp.float64), net.init(jax.random.key(0)))
        x, y = batch((8, 8, 4), 4, 3)
        x = x.astype(jnp.float64)
        for method, want in (("auto", ["pixels", "pixels"]), ("ghost", ["patches", "pixels", "pixels"])):
            forms.clear()
            norms = jax.jit(lambda xx: G.grad_norms(net, v, xx, y, method=method))(x)
            assert forms == want  # the forms used while tracing
            np.testing.assert_allclose(np.asarray(norms), loop_norms(net, v, x, y), rtol=1e-10)
        forms.clear()
        # jitted: op by op, every primitive of these second-order programs compiles on its own
        fast = jax.jit(jax.grad(lambda xx: jnp.mean(per_example_grad_norms(net, v, xx, y))))(x)
        slow = jax.jit(jax.grad(lambda xx: jnp.mean(G.grand_reference(net, v, xx, y))))(x)
        assert forms == ["pixels", "pixels"]
        assert fast.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), rtol=1e-9, atol=1e-12)
