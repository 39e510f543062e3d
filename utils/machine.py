"""What machine a result was computed on: bit-exact results and timings hold only there."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a GPU is named, so scripts' --help stays fast
    import torch

CPUINFO = Path("/proc/cpuinfo")


def cpu_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name ("AMD EPYC 7B13"): Linux's /proc/cpuinfo, else what the platform reports.

    `platform.processor()` is empty or just "x86_64" on Linux, which cannot tell apart two CPUs
    whose kernels (AVX2 or AVX-512) round differently or run at different speeds.
    """
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: "torch.device") -> str:
    """The GPU's marketing name, or the CPU's model name."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return cpu_name()
