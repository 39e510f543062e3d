"""MSDNet (Huang et al., ICLR 2018) with optional gradient rescaling (MSDNet-GE; docs/architectures.md).

Registers the backbones `msdnet` and `msdnet_ge` (with gradient rescaling).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from utils.flags import COUNT, Flag

from .costs import msdnet_convention
from .layers import (
    BottleneckConv,
    ConvBNReLU,
    DenseConfig,
    ExitHead,
    check_head_maps,
    dataset_stem,
    dense_fields,
    dense_flags,
    scale_gradient,
    width_factors,
)
from .multi_exit import MultiExitNetwork
from .registry import Backbone, InputSpec, register_backbone

GR_FACTOR = {False: (1, 2, 4), True: (1, 2, 4, 4)}  # default --grFactor by ImageNet-style inputs


@dataclass(frozen=True)
class MSDNetConfig(DenseConfig):
    base: int = 4
    grFactor: Sequence[int] = GR_FACTOR[False]
    bnFactor: Sequence[int] = GR_FACTOR[False]
    prune: str = "max"
    gradient_rescale: bool = False

    @property
    def num_scales(self) -> int:
        return len(self.grFactor)

    @property
    def num_exits(self) -> int:
        return self.nBlocks

    def block_layers(self) -> list[int]:
        """Number of layers in each block."""
        later = [self.step if self.stepmode == "even" else self.step * i + 1 for i in range(1, self.nBlocks)]
        return [self.base] + later


class MultiScaleStem(nn.Module):
    """Scale 0 from the image, each coarser scale by a stride-2 ConvBNReLU of the previous."""

    def __init__(self, cfg: MSDNetConfig):
        super().__init__()
        widths = [cfg.nChannels * g for g in cfg.grFactor]
        self.scales = nn.ModuleList(
            [dataset_stem(widths[0], cfg.imagenet)]
            + [ConvBNReLU(widths[s - 1], widths[s], 3, 2, 1) for s in range(1, cfg.num_scales)]
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = []
        for layer in self.scales:
            x = layer(x)
            maps.append(x)
        return maps


class DenseUnit(nn.Module):
    """concat(b, B(b)) on one scale, or concat(b, B(a, down), B(b)) across two scales."""

    def __init__(
        self,
        cin_same: int,
        growth: int,
        width_same: int,
        bottleneck: bool,
        cin_finer: int | None = None,
        width_finer: int | None = None,
    ):
        super().__init__()
        two_scale = cin_finer is not None
        out = growth // 2 if two_scale else growth
        self.down = BottleneckConv(cin_finer, out, True, width_finer, bottleneck) if two_scale else None
        self.same = BottleneckConv(cin_same, out, False, width_same, bottleneck)

    def forward(self, same: Tensor, finer: Tensor | None = None) -> Tensor:
        parts = [same]
        if self.down is not None:
            parts.append(self.down(finer))
        parts.append(self.same(same))
        return torch.cat(parts, dim=1)


class MSDLayer(nn.Module):
    """One layer over the active scales; keeps the coarsest `out_scales` of them."""

    def __init__(self, c: int, cfg: MSDNetConfig, in_scales: int, out_scales: int):
        super().__init__()
        self.in_scales, self.out_scales = in_scales, out_scales
        offset = cfg.num_scales - out_scales
        dropped = in_scales > out_scales
        units = []
        for s in range(offset, cfg.num_scales):
            growth = cfg.growthRate * cfg.grFactor[s]
            if s == offset and not dropped:
                units.append(DenseUnit(c * cfg.grFactor[s], growth, cfg.bnFactor[s], cfg.bottleneck))
            else:
                units.append(
                    DenseUnit(
                        c * cfg.grFactor[s],
                        growth,
                        cfg.bnFactor[s],
                        cfg.bottleneck,
                        c * cfg.grFactor[s - 1],
                        cfg.bnFactor[s - 1],
                    )
                )
        self.units = nn.ModuleList(units)

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        # maps holds the in_scales coarsest scales, finest first.
        first = self.in_scales - self.out_scales
        out = []
        for i, unit in enumerate(self.units):
            j = first + i
            finer = maps[j - 1] if unit.down is not None else None
            out.append(unit(maps[j], finer))
        return out


class Transition(nn.Module):
    """Per-scale 1x1 ConvBNReLU that shrinks the width counter after a scale is dropped."""

    def __init__(self, c_in: int, c_out: int, factors: Sequence[int]):
        super().__init__()
        self.convs = nn.ModuleList(ConvBNReLU(c_in * g, c_out * g, 1, 1, 0) for g in factors)

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        return [conv(m) for conv, m in zip(self.convs, maps)]


def build_blocks(cfg: MSDNetConfig) -> tuple[list[nn.Sequential], list[int]]:
    """The MSDNet blocks and the coarsest-scale width counter after each block."""
    sizes = cfg.block_layers()
    total, S = sum(sizes), cfg.num_scales
    interval = math.ceil(total / S)
    c, t = cfg.nChannels, 0
    blocks, widths = [], []
    for size in sizes:
        layers: list[nn.Module] = []
        for _ in range(size):
            t += 1
            if cfg.prune == "max":
                in_scales = S - math.floor(max(0, t - 2) / interval)
                out_scales = S - math.floor((t - 1) / interval)
                transition = in_scales > out_scales and cfg.reduction > 0
            else:
                in_scales, out_scales = min(S, total - t + 2), min(S, total - t + 1)
                transition = cfg.reduction > 0 and t in (math.floor(total / 3), math.floor(2 * total / 3))
            layers.append(MSDLayer(c, cfg, in_scales, out_scales))
            c += cfg.growthRate
            if transition:
                reduced = math.floor(cfg.reduction * c)
                layers.append(Transition(c, reduced, cfg.grFactor[S - out_scales :]))
                c = reduced
        blocks.append(nn.Sequential(*layers))
        widths.append(c)
    return blocks, widths


class MSDNet(MultiExitNetwork):
    """Multi-scale dense network; features are the list of active scale maps, finest first."""

    def __init__(self, cfg: MSDNetConfig):
        super().__init__()
        self.cfg = cfg
        self.num_exits = cfg.nBlocks
        self.stem_layer = MultiScaleStem(cfg)
        blocks, widths = build_blocks(cfg)
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(
            ExitHead(c * cfg.grFactor[-1], cfg.num_classes, cfg.imagenet) for c in widths
        )

    def stem(self, x: Tensor) -> list[Tensor]:
        return self.stem_layer(x)

    def advance(self, n: int, features: list[Tensor]) -> list[Tensor]:
        if self.cfg.gradient_rescale and n > 0:
            # Trunk continuing past exit n-1: gradient from later blocks x (N-n), which
            # combined with the 1/(N-n+1) below gives (N-n)/(N-n+1) in total
            # (docs/architectures.md#gradient-rescaling-msdnet-ge).
            features = features[:-1] + [scale_gradient(features[-1], self.num_exits - n)]
        features = self.blocks[n](features)
        if self.cfg.gradient_rescale:
            features = features[:-1] + [scale_gradient(features[-1], 1.0 / (self.num_exits - n))]
        return features

    def classify(self, n: int, features: list[Tensor]) -> Tensor:
        return self.heads[n](features[-1])

    def stage_modules(self, n: int) -> list[nn.Module]:
        modules = [self.blocks[n], self.heads[n]]
        return [self.stem_layer] + modules if n == 0 else modules


FLAGS = dense_flags(
    "blocks, one exit each",
    "even: every later block has --step layers; lin_grow: block i has step*i+1 layers",
    "per-scale width factors, e.g. 1-2-4 (None: 1-2-4, on ImageNet-style inputs 1-2-4-4)",
) + (
    Flag(("--base",), "layers in the first block", MSDNetConfig.base, int, range=COUNT),
    Flag(("--prune",), "how scales are dropped along the depth", MSDNetConfig.prune, choices=("max", "min")),
)


def configure(values: dict[str, Any], inputs: InputSpec, gradient_rescale: bool) -> MSDNetConfig:
    """The config the flag values describe for `inputs`; refuses heads that would not fit."""
    growth, bottleneck = width_factors(values, GR_FACTOR[inputs.imagenet_style])
    check_head_maps(inputs, len(growth), "--grFactor")
    return MSDNetConfig(
        **dense_fields(values, inputs),
        base=values["base"],
        grFactor=growth,
        bnFactor=bottleneck,
        prune=values["prune"],
        gradient_rescale=gradient_rescale,
    )


register_backbone(
    Backbone(
        "msdnet",
        "MSDNet",
        FLAGS,
        functools.partial(configure, gradient_rescale=False),
        MSDNet,
        msdnet_convention,
    )
)
register_backbone(
    Backbone(
        "msdnet_ge",
        "MSDNet with gradient rescaling (MSDNet-GE)",
        FLAGS,
        functools.partial(configure, gradient_rescale=True),
        MSDNet,
        msdnet_convention,
    )
)
