"""What an evaluation is told: the run and checkpoint, the modes, the budget, the outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from boostnet.data.datasets import DataSettings
from boostnet.runtime import Runtime
from models.objectives import ObjectiveConfig
from models.registry import ModelSpec

EVALMODES = ("anytime", "dynamic", "both")


@dataclass(frozen=True)
class EvalSettings:
    """`--checkpoint`, `--evalmode`, `--flat_curve`, `--budget`, `--real-exit`, `--save-logits`,
    `--eval-ema` (True: the checkpoint's --model-ema weights, False: its live weights, None: the
    EMA weights when it has them)."""

    checkpoint: str = "best"
    evalmode: str = "both"
    flat_curve: bool = False
    budget: Optional[float] = None
    real_exit: bool = False
    save_logits: Optional[Path] = None
    ema: Optional[bool] = None

    @property
    def anytime(self) -> bool:
        return self.evalmode in ("anytime", "both")

    @property
    def budgeted(self) -> bool:
        return self.evalmode in ("dynamic", "both")


@dataclass(frozen=True)
class EvaluationJob:
    """One evaluation: the run directory and checkpoint file, the network they hold, the data,
    what to compute, and the run's training flags (`config`, as config.json keeps them)."""

    run_dir: Path
    checkpoint_file: Path
    model: ModelSpec
    objective: ObjectiveConfig
    data: DataSettings
    evaluation: EvalSettings
    runtime: Runtime = Runtime()
    config: dict[str, Any] = field(default_factory=dict)
