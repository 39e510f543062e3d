"""RANet, resolution-adaptive networks (Yang et al., CVPR 2020; docs/architectures.md#ranet).

Registers the backbone `ranet`.

F flows run one after the other, lowest resolution first. Flow k has
B_k = nBlocks + block_step*k dense blocks; its first B_{k-1} blocks are *fusion* blocks that
also read the per-layer maps of the same-numbered block of flow k-1, the rest are *normal*
blocks, each followed by an exit. Stage n of the multi-exit interface runs the n-th normal
block in execution order, preceded by its flow's fusion blocks when it is the flow's first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from utils.flags import COUNT, Flag, Range, int_list

from .costs import msdnet_convention
from .layers import (
    BottleneckConv,
    ConvBNReLU,
    DenseConfig,
    ExitHead,
    Resize,
    check_head_maps,
    dataset_stem,
    dense_fields,
    dense_flags,
    width_factors,
)
from .msdnet import DenseUnit
from .multi_exit import MultiExitNetwork
from .registry import Backbone, ConfigError, InputSpec, register_backbone

GR_FACTOR = {False: (4, 2, 1, 1), True: (4, 2, 2, 1)}  # default --grFactor by ImageNet-style inputs
SCALE_LIST = {False: (1, 2, 3, 3), True: (1, 2, 3, 4)}  # default --scale-list likewise

# Features between stages: "x" is the current flow's map, "maps" the per-layer maps of the
# current flow's blocks (kept only while a later flow will fuse them), "pending" the stem
# maps of the flows that have not started yet.
RANetFeatures = dict[str, object]


@dataclass(frozen=True)
class RANetConfig(DenseConfig):
    block_step: int = 2
    grFactor: Sequence[int] = GR_FACTOR[False]
    bnFactor: Sequence[int] = GR_FACTOR[False]
    scale_list: Sequence[int] = SCALE_LIST[False]
    compress_factor: float = 0.25

    @property
    def num_exits(self) -> int:
        """One exit per normal block: nBlocks in flow 0, block_step more in every later flow."""
        return self.nBlocks + self.block_step * (self.num_flows - 1)

    @property
    def num_flows(self) -> int:
        return len(self.scale_list)

    def flow_blocks(self, k: int) -> int:
        """B_k: number of blocks of flow k (0-based, lowest resolution first)."""
        return self.nBlocks + self.block_step * k

    def fusion_blocks(self, k: int) -> int:
        """Number of leading fusion blocks of flow k (B_{k-1}, none in flow 0)."""
        return self.flow_blocks(k - 1) if k > 0 else 0

    def block_layers(self, j: int) -> int:
        """L_j: layers of block j (1-based), the same in every flow."""
        return self.step if self.stepmode == "even" else self.step * j

    def is_down_block(self, k: int, j: int) -> bool:
        """Whether fusion block j of flow k halves the resolution in its last layer."""
        downs = self.scale_list[k] - 1
        counts = [0] + [self.flow_blocks(i) for i in range(k)]
        return downs > 0 and j in counts[-downs:]

    def has_transition(self, k: int, j: int) -> bool:
        """Whether block j of flow k ends with a 1x1 reduction."""
        scale, blocks = self.scale_list[k], self.flow_blocks(k)
        return any(j == math.floor(i * blocks / scale) for i in range(1, scale))


class RANetStem(nn.Module):
    """The dataset stem gives the last flow's map; each lower flow's map derives from the next."""

    def __init__(self, cfg: RANetConfig):
        super().__init__()
        widths = [cfg.nChannels * g for g in cfg.grFactor]
        last = cfg.num_flows - 1
        layers = [dataset_stem(widths[last], cfg.imagenet)]
        for k in range(last - 1, -1, -1):
            stride = 1 if cfg.scale_list[k] == cfg.scale_list[k + 1] else 2
            layers.append(ConvBNReLU(widths[k + 1], widths[k], 3, stride, 1))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        """The start map of every flow, lowest resolution first."""
        maps = []
        for layer in self.layers:
            x = layer(x)
            maps.append(x)
        return maps[::-1]


class FusionLayer(nn.Module):
    """concat(resize(x), resize(B(m)), B(x)): a dense layer that also reads a lower-flow map m."""

    def __init__(self, cin: int, cin_lower: int, growth: int, down: bool, cfg: RANetConfig, k: int):
        super().__init__()
        lower_growth = math.floor(growth * cfg.compress_factor)
        self.own = BottleneckConv(cin, growth - lower_growth, down, cfg.bnFactor[k], cfg.bottleneck)
        self.lower = BottleneckConv(cin_lower, lower_growth, False, cfg.bnFactor[k - 1], cfg.bottleneck)
        self.resize = Resize()

    def forward(self, x: Tensor, lower: Tensor) -> Tensor:
        own = self.own(x)
        size = own.shape[-2:]
        return torch.cat([self.resize(x, size), self.resize(self.lower(lower), size), own], 1)


class NormalBlock(nn.Module):
    """L one-scale dense units, then an optional transition."""

    def __init__(
        self, widths: list[int], growth: int, cfg: RANetConfig, k: int, transition: nn.Module | None
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseUnit(w, growth, cfg.bnFactor[k], cfg.bottleneck) for w in widths[:-1]
        )
        self.transition = transition

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(block output, per-layer maps: the input then every layer's output)."""
        maps = [x]
        for layer in self.layers:
            maps.append(layer(maps[-1]))
        return _transition(self.transition, maps[-1]), maps


