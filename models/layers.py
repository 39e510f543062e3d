"""What MSDNet and RANet share (docs/architectures.md#msdnet, #ranet): the flags and config
fields of densely connected multi-scale networks, the check that their exit heads fit, and the
building blocks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.registry import ConfigError, InputSpec
from utils.flags import COUNT, Flag, Kind, Range, int_list

HEAD_MAP_SIZES = range(5, 13)  # the exit heads (two stride-2 convs, a 2x2 pool) read 5x5..12x12


@dataclass(frozen=True)
class DenseConfig:
    """The fields MSDNet and RANet configure alike; each family adds its own and its width
    factors' defaults."""

    nBlocks: int = 10
    step: int = 2
    stepmode: str = "even"
    nChannels: int = 16
    growthRate: int = 6
    reduction: float = 0.5
    bottleneck: bool = True
    num_classes: int = 100
    imagenet: bool = False


def dense_flags(blocks_help: str, stepmode_help: str, gr_factor_help: str) -> tuple[Flag, ...]:
    """The flags of :class:`DenseConfig`'s fields and the width factors, with the family's help
    where the meaning differs; defaults are the config's."""
    default = DenseConfig()
    return (
        Flag(("--nBlocks",), blocks_help, default.nBlocks, int, range=COUNT),
        Flag(
            ("--step",),
            "layers per later block (--stepmode even) or their growth (lin_grow)",
            default.step,
            int,
            range=COUNT,
        ),
        Flag(("--stepmode",), stepmode_help, default.stepmode, choices=("even", "lin_grow")),
        Flag(("--nChannels",), "channels of the finest scale's stem", default.nChannels, int, range=COUNT),
        Flag(("--growthRate",), "channels each dense layer adds", default.growthRate, int, range=COUNT),
        Flag(("--grFactor",), gr_factor_help, None, int_list, range=COUNT),
        Flag(
            ("--bnFactor",),
            "per-scale bottleneck width factors (None: --grFactor's values)",
            None,
            int_list,
            range=COUNT,
        ),
        Flag(
            ("--reduction",),
            "channel reduction of the transitions",
            default.reduction,
            float,
            range=Range(lambda v: 0 <= v <= 1, "in [0, 1]"),
        ),
        Flag(("--bottleneck",), "1x1 bottleneck before each 3x3 conv", default.bottleneck, kind=Kind.TOGGLE),
    )


def dense_fields(values: dict[str, Any], inputs: InputSpec) -> dict[str, Any]:
    """The :class:`DenseConfig` fields from flag values and the inputs."""
    return {
        "nBlocks": values["nBlocks"],
        "step": values["step"],
        "stepmode": values["stepmode"],
        "nChannels": values["nChannels"],
        "growthRate": values["growthRate"],
        "reduction": values["reduction"],
        "bottleneck": values["bottleneck"],
        "num_classes": inputs.num_classes,
        "imagenet": inputs.imagenet_style,
    }


def width_factors(
    values: dict[str, Any], defaults: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(--grFactor, --bnFactor), the family's `defaults` where not given; one per scale."""
    growth = tuple(values["grFactor"] or defaults)
    bottleneck = tuple(values["bnFactor"] or growth)
    if len(bottleneck) != len(growth):
        raise ConfigError(
            f"--bnFactor has {len(bottleneck)} values but --grFactor has {len(growth)}; give one per scale"
        )
    return growth, bottleneck


def stem_size(inputs: InputSpec) -> int:
    """Side of the finest map the stem gives (the ImageNet-style stem divides by 4)."""
    size = inputs.image_size
    return math.ceil(math.ceil(size / 2) / 2) if inputs.imagenet_style else size


def coarsest_size(stem: int, levels: int) -> int:
    """Side of the coarsest map: `stem` through levels-1 stride-2 3x3 convs (padding 1)."""
    for _ in range(levels - 1):
        stem = math.ceil(stem / 2)
    return stem


def check_head_maps(inputs: InputSpec, levels: int, name: str) -> None:
    """Refuse `levels` scales whose coarsest maps the exit heads cannot read (5x5 to 12x12).

    The coarsest map is the stem's (32 on CIFAR-sized data, 56 on ImageNet) halved, rounding
    up, once per extra scale; `name` is the flag that sets the number of scales.
    """
    stem = stem_size(inputs)
    size = coarsest_size(stem, levels)
    if size not in HEAD_MAP_SIZES:
        fitting = [n for n in range(1, 7) if coarsest_size(stem, n) in HEAD_MAP_SIZES]
        raise ConfigError(
            f"{name} gives {levels} scale(s), so the exit heads would read "
            f"{size}x{size} maps on {inputs.image_size}x{inputs.image_size} inputs; "
            f"they need 5x5 to 12x12: use {' or '.join(map(str, fitting))} scales"
        )


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class BottleneckConv(nn.Sequential):
    """B(cin, cout, down, w): optional 1x1 bottleneck to min(cin, w*cout), then a 3x3 conv."""

    def __init__(self, cin: int, cout: int, down: bool, width: int, bottleneck: bool = True):
        layers: list[nn.Module] = []
        inner = cin
        if bottleneck:
            inner = min(cin, width * cout)
            layers += [ConvBNReLU(cin, inner, 1, 1, 0)]
        layers += [ConvBNReLU(inner, cout, 3, 2 if down else 1, 1)]
        super().__init__(*layers)


class ExitHead(nn.Module):
    """Classifier after a block: two stride-2 ConvBNReLU, 2x2 average pool, linear.

    CIFAR-sized inputs use 128 channels in the convs; ImageNet keeps the input width.
    """

    def __init__(self, cin: int, num_classes: int, imagenet: bool):
        super().__init__()
        width = cin if imagenet else 128
        self.features = nn.Sequential(
            ConvBNReLU(cin, width, 3, 2, 1), ConvBNReLU(width, width, 3, 2, 1), nn.AvgPool2d(2)
        )
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.features(x).flatten(1))


def imagenet_stem(cout: int) -> nn.Sequential:
    """7x7 stride-2 conv with bias, BN, ReLU, 3x3 stride-2 max-pool."""
    return nn.Sequential(
        nn.Conv2d(3, cout, 7, 2, 3), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
    )


def dataset_stem(cout: int, imagenet: bool) -> nn.Module:
    """First layer of the finest scale: 3x3 ConvBNReLU on CIFAR, the ImageNet stem otherwise."""
    return imagenet_stem(cout) if imagenet else ConvBNReLU(3, cout, 3, 1, 1)


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """Identity forward; multiplies the gradient by `scale` on the way back (MSDNet-GE)."""
    return _ScaleGradient.apply(x, scale)


class Resize(nn.Module):
    """Bilinear resize (align_corners=True) to a given spatial size; a module so costs see it."""

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=True)
