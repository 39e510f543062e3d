"""The backbones by name: each registers itself in its own file (docs/extending.md).

A :class:`Backbone` entry holds what the rest of the project needs to know about one network
family: its flags, how they become its typed config (`configure`, which refuses a combination
it cannot build with a :class:`ConfigError` naming the flag), how the config becomes the
network, how its per-exit cost is counted, and how its weight decay is grouped. `--arch NAME`
looks the entry up with :func:`backbone`; every module of this package is imported on the first
lookup, so a new backbone is one new file that calls :func:`register_backbone`.

Torch-free, like the flag declarations, so the parsers can name the backbones quickly; the
backbone modules themselves import torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from utils.flags import Flag, FlagError

if TYPE_CHECKING:
    from torch import nn

    from models.costs import ExitCosts
    from models.multi_exit import MultiExitNetwork

IMAGENET_STYLE_MIN_SIZE = 96  # inputs this large get the ImageNet-style stem and exit heads


class ConfigError(FlagError):
    """Flags a model cannot be built from; the message names the flag and what would fit."""


@dataclass(frozen=True)
class InputSpec:
    """What a network reads and predicts: square images of `image_size`, `num_classes` classes."""

    image_size: int
    num_classes: int
    channels: int = 3

    @property
    def imagenet_style(self) -> bool:
        """Large inputs: the ImageNet-style stem (7x7 stride-2 conv, max-pool) and heads."""
        return self.image_size >= IMAGENET_STYLE_MIN_SIZE


@dataclass(frozen=True)
class Backbone:
    """One registered network family (see the module docstring).

    `configure(values, inputs)` gets the values of `flags` by key; `cost(network, inputs)`
    counts cumulative per-exit multiply-adds by the family's convention (docs/costs.md);
    `per_exit_weight_decay` says whether `--weight-decay a,b` may spread over the exits' parameter
    groups or the family trains with one group.
    """

    name: str
    description: str
    flags: tuple[Flag, ...]
    configure: Callable[[dict[str, Any], InputSpec], Any]
    build: Callable[[Any], "MultiExitNetwork"]
    cost: Callable[["nn.Module", InputSpec], "ExitCosts"]
    per_exit_weight_decay: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """A backbone, its typed config and its inputs: everything needed to build the network."""

    arch: str
    config: Any
    inputs: InputSpec

    @property
    def backbone(self) -> Backbone:
        return backbone(self.arch)

    @property
    def num_exits(self) -> int:
        return self.config.num_exits

    def build(self) -> "MultiExitNetwork":
        """The network, freshly initialised (seed torch first for reproducible weights)."""
        return self.backbone.build(self.config)


_BACKBONES: dict[str, Backbone] = {}  # the registry: filled by the backbone modules as they load


def register_backbone(entry: Backbone) -> Backbone:
    """Add `entry` under its name (a second entry of the same name is a programming error)."""
    if entry.name in _BACKBONES and _BACKBONES[entry.name] is not entry:
        raise ValueError(f"a backbone named {entry.name!r} is already registered")
    _BACKBONES[entry.name] = entry
    return entry


def discover() -> None:
    """Import every module of this package (Python imports each once), so each backbone has
    registered itself."""
    package = importlib.import_module("models")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"models.{module.name}")


def backbone_names() -> list[str]:
    """Every registered backbone name, sorted."""
    discover()
    return sorted(_BACKBONES)


def backbone(name: str) -> Backbone:
    """The entry `--arch name` selects; an unknown name is a ConfigError listing the known ones."""
    discover()
    if name not in _BACKBONES:
        raise ConfigError(
            f"--arch {name!r} is no registered backbone; choose one of {', '.join(backbone_names())}"
        )
    return _BACKBONES[name]


def create_model(arch: str, inputs: InputSpec, **values: Any) -> ModelSpec:
    """The spec of backbone `arch` for `inputs`: its flags' defaults, overridden by `values`
    (by flag key, e.g. nBlocks=5). A network without a command line: `create_model(...).build()`."""
    entry = backbone(arch)
    defaults = {flag.key: flag.default for flag in entry.flags}
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ConfigError(
            f"{arch} has no setting {', '.join(unknown)}; its settings are {', '.join(sorted(defaults))}"
        )
    return ModelSpec(arch, entry.configure({**defaults, **values}, inputs), inputs)
