"""The backbones by name: each registers itself in its own file (docs/extending.md).

A :class:`Backbone` entry holds what the rest of the project needs to know about one network
family: its flags, how they become its typed config (`configure`, which refuses a combination
it cannot build with a :class:`ConfigError` naming the flag), how the config becomes the
network, how its per-exit cost is counted, and how its weight decay is grouped. `--arch NAME`
looks the entry up with :func:`backbone`; every module of this package is imported on the first
lookup, so a new backbone is one new file that calls :func:`register_backbone`. A *family* entry
(`family=True`, its name a prefix ending in ':', e.g. 'timm:') claims every name under that prefix:
`--arch timm:resnet18` is the family's entry, renamed, whose `configure` receives 'resnet18'.

Torch-free, like the flag declarations, so the parsers can name the backbones quickly; the
backbone modules themselves import torch.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Optional

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
    groups or the family trains with one group. A `family` entry's configure takes the model
    name after its prefix as keyword `model` (see the module docstring). `initialise(network,
    config)`, when given, runs once on a fresh training start (never on resume or evaluation):
    weights from a file the config names, for example.
    """

    name: str
    description: str
    flags: tuple[Flag, ...]
    configure: Callable[[dict[str, Any], InputSpec], Any]
    build: Callable[[Any], "MultiExitNetwork"]
    cost: Callable[["nn.Module", InputSpec], "ExitCosts"]
    per_exit_weight_decay: bool = True
    family: bool = False
    initialise: Optional[Callable[["MultiExitNetwork", Any], None]] = None


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

    def initialise(self, network: "MultiExitNetwork") -> None:
        """The fresh-start initialisation the backbone asks for (none for most)."""
        if self.backbone.initialise is not None:
            self.backbone.initialise(network, self.config)


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
    """The entry `--arch name` selects (a family's bare prefix gives the family entry, for its
    flags); an unknown name is a ConfigError listing the known ones."""
    discover()
    if name in _BACKBONES:
        return _BACKBONES[name]
    prefix, colon, model = name.partition(":")
    family = _BACKBONES.get(prefix + colon)
    if not (colon and model and family is not None and family.family):
        known = [f"{known}NAME" if _BACKBONES[known].family else known for known in backbone_names()]
        raise ConfigError(f"--arch {name!r} is no registered backbone; choose one of {', '.join(known)}")
    return replace(
        family, name=name, family=False, configure=functools.partial(family.configure, model=model)
    )


def create_model(arch: str, inputs: InputSpec, **values: Any) -> ModelSpec:
    """The spec of backbone `arch` for `inputs`: its flags' defaults, overridden by `values`
    (by flag key, e.g. nBlocks=5). A network without a command line: `create_model(...).build()`."""
    entry = backbone(arch)
    if entry.family:
        raise ConfigError(f"--arch {arch} needs a model name after the prefix, e.g. {arch}resnet18")
    defaults = {flag.key: flag.default for flag in entry.flags}
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ConfigError(
            f"{arch} has no setting {', '.join(unknown)}; its settings are {', '.join(sorted(defaults))}"
        )
    return ModelSpec(arch, entry.configure({**defaults, **values}, inputs), inputs)
