"""Where a program runs: the device and the CPU thread count (torch-free settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Runtime:
    """`--device` (auto, cpu, cuda, cuda:N) and `--threads` (None: torch's own count)."""

    device: str = "auto"
    threads: Optional[int] = None
