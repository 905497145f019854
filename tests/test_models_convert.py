"""PyTorch -> jaxdd ConvNet conversion: parity with stored PyTorch outputs (no torch needed),
and a torch-free slow NCHW reference of the DC ConvNet for the BatchNorm / no-norm / max-pool paths."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxdd.models.convert as convert
from jaxdd.models import create_network
from jaxdd.models.convert import convnet_from_torch, convnet_variables_from_torch

FIXTURES = Path(convert.__file__).parent / "fixtures"


def _load(tag):
    z = np.load(FIXTURES / f"convnet_{tag}.npz")
    sd = {k[len("sd/"):]: z[k] for k in z.files if k.startswith("sd/")}
    return sd, z["x"], z["logits"], z["embed"], json.loads(str(z["config"]))


def test_fixtures_are_small():
    assert sum(p.stat().st_size for p in FIXTURES.glob("*.npz")) < 3 * 2**20


@pytest.mark.parametrize("tag,shape", [("cifar", (32, 32, 3)), ("mnist", (28, 28, 1))])
def test_matches_pytorch_reference_convnet(tag, shape):
    sd, x_nchw, logits, embed, cfg = _load(tag)
    assert cfg["input_shape_nchw"][1:] == [shape[2], shape[0], shape[1]]
    net, variables = convnet_from_torch(sd, input_shape=shape)
    assert net.name == "convnet-d3-w128" and net.num_classes == 10
    # the converted variables fit the registry's default ConvNet for this shape
    default = create_network("convnet", num_classes=10, input_shape=shape)
    assert jax.tree.map(np.shape, variables) == jax.tree.map(np.shape, jax.eval_shape(default.init, jax.random.key(0)))
    x = x_nchw.transpose(0, 2, 3, 1)
    got_logits, got_embed = jax.jit(lambda v, x: (default.logits(v, x), default.embed(v, x)))(variables, x)
    np.testing.assert_allclose(got_logits, logits, atol=1e-4, rtol=1e-4)
    n, c = embed.shape[0], cfg["width"]
    h = int(round((embed.shape[1] / c) ** 0.5))
    embed_nhwc = embed.reshape(n, c, h, h).transpose(0, 2, 3, 1).reshape(n, -1)  # PyTorch flattens NCHW
    np.testing.assert_allclose(got_embed, embed_nhwc, atol=1e-4, rtol=1e-4)


def test_classifier_rows_are_permuted_from_nchw_to_nhwc():
    """kernel[(h*W + w)*C + c, k] == weight[k, (c*H + h)*W + w], checked entry by entry."""
    r = np.random.default_rng(0)
    C, H, W, K = 3, 2, 2, 4
    sd = {"features.0.weight": r.normal(size=(C, 2, 3, 3)), "features.0.bias": r.normal(size=C),
          "classifier.weight": r.normal(size=(K, C * H * W)), "classifier.bias": r.normal(size=K)}
    kernel = convnet_variables_from_torch(sd, input_shape=(4, 4, 2))["params"]["classifier"]["kernel"]
    for h in range(H):
        for w in range(W):
            for c in range(C):
                for k in range(K):
                    assert kernel[(h * W + w) * C + c, k] == np.float32(sd["classifier.weight"][k, (c * H + h) * W + w])


# --------------------------------------------------------------- slow NCHW reference of the DC ConvNet

def _ref_convnet(sd, x, depth, norm, pooling):
    """The DC ConvNet forward in float64 NCHW with explicit loops (PyTorch semantics)."""
    x = x.astype(np.float64)
    channel = x.shape[1]
    for d in range(depth):
        conv = f"features.{d * (4 if norm != 'none' else 3)}"
        wgt, b = sd[f"{conv}.weight"].astype(np.float64), sd[f"{conv}.bias"].astype(np.float64)
        p = 3 if channel == 1 and d == 0 else 1
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        ho, wo = xp.shape[2] - 2, xp.shape[3] - 2
        y = np.zeros((x.shape[0], wgt.shape[0], ho, wo))
        for i in range(ho):
            for j in range(wo):
                y[:, :, i, j] = np.einsum("bchw,ochw->bo", xp[:, :, i:i + 3, j:j + 3], wgt) + b
        if norm != "none":
            nl = f"features.{d * 4 + 1}"
            g, beta = sd[f"{nl}.weight"][:, None, None], sd[f"{nl}.bias"][:, None, None]
            if norm == "layernorm":  # nn.LayerNorm([C, H, W]): per sample over C, H, W, (C, H, W) affine
                g, beta = sd[f"{nl}.weight"], sd[f"{nl}.bias"]
                m, v = y.mean((1, 2, 3), keepdims=True), y.var((1, 2, 3), keepdims=True)
            elif norm == "batchnorm":  # eval mode: running statistics
                m, v = sd[f"{nl}.running_mean"][:, None, None], sd[f"{nl}.running_var"][:, None, None]
            else:  # GroupNorm(C, C): per sample and channel
                m, v = y.mean((2, 3), keepdims=True), y.var((2, 3), keepdims=True)
            y = (y - m) / np.sqrt(v + 1e-5) * g + beta
        y = np.maximum(y, 0)
        n, c, hh, ww = y.shape
        blocks = y.reshape(n, c, hh // 2, 2, ww // 2, 2)
        x = blocks.mean((3, 5)) if pooling == "avgpool" else blocks.max((3, 5))
    return x.reshape(x.shape[0], -1) @ sd["classifier.weight"].T + sd["classifier.bias"]


def _random_state_dict(r, channel, width, depth, classes, norm, size):
    sd, i = {}, 0
    cin = channel
    hw = 32 if size == 28 else size
    for _ in range(depth):
        sd[f"features.{i}.weight"] = r.normal(0, 0.3, (width, cin, 3, 3))
        sd[f"features.{i}.bias"] = r.normal(0, 0.1, width)
        if norm != "none":
            shape = (width, hw, hw) if norm == "layernorm" else (width,)
            sd[f"features.{i + 1}.weight"] = 1 + r.normal(0, 0.1, shape)
            sd[f"features.{i + 1}.bias"] = r.normal(0, 0.1, shape)
            if norm == "batchnorm":
                sd[f"features.{i + 1}.running_mean"] = r.normal(0, 0.5, width)
                sd[f"features.{i + 1}.running_var"] = r.uniform(0.5, 2.0, width)
                sd[f"features.{i + 1}.num_batches_tracked"] = np.array(7)
        i += 4 if norm != "none" else 3
        cin = width
        hw //= 2
    s = (32 if size == 28 else size) // 2**depth
    sd["classifier.weight"] = r.normal(0, 0.1, (classes, width * s * s))
    sd["classifier.bias"] = r.normal(0, 0.1, classes)
    return {k: np.asarray(v, np.float32) for k, v in sd.items()}


@pytest.mark.parametrize("norm,pooling,size,channel,name", [
    ("batchnorm", "avgpool", 16, 3, "convnet-d2-w6-bn"),
    ("none", "maxpool", 16, 3, "convnet-d2-w6-nn-maxpool"),
    ("instancenorm", "avgpool", 28, 1, "convnet-d2-w6"),
    ("layernorm", "avgpool", 28, 1, "convnet-d2-w6-ln"),
])
def test_conversion_matches_slow_reference(norm, pooling, size, channel, name):
    r = np.random.default_rng(1)
    depth, width, classes = 2, 6, 3
    sd = _random_state_dict(r, channel, width, depth, classes, norm, size)
    x = r.normal(size=(2, channel, size, size)).astype(np.float32)
    net, variables = convnet_from_torch(sd, input_shape=(size, size, channel), pooling=pooling)
    assert net.name == name
    assert ("batch_stats" in variables) == (norm == "batchnorm")
    got = net.logits(variables, x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(got, _ref_convnet(sd, x, depth, norm, pooling), atol=1e-4, rtol=1e-4)


def test_conversion_errors_name_the_problem():
    r = np.random.default_rng(0)
    sd = _random_state_dict(r, 3, 4, 1, 2, "instancenorm", 16)
    bad = dict(sd)
    bad["features.1.weight"] = np.ones((4, 16), np.float32)
    with pytest.raises(ValueError, match="neither a convolution"):
        convnet_variables_from_torch(bad)
    with pytest.raises(ValueError, match="classifier"):
        convnet_variables_from_torch({k: v for k, v in sd.items() if not k.startswith("classifier")})
    with pytest.raises(ValueError, match="unexpected state_dict entry 'fc.weight'"):
        convnet_variables_from_torch({**sd, "fc.weight": sd["classifier.weight"]})
    with pytest.raises(ValueError, match="pass input_shape"):
        convnet_variables_from_torch({**sd, "classifier.weight": np.zeros((2, 4 * 8 * 4), np.float32)})
    with pytest.raises(ValueError, match="pass input_shape"):
        convnet_variables_from_torch(sd, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="unknown pooling"):
        convnet_from_torch(sd, input_shape=(16, 16, 3), pooling="median")
    mixed = _random_state_dict(r, 3, 4, 2, 2, "instancenorm", 16)
    mixed["features.5.running_mean"] = np.zeros(4, np.float32)
    mixed["features.5.running_var"] = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="mix norm layers"):
        convnet_variables_from_torch(mixed)


def test_fixture_script_reproduces_the_stored_fixtures(tmp_path):
    """Regenerates the fixtures with PyTorch (only where torch is installed) and compares."""
    pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_torch_fixture", FIXTURES / "make_torch_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--out-dir", str(tmp_path)])
    assert (tmp_path / "convnet_fixtures.json").exists()
    for tag in ("cifar", "mnist"):
        new, old = np.load(tmp_path / f"convnet_{tag}.npz"), np.load(FIXTURES / f"convnet_{tag}.npz")
        assert sorted(new.files) == sorted(old.files)
        for k in old.files:
            if k != "config":
                np.testing.assert_allclose(new[k], old[k], atol=1e-6, err_msg=k)
