"""Parameter names of the original code (official BoostNet, MSDNet-PyTorch) for our models.

Both original codebases compute the same function as our MSDNet and RANet from the same
tensors; only the module names and nesting differ. :func:`original_names` gives, for every
tensor of one of our models, the key the original code stores it under (without the
`module.` prefix of DataParallel/DDP). The renaming rules are, per module:

MSDNet (original `blocks`, `classifier`)
    stem_layer.scales.S.*            blocks.0.0.layers.S.net.*   (ImageNet scale 0: layers.0.*)
    blocks.B.L.*                     blocks.B.L'.* with L' = L+1 in block 0 (the original's
                                     first layer is blocks.0.0), L' = L elsewhere
    ...units.S.same / .down          ...layers.S.conv_normal / .conv_down
    ...convs.S.I.*  (transition)     ...m.S.net.I.*
RANet (original `FirstLayer`, `scale_flows`, `classifier`)
    stem_layer.layers.S.*            FirstLayer.layers.S.net.*   (ImageNet S=0: layers.0.*)
    flows.K.J.layers.L.same / .own   scale_flows.K.J.layers.L.conv_normal
    flows.K.J.layers.L.lower         scale_flows.K.J.layers.L.conv_up
    flows.K.J.closing.I.*            scale_flows.K.J.conv_last.net.I.*
    flows.K.J.transition.I.*         scale_flows.K.J.trans.net.I.*
Both
    heads.N.features.I.J.*           classifier.N.m.I.net.J.*
    heads.N.linear.*                 classifier.N.linear.*
    bottleneck conv A.I (A: 0 = 1x1, 1 = 3x3; I: 0 = conv, 1 = BN)
                                     net.(3A+I), the original's flat (conv, BN, ReLU, conv, BN, ReLU)
"""

from __future__ import annotations

import re
from typing import Callable

from .msdnet import MSDNet
from .multi_exit import MultiExitNetwork
from .ranet import RANet

Rule = tuple[re.Pattern, Callable[..., str]]
LEAF = r"(?P<leaf>[a-z_]+)"


def _rule(pattern: str, rename: Callable[..., str]) -> Rule:
    return re.compile(pattern.replace("{leaf}", LEAF)), rename


def _net(a: str, i: str) -> str:
    """Index in the original's ConvBN `net` of our bottleneck conv `a`, its module `i`."""
    return str(3 * int(a) + int(i))


def _stem(prefix: str, imagenet: bool) -> Callable[..., str]:
    """Scale s of the stem: ConvBasic `.net` in the original, but its ImageNet 7x7 stem
    (conv with bias, BN, ReLU, max-pool) is a plain Sequential."""

    def rename(s: str, i: str, leaf: str) -> str:
        net = "" if imagenet and s == "0" else "net."
        return f"{prefix}.{s}.{net}{i}.{leaf}"

    return rename


def _head_rules() -> list[Rule]:
    return [
        _rule(
            r"heads\.(?P<n>\d+)\.features\.(?P<i>\d+)\.(?P<j>\d+)\.{leaf}",
            lambda n, i, j, leaf: f"classifier.{n}.m.{i}.net.{j}.{leaf}",
        ),
        _rule(r"heads\.(?P<n>\d+)\.linear\.{leaf}", lambda n, leaf: f"classifier.{n}.linear.{leaf}"),
    ]


def _msdnet_layer(b: str, layer: str) -> str:
    """The original's index of our layer `layer` of block `b` (its block 0 starts with the stem)."""
    return f"blocks.{b}.{int(layer) + 1 if b == '0' else layer}"


MSDNET_UNIT = {"same": "conv_normal", "down": "conv_down"}
RANET_LAYER_CONV = {"same": "conv_normal", "own": "conv_normal", "lower": "conv_up"}


def msdnet_rules(imagenet: bool) -> list[Rule]:
    """Renaming rules from our MSDNet keys to the original's."""
    return [
        _rule(r"stem_layer\.scales\.(?P<s>\d+)\.(?P<i>\d+)\.{leaf}", _stem("blocks.0.0.layers", imagenet)),
        _rule(
            r"blocks\.(?P<b>\d+)\.(?P<layer>\d+)\.units\.(?P<s>\d+)\.(?P<conv>same|down)"
            r"\.(?P<a>\d+)\.(?P<i>\d+)\.{leaf}",
            lambda b, layer, s, conv, a, i, leaf: (
                f"{_msdnet_layer(b, layer)}.layers.{s}.{MSDNET_UNIT[conv]}.net.{_net(a, i)}.{leaf}"
            ),
        ),
        _rule(
            r"blocks\.(?P<b>\d+)\.(?P<layer>\d+)\.convs\.(?P<s>\d+)\.(?P<i>\d+)\.{leaf}",
            lambda b, layer, s, i, leaf: f"{_msdnet_layer(b, layer)}.m.{s}.net.{i}.{leaf}",
        ),
    ] + _head_rules()


def ranet_rules(imagenet: bool) -> list[Rule]:
    """Renaming rules from our RANet keys to the original's."""
    return [
        _rule(r"stem_layer\.layers\.(?P<s>\d+)\.(?P<i>\d+)\.{leaf}", _stem("FirstLayer.layers", imagenet)),
        _rule(
            r"flows\.(?P<k>\d+)\.(?P<j>\d+)\.layers\.(?P<layer>\d+)\.(?P<conv>same|own|lower)"
            r"\.(?P<a>\d+)\.(?P<i>\d+)\.{leaf}",
            lambda k, j, layer, conv, a, i, leaf: (
                f"scale_flows.{k}.{j}.layers.{layer}.{RANET_LAYER_CONV[conv]}.net.{_net(a, i)}.{leaf}"
            ),
        ),
        _rule(
            r"flows\.(?P<k>\d+)\.(?P<j>\d+)\.closing\.(?P<i>\d+)\.{leaf}",
            lambda k, j, i, leaf: f"scale_flows.{k}.{j}.conv_last.net.{i}.{leaf}",
        ),
        _rule(
            r"flows\.(?P<k>\d+)\.(?P<j>\d+)\.transition\.(?P<i>\d+)\.{leaf}",
            lambda k, j, i, leaf: f"scale_flows.{k}.{j}.trans.net.{i}.{leaf}",
        ),
    ] + _head_rules()


def renaming_rules(model: MultiExitNetwork) -> list[Rule]:
    """The rules for `model`'s backbone and input size."""
    if isinstance(model, MSDNet):
        return msdnet_rules(model.cfg.imagenet)
    if isinstance(model, RANet):
        return ranet_rules(model.cfg.imagenet)
    raise TypeError(f"no original names are known for {type(model).__name__}")


def original_name(name: str, rules: list[Rule]) -> str:
    """The original code's key for our key `name` (the first rule matching all of it)."""
    for pattern, rename in rules:
        match = pattern.fullmatch(name)
        if match:
            return rename(**match.groupdict())
    raise ValueError(f"no renaming rule covers {name}")


def original_names(model: MultiExitNetwork) -> dict[str, str]:
    """Our state-dict key -> the original code's key, for every tensor of `model`, in our order."""
    rules = renaming_rules(model)
    return {name: original_name(name, rules) for name in model.state_dict()}
