"""`--latency-budget MS`: pick thresholds by measured latency instead of counted MACs.

Each stage's latency per image is measured here, on the device and backend at hand, with a
batch of the size that will be used (median of repeated runs, after a warm-up). A setting's
expected latency per image is then sum_n (share of validation samples that reach stage n) x
(stage n's latency per image), from the exit counts the policy stores; among the settings whose
expected latency meets the budget, the most accurate on validation is chosen. What the chosen
setting then achieves is measured where it runs (predict.py on its images, measure_exit_speed.py
on the test split) and reported beside this promise.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Sequence

import numpy as np
import torch

from boostnet.deployment.runner import StageBackend, as_images
from boostnet.evaluation.early_exit import expected_cost
from boostnet.evaluation.policy import ExitPolicy, Setting, offered_settings
from utils.errors import UserError

LATENCY_REPEATS = 7


def stage_seconds(backend: StageBackend, images: np.ndarray, repeats: int = LATENCY_REPEATS) -> list[float]:
    """Median wall-clock seconds per image of each stage on `images` (everybody stays)."""
    images = as_images(images)
    timings: list[list[float]] = [[] for _ in range(backend.num_exits)]
    for repeat in range(repeats + 1):
        inputs = [images]
        for n in range(backend.num_exits):
            start = time.perf_counter()
            *features, output, _, _ = backend.run(n, inputs)
            if repeat:  # the first pass warms up
                timings[n].append((time.perf_counter() - start) / len(images))
            inputs = features + ([output] if backend.boosted else [])
    return [statistics.median(times) for times in timings]


def expected_seconds(setting: Setting, seconds: list[float]) -> float:
    """Mean latency per image of `setting`: its validation exits' expected cost, exit n costing the
    latency of stages 0..n."""
    return expected_cost(torch.tensor(setting.val_exit_counts), list(accumulate(seconds)))


@dataclass(frozen=True)
class LatencyChoice:
    """The setting `--latency-budget` chose, with the budget and the latency it promises."""

    setting: Setting
    budget_ms: float
    expected_ms: float

    def fields(self, achieved_ms: float | None) -> dict[str, Any]:
        """Summary fields: the budget, the promise, and what was achieved against both."""
        return {
            "latency_budget_ms": self.budget_ms,
            "expected_ms_per_image": self.expected_ms,
            "achieved_ms_per_image": achieved_ms,
            "within_latency_budget": None if achieved_ms is None else achieved_ms <= self.budget_ms,
        }


def sample_images(policy: ExitPolicy, batch_size: int) -> np.ndarray:
    """A fixed random batch of the policy's input shape, to time the stages with."""
    size = policy.preprocessing.image_size
    shape = (batch_size, policy.preprocessing.channels, size, size)
    return np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


def choose_for_latency(policy: ExitPolicy, seconds: Sequence[float], budget_ms: float) -> LatencyChoice:
    """The most accurate setting on validation whose expected latency, from the stage latencies
    `seconds` (per image), is within `budget_ms`; refused in one line when none is."""
    offered = offered_settings(policy)  # stored settings always hold their exit counts
    estimates = {entry.name: expected_seconds(entry, list(seconds)) * 1000 for entry in offered}
    fitting = [entry for entry in offered if estimates[entry.name] <= budget_ms]
    if not fitting:
        fastest = min(estimates.values(), default=float("inf"))
        raise UserError(
            f"--latency-budget {budget_ms:g}: the fastest setting takes {fastest:.3g} ms per image here"
        )
    best = max(fitting, key=lambda entry: (entry.val_accuracy, -estimates[entry.name]))
    return LatencyChoice(best, budget_ms, estimates[best.name])


def setting_for_latency(
    policy: ExitPolicy, backend: StageBackend, budget_ms: float, batch_size: int
) -> LatencyChoice:
    """`--latency-budget`: measure `backend`'s stages at `batch_size` here, then choose."""
    return choose_for_latency(policy, stage_seconds(backend, sample_images(policy, batch_size)), budget_ms)
