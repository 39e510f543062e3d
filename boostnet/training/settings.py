"""What a training run is told: its model, data, schedule, speed options and run directory.

Torch-free dataclasses that args.py fills from the command line (once, at the entry point);
the engine and everything below it read these, never the flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

from boostnet.data.datasets import DataSettings
from boostnet.runs.settings import RunSettings
from boostnet.runtime import Runtime
from models.objectives import ObjectiveConfig
from models.registry import ModelSpec


@dataclass(frozen=True)
class EpochFractions:
    """A step schedule at fixed fractions of the epochs (the default of `--lr_milestones`), so a
    short run decays too. Milestone i is int(fractions[i] * epochs), rounded down (exact: the
    fractions are rational); one that rounds to 0 or onto the previous one is dropped."""

    fractions: tuple[Fraction, ...]

    def milestones(self, epochs: int) -> list[int]:
        """The milestones of an `epochs`-epoch run: rising, each at least 1."""
        result: list[int] = []
        for fraction in self.fractions:
            epoch = math.floor(fraction * epochs)
            if epoch >= 1 and (not result or epoch > result[-1]):
                result.append(epoch)
        return result

    def __str__(self) -> str:
        """'50%, 75% of --epochs' (a fraction with no whole percentage reads '1/3')."""
        shares = [
            f"{fraction * 100}%" if (fraction * 100).denominator == 1 else str(fraction)
            for fraction in self.fractions
        ]
        return f"{', '.join(shares)} of --epochs"


OPTIMIZERS = ("sgd", "adamw")  # --opt, as timm's train.py spells them
SCHEDULES = ("multistep", "cosine")  # --sched
EMA_DECAY = 0.9998  # timm's default --model-ema-decay


@dataclass(frozen=True)
class TrainSettings:
    """The optimisation: epochs, batch, optimiser and schedule, weight EMA, seed, validation split.

    The defaults are the paper's recipe (SGD, steps at `lr_milestones`); `opt`, `sched`,
    `warmup_epochs` and `model_ema` are the fine-tuning knobs, named as timm's train.py names
    them (docs/fine-tuning.md).
    """

    epochs: int = 300
    batch_size: int = 64
    lr: float = 0.1
    lr_milestones: tuple[int, ...] = (150, 225)
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: tuple[float, ...] = (1e-4,)
    seed: int = 0
    use_valid: bool = False
    init_from: Optional[Path] = None
    log_interval: int = 50
    max_steps_per_epoch: Optional[int] = None
    deterministic: bool = False
    schedule_note: Optional[str] = None  # how a default --lr_milestones was derived, for the log
    opt: str = "sgd"  # or "adamw"
    sched: str = "multistep"  # or "cosine"
    warmup_epochs: int = 0
    model_ema: bool = False
    model_ema_decay: float = EMA_DECAY


@dataclass(frozen=True)
class SpeedSettings:
    """How fast the step runs: autocast, memory format, compile / CUDA graph, data on the GPU."""

    amp: Optional[str] = None
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool = False
    gpu_data: Optional[bool] = None


@dataclass(frozen=True)
class TrainingJob:
    """One training run, as the command line (or a recipe, or a resumed run) describes it.

    `record` is the flat flag record config.json keeps, from which the run is evaluated and
    resumed.
    """

    model: ModelSpec
    objective: ObjectiveConfig
    data: DataSettings
    train: TrainSettings
    run: RunSettings
    speed: SpeedSettings = SpeedSettings()
    runtime: Runtime = Runtime()
    record: dict[str, Any] = field(default_factory=dict)
