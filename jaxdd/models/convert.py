"""Convert PyTorch weights of the DC reference ConvNet into jaxdd variables.

The reference ``ConvNet`` (Zhao et al., ICLR 2021, ``utils/networks.py``) keeps its layers in
``features`` (an ``nn.Sequential``: per block ``Conv2d``, an optional norm layer, the activation and
the pooling) and ``classifier`` (``nn.Linear``). The mapping to :class:`jaxdd.models.convnet.ConvNet`:

* ``Conv2d.weight`` (O, I, kh, kw) -> ``convs_i/kernel`` (kh, kw, I, O); bias unchanged.
* ``GroupNorm`` / ``BatchNorm2d`` ``weight, bias`` -> ``norms_i/norm/{scale, bias}``;
  ``BatchNorm2d`` ``running_mean, running_var`` -> ``batch_stats`` ``norms_i/norm/{mean, var}``;
  ``LayerNorm([C, H, W])`` ``weight, bias`` (C, H, W) -> ``norms_i/norm/{scale, bias}`` (H, W, C).
* ``Linear.weight`` (K, C*H*W) -> ``classifier/kernel`` (H*W*C, K): PyTorch flattens NCHW feature
  maps, jaxdd flattens NHWC, so the input rows are permuted:
  ``kernel[(h*W + w)*C + c, k] = weight[k, (c*H + h)*W + w]``.

28 px inputs: the reference pads the first convolution by 3, jaxdd pads the input by 2 and then
uses padding 1; the weights are the same.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import jax
import numpy as np

from jaxdd.models.network import Network, Variables
from jaxdd.models.registry import create_network


def _numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch.Tensor
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float32)


def _feature_blocks(state_dict: Mapping[str, Any]) -> list[tuple[dict, dict | None]]:
    """[(conv params, norm params or None)] from the ``features.<i>.<name>`` entries, in order."""
    layers: dict[int, dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"features\.(\d+)\.(\w+)", key)
        if m:
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif not key.startswith("classifier."):
            raise ValueError(f"unexpected state_dict entry {key!r}: expected the DC ConvNet's "
                             "'features.<i>.<param>' and 'classifier.{weight,bias}' entries")
    blocks: list[tuple[dict, dict | None]] = []
    for i in sorted(layers):
        layer = layers[i]
        if "weight" not in layer:
            raise ValueError(f"features.{i} has no weight (entries {sorted(layer)})")
        ndim = np.ndim(layer["weight"])
        if ndim == 4:
            blocks.append((layer, None))
        elif ndim in (1, 3):  # per-channel norm affine, or the reference layernorm's (C, H, W) affine
            if not blocks or blocks[-1][1] is not None:
                raise ValueError(f"features.{i} looks like a norm layer but does not follow a convolution")
            blocks[-1] = (blocks[-1][0], layer)
        else:
            raise ValueError(f"features.{i}.weight has shape {np.shape(layer['weight'])}: a {ndim}-D weight is "
                             "neither a convolution (4-D) nor a norm layer (1-D, or 3-D for layernorm)")
    if not blocks:
        raise ValueError("state_dict has no 'features.<i>.weight' convolutions; is it the DC ConvNet?")
    return blocks


def _norm_kind(blocks) -> str:
    kinds = {"none" if n is None else "batchnorm" if "running_mean" in n else
             "layernorm" if np.ndim(n["weight"]) == 3 else "instancenorm" for _, n in blocks}
    if len(kinds) != 1:
        raise ValueError(f"the blocks mix norm layers ({sorted(kinds)}); jaxdd's ConvNet uses one norm for all")
    return kinds.pop()


def convnet_variables_from_torch(state_dict: Mapping[str, Any], *,
                                 input_shape: tuple[int, int, int] | None = None) -> Variables:
    """jaxdd ConvNet variables holding the weights of a DC reference ``ConvNet.state_dict()``.

    ``state_dict`` values may be numpy arrays or torch tensors. A 3-D norm weight is the reference
    ``layernorm`` (``nn.LayerNorm([C, H, W])``). A ``GroupNorm`` is read as instance norm (the
    reference ``instancenorm`` is ``GroupNorm(C, C)``; other group counts cannot be told
    apart from the weights and are not supported). ``input_shape`` (H, W, C) fixes the final feature
    map size used to permute the classifier; without it the map is assumed square. BatchNorm running
    statistics are copied as they are (exact for inference; note PyTorch keeps the unbiased running
    variance, Flax the biased one, so further training updates them slightly differently).
    """
    sd = {k: _numpy(v) for k, v in state_dict.items()}
    blocks = _feature_blocks(sd)
    norm = _norm_kind(blocks)
    if "classifier.weight" not in sd or "classifier.bias" not in sd:
        raise ValueError("state_dict has no 'classifier.weight' / 'classifier.bias'; is it the DC ConvNet?")
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for i, (conv, nrm) in enumerate(blocks):
        if "bias" not in conv:
            raise ValueError(f"convolution {i} has no bias; the DC ConvNet's Conv2d layers have biases")
        params[f"convs_{i}"] = {"kernel": conv["weight"].transpose(2, 3, 1, 0), "bias": conv["bias"]}
        if nrm is not None:
            to_nhwc = (lambda a: a.transpose(1, 2, 0)) if norm == "layernorm" else (lambda a: a)
            params[f"norms_{i}"] = {"norm": {"scale": to_nhwc(nrm["weight"]), "bias": to_nhwc(nrm["bias"])}}
            if norm == "batchnorm":
                stats[f"norms_{i}"] = {"norm": {"mean": nrm["running_mean"], "var": nrm["running_var"]}}
    width = blocks[-1][0]["weight"].shape[0]
    weight = sd["classifier.weight"]
    k, f = weight.shape
    if f % width:
        raise ValueError(f"classifier input size {f} is not a multiple of the width {width}")
    hw = f // width
    if input_shape is not None:
        h, w = _final_hw(input_shape, len(blocks))
    else:
        h = w = math.isqrt(hw)
    if h * w != hw:
        raise ValueError(f"classifier input size {f} = {width} x {hw} does not fit a {h}x{w} final feature map; "
                         "pass input_shape=(H, W, C) of the images the network was built for")
    params["classifier"] = {"kernel": weight.reshape(k, width, h, w).transpose(2, 3, 1, 0).reshape(h * w * width, k),
                            "bias": sd["classifier.bias"]}
    out: Variables = {"params": params}
    if stats:
        out["batch_stats"] = stats
    return out


def _final_hw(input_shape, depth: int) -> tuple[int, int]:
    h, w = input_shape[:2]
    if (h, w) == (28, 28):
        h = w = 32
    for _ in range(depth):
        h, w = h // 2, w // 2
    return h, w


def convnet_from_torch(state_dict: Mapping[str, Any], *, input_shape: tuple[int, int, int],
                       pooling: str = "avgpool") -> tuple[Network, Variables]:
    """The jaxdd ConvNet matching a DC reference ``state_dict`` and its converted variables.

    Depth, width, norm and classes are read from the weights (the network is named e.g.
    ``convnet-d3-w128``, ``-bn`` / ``-ln`` / ``-nn`` for BatchNorm / LayerNorm / no norm); ``pooling`` (``avgpool`` or
    ``maxpool``) has no weights and must be given. The converted variables are checked against
    the network's own variable shapes.
    """
    variables = convnet_variables_from_torch(state_dict, input_shape=input_shape)
    p = variables["params"]
    depth = sum(1 for key in p if key.startswith("convs_"))
    width = p[f"convs_{depth - 1}"]["kernel"].shape[-1]
    num_classes = p["classifier"]["bias"].shape[0]
    norm = ("bn" if "batch_stats" in variables else "nn" if "norms_0" not in p else
            "ln" if np.ndim(p["norms_0"]["norm"]["scale"]) == 3 else "in")
    if pooling not in ("avgpool", "maxpool"):
        raise ValueError(f"unknown pooling {pooling!r}; choose avgpool or maxpool")
    name = f"convnet-d{depth}-w{width}" + ("" if norm == "in" else f"-{norm}") + ("-maxpool" if pooling == "maxpool" else "")
    net = create_network(name, num_classes=num_classes, input_shape=tuple(input_shape))
    expected = jax.tree.map(lambda a: a.shape, jax.eval_shape(net.init, jax.random.key(0)))
    got = jax.tree.map(lambda a: a.shape, variables)
    if expected != got:
        raise ValueError(f"the converted weights do not fit {name} for input {tuple(input_shape)}: "
                         f"expected shapes {expected}, got {got}; check input_shape and that every "
                         "convolution has the same width")
    return net, variables
