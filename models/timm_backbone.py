"""`--arch timm:NAME`: any timm CNN or vision transformer as a multi-exit network (docs/architectures.md).

The timm model is built without its classifier and cut into *units*, the places an exit may
sit: the stages of a CNN (timm's `feature_info` past the stride-2 stem: ResNet, ConvNeXt,
EfficientNet, MobileNet, RegNet, ...), the blocks of a ViT/DeiT, the stages (`layers`) of a
Swin. Exit n runs the units after exit n-1 up to its own, so real early exit stops computing
for samples that have left. What follows the last unit in the model's own `forward_features`
(a final norm, EfficientNet's head conv) runs before the last exit when that exit sits after
the last unit. Heads: pooled features + linear for CNNs; norm + token pooling (the class
token, or the mean of the patch tokens under `--model-kwargs global_pool=avg`) + linear for
transformers. timm is imported only when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from utils.errors import UserError
from utils.flags import COUNT, Flag, Kind, comma_int_list, key_value, literal_kwargs

from .costs import counted_operations
from .multi_exit import MultiExitNetwork
from .registry import Backbone, ConfigError, InputSpec, register_backbone

TRANSFORMER_EXITS = 4  # default exits of a ViT: evenly spaced blocks
HEAD_NAMES = ("global_pool", "head", "fc", "classifier", "head_drop", "flatten")  # where features end
STEM_REDUCTION = 2  # feature_info entries this shallow belong to the stem, not a stage


@dataclass(frozen=True)
class TimmConfig:
    """The timm model and its options, the units that carry an exit (0-based), the classes,
    the input channels, and the fine-tuning choices."""

    model: str
    model_kwargs: tuple[tuple[str, Any], ...]
    exits: tuple[int, ...]
    num_classes: int
    channels: int
    pretrained: Optional[str] = None
    freeze_backbone: bool = False

    @property
    def num_exits(self) -> int:
        return len(self.exits)


@dataclass
class Layout:
    """How a timm model runs unit by unit: `stem` steps before unit 0, the `units`, the
    `trailing` steps after the last unit, the features' `kind` ('map' NCHW, 'tokens' BNC,
    'grid' BHWC), their widths per unit, and the prefix (class) tokens of a ViT."""

    stem: list[Callable[[Tensor], Tensor]]
    units: list[nn.Module]
    trailing: list[Callable[[Tensor], Tensor]]
    kind: str
    widths: list[int]
    prefix_tokens: int = 0


def create_body(cfg: TimmConfig, num_classes: int = 0) -> nn.Module:
    """The timm model reading `cfg.channels` channels: without classifier (the backbone), or
    with its own for `num_classes` (the no-exit baseline scripts/benchmark.py times)."""
    import timm

    return timm.create_model(
        cfg.model, pretrained=False, num_classes=num_classes, in_chans=cfg.channels, **dict(cfg.model_kwargs)
    )


def cnn_layout(body: nn.Module) -> Layout:
    """Stages from `feature_info`: the top-level children run in order (a Sequential holding
    stages is opened one level), cut after each stage module, ending where pooling starts."""
    stages = [info for info in body.feature_info if info["reduction"] > STEM_REDUCTION]
    names = {info["module"] for info in stages}
    steps: list[tuple[str, nn.Module]] = []
    for name, child in body.named_children():
        if name in HEAD_NAMES:
            break
        opened = isinstance(child, nn.Sequential) and any(n.startswith(name + ".") for n in names)
        steps += [(f"{name}.{sub}", m) for sub, m in child.named_children()] if opened else [(name, child)]
    cuts = [i for i, (name, _) in enumerate(steps) if name in names]
    starts = [0] + [cut + 1 for cut in cuts[:-1]]
    units = [nn.Sequential(*(m for _, m in steps[a : b + 1])) for a, b in zip(starts, cuts)]
    trailing = [m for _, m in steps[cuts[-1] + 1 :]]
    widths = [info["num_chs"] for info in stages]
    widths[-1] = getattr(body, "num_features", widths[-1]) if trailing else widths[-1]
    return Layout([], units, trailing, "map", widths)


def vit_layout(body: nn.Module) -> Layout:
    """ViT/DeiT: patch embedding, position embedding and pre-norm, then one unit per block."""
    stem = [body.patch_embed, body._pos_embed, body.patch_drop, body.norm_pre]
    width = body.embed_dim
    return Layout(
        stem, list(body.blocks), [body.norm], "tokens", [width] * len(body.blocks), body.num_prefix_tokens
    )


def swin_layout(body: nn.Module) -> Layout:
    """Swin: patch embedding, then one unit per stage (`layers`), channels-last grids."""
    widths = [info["num_chs"] for info in body.feature_info]
    return Layout([body.patch_embed], list(body.layers), [body.norm], "grid", widths)


def layout_of(body: nn.Module, model: str) -> Layout:
    """The family adapter that fits `body` (a ConfigError when none does)."""
    if hasattr(body, "patch_embed") and hasattr(body, "blocks") and hasattr(body, "_pos_embed"):
        return vit_layout(body)
    if hasattr(body, "patch_embed") and hasattr(body, "layers"):
        return swin_layout(body)
    if getattr(body, "feature_info", None):
        return cnn_layout(body)
    raise ConfigError(f"--arch timm:{model}: no stage layout known for this timm model")


class ExitHead(nn.Module):
    """Norm (transformers), pooling to one vector per sample, linear classifier."""

    def __init__(self, kind: str, width: int, num_classes: int, pool: str, prefix_tokens: int):
        super().__init__()
        self.kind, self.pool, self.prefix_tokens = kind, pool, prefix_tokens
        self.norm = nn.Identity() if kind == "map" else nn.LayerNorm(width)
        self.linear = nn.Linear(width, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        x = self.norm(features)
        if self.kind == "map":
            pooled = x.mean(dim=(2, 3))
        elif self.kind == "grid":
            pooled = x.mean(dim=(1, 2))
        elif self.pool == "avg":
            pooled = x[:, self.prefix_tokens :].mean(dim=1)
        else:
            pooled = x[:, 0]
        return self.linear(pooled)


class TimmMultiExit(MultiExitNetwork):
    """A timm model (`body`, keys as timm writes them) run unit by unit, with an exit head
    after each chosen unit. With `freeze_backbone` the body's parameters take no gradient and
    the body stays in eval mode (BatchNorm statistics and dropout fixed), the heads train."""

    def __init__(self, cfg: TimmConfig):
        super().__init__()
        self.num_exits, self.exits, self.frozen = cfg.num_exits, cfg.exits, cfg.freeze_backbone
        self.body = create_body(cfg)
        self.layout = layout_of(self.body, cfg.model)
        pool = getattr(self.body, "global_pool", "token")
        self.heads = nn.ModuleList(
            ExitHead(
                self.layout.kind, self.layout.widths[unit], cfg.num_classes, pool, self.layout.prefix_tokens
            )
            for unit in cfg.exits
        )
        if self.frozen:
            self.body.requires_grad_(False)

    def __setattr__(self, name: str, value: Any) -> None:
        """The layout holds references into `body`; kept out of the module tree so every
        parameter has one name (the one timm gives it)."""
        if isinstance(value, Layout):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def train(self, mode: bool = True) -> "TimmMultiExit":
        """As nn.Module's, except that a frozen body stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.body.eval()
        return self

    def _units(self, n: int) -> range:
        """The units stage n runs: those after exit n-1's, up to its own."""
        return range(self.exits[n - 1] + 1 if n else 0, self.exits[n] + 1)

    def stem(self, x: Tensor) -> Tensor:
        for step in self.layout.stem:
            x = step(x)
        return x

    def advance(self, n: int, features: Tensor) -> Tensor:
        """Stage n's units, and what follows the last unit when exit n sits after it."""
        for unit in self._units(n):
            features = self.layout.units[unit](features)
        if self.exits[n] == len(self.layout.units) - 1:
            for step in self.layout.trailing:
                features = step(features)
        return features

    def classify(self, n: int, features: Tensor) -> Tensor:
        return self.heads[n](features)

    def stage_modules(self, n: int) -> list[nn.Module]:
        stem = [m for m in self.layout.stem if isinstance(m, nn.Module)] if n == 0 else []
        last = n == self.num_exits - 1
        trailing = [m for m in self.layout.trailing if isinstance(m, nn.Module)] if last else []
        return stem + [self.layout.units[u] for u in self._units(n)] + trailing + [self.heads[n]]


