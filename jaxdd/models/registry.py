"""Networks by name.

``create_network("convnet", num_classes=10, input_shape=(28, 28, 1))`` returns a
:class:`~jaxdd.models.network.Network`. ConvNet names take dash-separated modifiers in any
order: ``convnet-d4`` (depth), ``convnet-w64`` (width), ``convnet-bn`` / ``-ln`` / ``-in`` /
``-nn`` (batch / layer / instance / no norm), ``convnet-maxpool``. Without ``-dN`` the depth
follows the image size as in the reference code (3 up to 32 px, 4 for 64 px, 5 for 128 px).

Cross-architecture models (layouts of the DC reference ``networks.py``; see each module):
``resnet18`` / ``resnet18-bn``, ``resnetap10`` (``-bn`` too), ``vgg11`` / ``vgg11-bn``, ``alexnet``
(``alexnet-bn``: BatchNorm after every convolution), ``lenet``, ``mlp`` (``mlp-wN``: hidden width) and
``vit`` (``vit-pN-wN-dN-hN``: patch, dim, depth, heads; default p4 w192 d6 h3).
"""

from __future__ import annotations

import difflib
from typing import Callable

import flax.linen as nn

from jaxdd.models.convnet import ConvNet
from jaxdd.models.network import Network

# family name -> builder(modifiers, num_classes, input_shape, init) -> nn.Module
_FAMILIES: dict[str, Callable[..., nn.Module]] = {}
# full model names shown in listings/errors (families may accept more via modifiers)
_NAMES: list[str] = []

_NORM_CODES = {"in": "instancenorm", "bn": "batchnorm", "ln": "layernorm", "nn": "none"}


def register(family: str, names: list[str] | None = None):
    """Decorator: register ``builder(modifiers, num_classes, input_shape, init)`` for ``family``."""
    def wrap(builder):
        _FAMILIES[family] = builder
        _NAMES.extend(names or [family])
        return builder
    return wrap


def available_models() -> list[str]:
    return list(_NAMES)


