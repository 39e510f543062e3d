"""What the run directory does: where it is, whether to resume, when to save inside an epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union


def interval_parts(text: str) -> tuple[Optional[int], Optional[float]]:
    """`--checkpoint-interval` as (steps, seconds): '500' is 500 steps, '30m' is 30 minutes."""
    try:
        steps, seconds = (None, float(text[:-1]) * 60) if text.endswith("m") else (int(text), None)
    except ValueError:
        raise ValueError(f"expected a number of steps (500) or minutes (30m), got {text!r}") from None
    amount = steps if steps is not None else seconds
    if not (math.isfinite(amount) and amount > 0):
        raise ValueError(f"the interval must be positive, got {text!r}")
    return steps, seconds


def checkpoint_interval(text: str) -> str:
    """Check a `--checkpoint-interval` and keep it as typed (config.json stays readable)."""
    interval_parts(text)
    return text


@dataclass(frozen=True)
class RunSettings:
    """`--result_dir`, `--resume` (False, True or 'auto') and `--checkpoint-interval`."""

    result_dir: Path
    resume: Union[bool, str] = False
    checkpoint_interval: Optional[str] = None