def exit_units(values: dict[str, Any], layout: Layout, model: str) -> tuple[int, ...]:
    """The 0-based units carrying exits: `--exit-after` (1-based), else `--num-exits` evenly
    spaced ending at the last unit (default: every stage of a CNN or Swin, 4 blocks of a ViT)."""
    units = len(layout.units)
    chosen = values["exit_after"]
    if chosen:
        if any(b <= a for a, b in zip(chosen, chosen[1:])) or not 1 <= chosen[0] <= chosen[-1] <= units:
            raise ConfigError(f"--exit-after must rise within 1..{units} for timm:{model}, got {chosen}")
        return tuple(u - 1 for u in chosen)
    default = min(TRANSFORMER_EXITS, units) if layout.kind == "tokens" else units
    count = values["num_exits"] or default
    if count > units:
        raise ConfigError(f"--num-exits {count}: timm:{model} has {units} places for an exit")
    return tuple(-(-(k + 1) * units // count) - 1 for k in range(count))


def probed_exits(values: dict[str, Any], inputs: InputSpec, probe: TimmConfig) -> tuple[int, ...]:
    """Build the model once and run one image through it: kwargs timm refuses, an image size
    the model cannot read and impossible exit places are one line here, before any work."""
    try:
        body = create_body(probe).eval()
        exits = exit_units(values, layout_of(body, probe.model), probe.model)
        with torch.no_grad():
            body(torch.zeros(1, inputs.channels, inputs.image_size, inputs.image_size))
    except ConfigError:
        raise
    except (TypeError, ValueError, AssertionError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"--arch timm:{probe.model} --model-kwargs: cannot build it for {inputs.image_size}px: {reason}"
        ) from None
    return exits


def configure(values: dict[str, Any], inputs: InputSpec, model: str) -> TimmConfig:
    """The typed config of timm:`model`; an unknown model, bad kwargs or exit places: one line."""
    import timm

    if not timm.is_model(model):
        raise ConfigError(f"--arch timm:{model}: timm has no such model (see timm.list_models())")
    kwargs = tuple(literal_kwargs(values["model_kwargs"] or ()).items())
    probe = TimmConfig(model, kwargs, (), inputs.num_classes, inputs.channels)
    return TimmConfig(
        model,
        kwargs,
        probed_exits(values, inputs, probe),
        inputs.num_classes,
        inputs.channels,
        values["pretrained"],
        values["freeze_backbone"],
    )


def read_state(path: Path) -> dict[str, Tensor]:
    """A state dict from a .safetensors or .pth file (weights only; `state_dict`/`model`
    wrappers and DDP's `module.` prefix removed); missing or unreadable: one line naming it."""
    if not path.is_file():
        raise UserError(f"--pretrained: no file {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader's failure is the same one line for the user
        raise UserError(
            f"--pretrained: cannot read {path}: {str(error).splitlines()[0] if str(error) else error!r}"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"--pretrained: {path} holds no state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_pretrained(network: TimmMultiExit, config: TimmConfig) -> None:
    """Load `--pretrained` into the backbone; the file's classifier is dropped, heads stay
    fresh; the first tensor that does not fit (missing, extra or of another shape): one line."""
    if config.pretrained is None:
        return
    path = Path(config.pretrained)
    state = read_state(path)
    own = network.body.state_dict()
    classifier = (
        network.body.pretrained_cfg.get("classifier", "head") if network.body.pretrained_cfg else "head"
    )
    prefixes = tuple(f"{name}." for name in (classifier, *HEAD_NAMES))
    state = {k: v for k, v in state.items() if k in own or not k.startswith(prefixes)}
    for key, value in state.items():
        if key not in own:
            raise UserError(f"--pretrained: {path}: tensor {key} has no place in timm:{config.model}")
        if value.shape != own[key].shape:
            raise UserError(
                f"--pretrained: {path}: tensor {key} has shape {tuple(value.shape)}, "
                f"the model's {tuple(own[key].shape)}"
            )
    missing = [key for key in own if key not in state]
    if missing:
        raise UserError(f"--pretrained: {path} lacks tensor {missing[0]} of timm:{config.model}")
    network.body.load_state_dict(state)


FLAGS = (
    Flag(
        ("--num-exits",),
        "exits, evenly spaced ending at the last stage/block (default: one per stage "
        "of a CNN or Swin, 4 blocks of a ViT)",
        None,
        int,
        range=COUNT,
    ),
    Flag(
        ("--exit-after",),
        "the stages (CNN, Swin) or blocks (ViT) an exit follows, 1-based, comma-separated "
        "(instead of --num-exits)",
        None,
        comma_int_list,
        range=COUNT,
        metavar="I,J,K",
    ),
    Flag(
        ("--model-kwargs",),
        "timm model options as key=value words (literal values, e.g. img_size=32 "
        "patch_size=4 global_pool=avg)",
        (),
        key_value,
        kind=Kind.LIST,
        metavar="KEY=VALUE",
    ),
    Flag(
        ("--pretrained",),
        "backbone weights (.pth or .safetensors state dict, as timm or torchvision "
        "write them) loaded at a fresh start; the heads start fresh",
        None,
        str,
        metavar="FILE",
    ),
    Flag(
        ("--freeze-backbone",),
        "train the exit heads only: backbone parameters frozen, backbone in eval mode",
        False,
        kind=Kind.SWITCH,
    ),
)

register_backbone(
    Backbone(
        "timm:",
        "a timm model, CNN or vision transformer, cut into stages/blocks with an exit after chosen ones",
        FLAGS,
        configure,
        TimmMultiExit,
        counted_operations,
        family=True,
        initialise=load_pretrained,
    )
)