def create_network(name: str, *, num_classes: int, input_shape: tuple[int, int, int],
                   init: str = "torch") -> Network:
    """The network called ``name`` for images of ``input_shape`` (H, W, C) and ``num_classes``."""
    family, *mods = name.lower().split("-")
    if family not in _FAMILIES:
        close = difflib.get_close_matches(name, _NAMES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Available: {', '.join(_NAMES)}")
    module = _FAMILIES[family](mods, num_classes=num_classes, input_shape=tuple(input_shape), init=init)
    return Network(name=name, module=module, input_shape=tuple(input_shape), num_classes=num_classes)


def default_convnet_depth(image_size: int) -> int:
    return 3 if image_size <= 32 else 4 if image_size <= 64 else 5


@register("convnet", names=["convnet", "convnet-d1", "convnet-d2", "convnet-d4", "convnet-d5",
                            "convnet-w32", "convnet-w64", "convnet-w256", "convnet-bn", "convnet-ln",
                            "convnet-nn", "convnet-maxpool"])
def _convnet(mods, *, num_classes, input_shape, init):
    kw = dict(depth=default_convnet_depth(input_shape[0]))
    for m in mods:
        if m.startswith("d") and m[1:].isdigit():
            kw["depth"] = int(m[1:])
        elif m.startswith("w") and m[1:].isdigit():
            kw["width"] = int(m[1:])
        elif m in _NORM_CODES:
            kw["norm"] = _NORM_CODES[m]
        elif m in ("maxpool", "avgpool"):
            kw["pooling"] = m
        else:
            raise ValueError(f"unknown ConvNet modifier {m!r}: use dN, wN, bn/ln/in/nn, maxpool")
    return ConvNet(num_classes=num_classes, weight_init=init, **kw)


# --- the cross-architecture zoo (Zhao et al., ICLR 2021; layouts of the DC reference networks.py) ---

def _check_min_size(name: str, input_shape, min_px: int, why: str) -> None:
    h, w, _ = input_shape
    if min(h, w) < min_px:
        raise ValueError(f"{name} needs images of at least {min_px}x{min_px} px ({why}); got {h}x{w}. "
                         "Resize the images or pick a model for small inputs (convnet, mlp).")


def _norm_mods(family: str, mods, default: str) -> str:
    norm = default
    for m in mods:
        if m not in _NORM_CODES:
            raise ValueError(f"unknown {family} modifier {m!r}: use one of "
                             f"{', '.join(sorted(_NORM_CODES))} (batch / instance / layer / no norm)")
        norm = _NORM_CODES[m]
    return norm


@register("resnet18", names=["resnet18", "resnet18-bn"])
def _resnet18(mods, *, num_classes, input_shape, init):
    from jaxdd.models.resnet import ResNet
    _check_min_size("resnet18", input_shape, 8, "three stride-2 stages")
    return ResNet(num_classes=num_classes, stage_sizes=(2, 2, 2, 2), norm=_norm_mods("resnet18", mods, "instancenorm"),
                  downsample="conv", weight_init=init)


@register("resnetap10", names=["resnetap10"])
def _resnetap10(mods, *, num_classes, input_shape, init):
    from jaxdd.models.resnet import ResNet
    _check_min_size("resnetap10", input_shape, 8, "three 2x2 average-pool downsamplings")
    return ResNet(num_classes=num_classes, stage_sizes=(1, 1, 1, 1), norm=_norm_mods("resnetap10", mods, "instancenorm"),
                  downsample="avgpool", weight_init=init)


@register("vgg11", names=["vgg11", "vgg11-bn"])
def _vgg11(mods, *, num_classes, input_shape, init):
    from jaxdd.models.vgg import VGG
    _check_min_size("vgg11", input_shape, 28, "five 2x2 max-pools; 28 px is padded to 32")
    return VGG(num_classes=num_classes, norm=_norm_mods("vgg11", mods, "instancenorm"), weight_init=init)


@register("alexnet", names=["alexnet"])
def _alexnet(mods, *, num_classes, input_shape, init):
    from jaxdd.models.alexnet import AlexNet
    _check_min_size("alexnet", input_shape, 8, "three 2x2 max-pools")
    return AlexNet(num_classes=num_classes, norm=_norm_mods("alexnet", mods, "none"), weight_init=init)


@register("lenet", names=["lenet"])
def _lenet(mods, *, num_classes, input_shape, init):
    from jaxdd.models.lenet import LeNet
    if mods:
        raise ValueError(f"lenet takes no modifiers; got {'-'.join(mods)!r}")
    _check_min_size("lenet", input_shape, 16, "two 5x5 convolutions and two 2x2 max-pools")
    return LeNet(num_classes=num_classes, weight_init=init)


@register("mlp", names=["mlp"])
def _mlp(mods, *, num_classes, input_shape, init):
    from jaxdd.models.mlp import MLP
    kw = {}
    for m in mods:
        if m.startswith("w") and m[1:].isdigit():
            kw["width"] = int(m[1:])
        else:
            raise ValueError(f"unknown MLP modifier {m!r}: use wN (hidden width)")
    return MLP(num_classes=num_classes, weight_init=init, **kw)


@register("vit", names=["vit"])
def _vit(mods, *, num_classes, input_shape, init):
    """``vit`` with modifiers ``pN`` (patch), ``wN`` (dim), ``dN`` (depth), ``hN`` (heads)."""
    from jaxdd.models.vit import ViT
    keys = {"p": "patch", "w": "dim", "d": "depth", "h": "heads"}
    kw = {}
    for m in mods:
        if m[:1] in keys and m[1:].isdigit() and int(m[1:]) > 0:
            kw[keys[m[0]]] = int(m[1:])
        else:
            raise ValueError(f"unknown ViT modifier {m!r}: use pN (patch), wN (dim), dN (depth), hN (heads)")
    module = ViT(num_classes=num_classes, weight_init=init, **kw)
    h, w, _ = input_shape
    if h % module.patch or w % module.patch:
        raise ValueError(f"ViT patch size {module.patch} does not divide the image size {h}x{w}; "
                         "add a pN modifier with a patch size that divides both (e.g. vit-p2)")
    if module.dim % module.heads or module.dim % 4:
        raise ValueError(f"ViT dim {module.dim} must be a multiple of the heads ({module.heads}) and of 4; "
                         "change the wN or hN modifier")
    return module
