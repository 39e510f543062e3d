"""The training objectives by name (`--loss`): how exits combine and what each is trained on.

An :class:`Objective` entry gives the network whose exits predict (`network`: the backbone
read as an ensemble, :class:`models.boosting.BoostedNetwork`) and the module that turns its
training-time outputs into losses (`loss`). `boost` is BoostNet's additive ensemble
F_n = f_n + r_n F_{n-1}; `joint` is the original MSDNet/RANet objective, independent exits f_n
(docs/method.md). A new objective is one :func:`register_objective` call (docs/extending.md).

Torch-free, so the parsers list the objectives at once: the entries' functions import the
torch code when they are called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from models.registry import ConfigError
from utils.flags import Flag, Kind, Range, at_least, float_list

if TYPE_CHECKING:
    from torch import nn

    from models.boosting import BoostedNetwork


@dataclass(frozen=True)
class ObjectiveConfig:
    """`--loss`, `--ensemble_reweight` (r of F_n), `--loss_equal` and `--smoothing` (label
    smoothing eps of every exit's cross-entropy; 0, the paper's, is plain cross-entropy)."""

    name: str = "boost"
    reweight: tuple[float, ...] = (0.5,)
    loss_equal: bool = False
    smoothing: float = 0.0

    def check(self, num_exits: int) -> None:
        """Refuse a reweighting that does not fit `num_exits` exits."""
        if len(self.reweight) not in (1, 2, num_exits):
            raise ConfigError(
                f"--ensemble_reweight has {len(self.reweight)} values; give 1, 2 "
                f"or {num_exits} (the number of exits)"
            )

    def network(self, backbone: "nn.Module", num_exits: int) -> "BoostedNetwork":
        """`backbone` read as this objective's ensemble of `num_exits` exits."""
        return objective(self.name).network(backbone, self, num_exits)

    def loss(self, num_exits: int) -> "nn.Module":
        """The module that turns the network's training outputs into this objective's losses."""
        return objective(self.name).loss(self, num_exits)


@dataclass(frozen=True)
class Objective:
    """One `--loss` choice: `network(backbone, config, num_exits)` and `loss(config, num_exits)`."""

    name: str
    description: str
    network: Callable[["nn.Module", ObjectiveConfig, int], "BoostedNetwork"]
    loss: Callable[[ObjectiveConfig, int], "nn.Module"]


def boosted_network(backbone: "nn.Module", config: ObjectiveConfig, num_exits: int) -> "BoostedNetwork":
    """BoostNet: exit n predicts F_n = f_n + r_n F_{n-1}."""
    from models.boosting import BoostedNetwork, reweight_factors

    return BoostedNetwork(backbone, reweight_factors(config.reweight, num_exits))


def independent_exits(backbone: "nn.Module", config: ObjectiveConfig, num_exits: int) -> "BoostedNetwork":
    """Every exit predicts its own logits f_n."""
    from models.boosting import BoostedNetwork

    return BoostedNetwork(backbone, None)


def exit_losses(config: ObjectiveConfig, num_exits: int) -> "nn.Module":
    """Per-exit cross-entropy (label-smoothed with `--smoothing`), summed (equalised with
    `--loss_equal`)."""
    from models.boosting import ExitObjective

    return ExitObjective(num_exits, loss_equal=config.loss_equal, smoothing=config.smoothing)


OBJECTIVES: dict[str, Objective] = {}  # the registry, filled below and by register_objective


def register_objective(entry: Objective) -> Objective:
    """Add `entry` under its name (a second entry of the same name is a programming error)."""
    if entry.name in OBJECTIVES and OBJECTIVES[entry.name] is not entry:
        raise ValueError(f"an objective named {entry.name!r} is already registered")
    OBJECTIVES[entry.name] = entry
    return entry


def objective(name: str) -> Objective:
    """The entry `--loss name` selects; an unknown name lists the known ones."""
    if name not in OBJECTIVES:
        raise ConfigError(
            f"--loss {name!r} is no registered objective; choose one of {', '.join(sorted(OBJECTIVES))}"
        )
    return OBJECTIVES[name]


register_objective(Objective("boost", "BoostNet's additive ensemble F_n", boosted_network, exit_losses))
register_objective(
    Objective(
        "joint", "the original MSDNet/RANet objective, independent exits f_n", independent_exits, exit_losses
    )
)

DEFAULT = ObjectiveConfig()


def objective_flags() -> tuple[Flag, ...]:
    """`--loss` (choices: the objectives registered now), `--ensemble_reweight`, `--loss_equal`,
    `--smoothing`."""
    described = "; ".join(f"{entry.name}: {entry.description}" for entry in OBJECTIVES.values())
    return (
        Flag(("--loss",), f"the training objective ({described})", DEFAULT.name, choices=tuple(OBJECTIVES)),
        Flag(
            ("--ensemble_reweight",),
            "prediction reweighting r of F_n = f_n + r_n F_{n-1}: 1 "
            "value, 2 (linearly spaced over the exits) or one per exit (the original code's "
            "default is 1.0)",
            list(DEFAULT.reweight),
            float_list,
            range=at_least(0),
        ),
        Flag(
            ("--loss_equal",),
            "weight the exit losses by their running averages (docs/method.md)",
            DEFAULT.loss_equal,
            kind=Kind.SWITCH,
        ),
        Flag(
            ("--smoothing",),
            "label smoothing eps of every exit's training cross-entropy: the target is 1 - eps on "
            "the label plus eps/K on each of the K classes (timm's --smoothing; 0: plain cross-entropy)",
            DEFAULT.smoothing,
            float,
            metavar="EPS",
            range=Range(lambda v: 0 <= v < 1, "in [0, 1)"),
        ),
    )


def objective_config(values: dict) -> ObjectiveConfig:
    """The config of :func:`objective_flags`' values (by key); an unknown `--loss` is refused."""
    objective(values["loss"])
    return ObjectiveConfig(
        values["loss"], tuple(values["ensemble_reweight"]), values["loss_equal"], values["smoothing"]
    )