class FusionBlock(nn.Module):
    """L fusion layers reading the lower block's maps, a closing 1x1 on its last map, transition."""

    def __init__(
        self,
        widths: list[int],
        lower_widths: list[int],
        growth: int,
        down: bool,
        cfg: RANetConfig,
        k: int,
        transition: nn.Module | None,
    ):
        super().__init__()
        last = len(widths) - 2
        self.layers = nn.ModuleList(
            FusionLayer(w, w_lower, growth, down and i == last, cfg, k)
            for i, (w, w_lower) in enumerate(zip(widths[:-1], lower_widths))
        )
        self.closing = ConvBNReLU(lower_widths[-1], closing_width(widths[-1], cfg), 1, 1, 0)
        self.resize = Resize()
        self.transition = transition

    def forward(self, x: Tensor, lower_maps: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """(block output, per-layer maps taken before the closing channels are added)."""
        maps = [x]
        for layer, lower in zip(self.layers, lower_maps):
            maps.append(layer(maps[-1], lower))
        last = maps[-1]
        closing = self.resize(self.closing(lower_maps[-1]), last.shape[-2:])
        return _transition(self.transition, torch.cat([last, closing], 1)), maps


def _transition(transition: nn.Module | None, x: Tensor) -> Tensor:
    return x if transition is None else transition(x)


def closing_width(width: int, cfg: RANetConfig) -> int:
    """Channels the closing 1x1 of a fusion block adds to its last map's `width`."""
    return math.floor(width * cfg.compress_factor)


def build_flow(
    cfg: RANetConfig, k: int, lower_widths: list[list[int]]
) -> tuple[list[nn.Module], list[list[int]], list[int]]:
    """Blocks of flow k, the per-layer map widths of each, and each block's output width."""
    growth = cfg.growthRate * cfg.grFactor[k]
    width = cfg.nChannels * cfg.grFactor[k]
    blocks, map_widths, out_widths = [], [], []
    for j in range(1, cfg.flow_blocks(k) + 1):
        widths = [width + i * growth for i in range(cfg.block_layers(j) + 1)]
        fusion = j <= cfg.fusion_blocks(k)
        width = widths[-1] + (closing_width(widths[-1], cfg) if fusion else 0)
        transition = None
        if cfg.has_transition(k, j):
            reduced = math.floor(cfg.reduction * width)
            transition = ConvBNReLU(width, reduced, 1, 1, 0)
            width = reduced
        if fusion:
            blocks.append(
                FusionBlock(widths, lower_widths[j - 1], growth, cfg.is_down_block(k, j), cfg, k, transition)
            )
        else:
            blocks.append(NormalBlock(widths, growth, cfg, k, transition))
        map_widths.append(widths)
        out_widths.append(width)
    return blocks, map_widths, out_widths


def init_ranet_weights(module: nn.Module) -> None:
    """RANet's initialiser: conv N(0, sqrt(2/(k*k*out))), BN 1/0, linear bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class Stage:
    """What stage n runs: flow `flow`, its blocks `blocks` (0-based), the last one normal."""

    flow: int
    blocks: tuple[int, ...]


def build_stages(cfg: RANetConfig) -> list[Stage]:
    """One stage per exit: each normal block, with its flow's fusion blocks before the first."""
    stages = []
    for k in range(cfg.num_flows):
        first = cfg.fusion_blocks(k)
        stages.append(Stage(k, tuple(range(first + 1))))
        stages.extend(Stage(k, (j,)) for j in range(first + 1, cfg.flow_blocks(k)))
    return stages


class RANet(MultiExitNetwork):
    """Resolution-adaptive network; features are a dict of tensors (see `RANetFeatures`)."""

    def __init__(self, cfg: RANetConfig):
        super().__init__()
        self.cfg = cfg
        self.stem_layer = RANetStem(cfg)
        flows, heads, lower_widths = [], [], []
        for k in range(cfg.num_flows):
            blocks, lower_widths, out_widths = build_flow(cfg, k, lower_widths)
            flows.append(nn.ModuleList(blocks))
            heads.extend(
                ExitHead(w, cfg.num_classes, cfg.imagenet) for w in out_widths[cfg.fusion_blocks(k) :]
            )
        self.flows = nn.ModuleList(flows)
        self.heads = nn.ModuleList(heads)
        self.stages = build_stages(cfg)
        self.num_exits = len(self.stages)
        init_ranet_weights(self.flows)
        init_ranet_weights(self.heads)

    def stem(self, x: Tensor) -> RANetFeatures:
        first, *pending = self.stem_layer(x)
        return {"x": first, "maps": [], "pending": pending}

    def advance(self, n: int, features: RANetFeatures) -> RANetFeatures:
        stage = self.stages[n]
        x, maps, pending = features["x"], features["maps"], features["pending"]
        lower_maps: list[list[Tensor]] = []
        if n > 0 and stage.flow != self.stages[n - 1].flow:
            lower_maps, maps = maps, []
            x, *pending = pending
        keep_maps = stage.flow + 1 < self.cfg.num_flows
        for j in stage.blocks:
            block = self.flows[stage.flow][j]
            if isinstance(block, FusionBlock):
                x, block_maps = block(x, lower_maps[j])
            else:
                x, block_maps = block(x)
            if keep_maps:
                maps = maps + [block_maps]
        return {"x": x, "maps": maps, "pending": pending}

    def classify(self, n: int, features: RANetFeatures) -> Tensor:
        return self.heads[n](features["x"])

    def stage_modules(self, n: int) -> list[nn.Module]:
        stage = self.stages[n]
        modules = [self.flows[stage.flow][j] for j in stage.blocks] + [self.heads[n]]
        return [self.stem_layer] + modules if n == 0 else modules


FLAGS = dense_flags(
    "blocks of the lowest-resolution flow",
    "even: every later block has --step layers; lin_grow: block i has step*i layers",
    "per-scale width factors, e.g. 4-2-1-1 (None: 4-2-1-1, on ImageNet-style inputs 4-2-2-1)",
) + (
    Flag(("--block-step",), "extra blocks per flow", RANetConfig.block_step, int, range=COUNT),
    Flag(
        ("--scale-list",),
        "resolution level of each flow, lowest first (None: 1-2-3-3, on ImageNet-style inputs 1-2-3-4)",
        None,
        int_list,
        range=COUNT,
    ),
    Flag(
        ("--compress-factor",),
        "share of a fusion layer's growth taken from the lower flow",
        RANetConfig.compress_factor,
        float,
        range=Range(lambda v: 0 < v < 1, "in (0, 1)"),
    ),
)


def configure(values: dict[str, Any], inputs: InputSpec) -> RANetConfig:
    """The config the flag values describe for `inputs`; refuses flows and heads that would not fit."""
    growth, bottleneck = width_factors(values, GR_FACTOR[inputs.imagenet_style])
    scales = tuple(values["scale_list"] or SCALE_LIST[inputs.imagenet_style])
    if len(scales) != len(growth):
        raise ConfigError(
            f"--scale-list has {len(scales)} values but --grFactor has {len(growth)}; give one per flow"
        )
    if scales[0] != 1 or any(b - a not in (0, 1) for a, b in zip(scales, scales[1:])):
        raise ConfigError(
            f"--scale-list must start at 1 and rise by at most 1 per flow, got {'-'.join(map(str, scales))}"
        )
    fusing, growth_rate, compress = growth[1:], values["growthRate"], values["compress_factor"]
    if fusing and math.floor(min(fusing) * growth_rate * compress) < 1:  # flow 0 fuses nothing
        raise ConfigError(
            f"--growthRate {growth_rate} x --grFactor {min(fusing)} x "
            f"--compress-factor {compress} leaves a fusion layer no channels; "
            f"raise --growthRate or --compress-factor (below 1)"
        )
    check_head_maps(inputs, scales[-1], "--scale-list")
    return RANetConfig(
        **dense_fields(values, inputs),
        block_step=values["block_step"],
        grFactor=growth,
        bnFactor=bottleneck,
        scale_list=scales,
        compress_factor=compress,
    )


register_backbone(
    Backbone("ranet", "RANet", FLAGS, configure, RANet, msdnet_convention, per_exit_weight_decay=False)
)
