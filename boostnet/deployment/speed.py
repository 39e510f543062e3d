"""Measured against promised speed-up of real early exit, per threshold setting (docs/deployment.md).

For each backend (eager PyTorch on an inference copy, ONNX Runtime on the exported stages),
each batch size and each setting, early exit and the full network (every stage on every
sample, through the same backend) are timed back to back by
:func:`boostnet.evaluation.early_exit.paired_throughput`. The promised speed-up of a setting is
full MACs / expected MACs (on validation, as the policy states it); the measured one is the
ratio of the two images/s; their ratio says how much of the promise the runtime delivers.

Multiply-adds are not time: a stage of large, thin activations costs more per multiply-add
than one of small, wide ones. So each row also states the speed-up the stages' own latencies
promise (:mod:`boostnet.deployment.latency`: each stage timed with every sample staying, at the
row's batch size, weighted by the validation exit counts): what is lost between that promise
and the measurement is the runner's (deciding, gathering, colder caches for rarely run stages),
what is lost between the MAC promise and it is the network's on this device.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from boostnet.deployment.latency import choose_for_latency, expected_seconds, stage_seconds
from boostnet.deployment.runner import StageBackend, as_images, classify, full_network
from boostnet.evaluation.early_exit import Throughput, early_exit_throughput, paired_throughput
from boostnet.evaluation.policy import ExitPolicy, Setting
from models.boosting import BoostedNetwork
from utils.errors import UserError

SPEED_COLUMNS = (
    "setting",
    "backend",
    "batch_size",
    "expected_macs",
    "promised_speedup",
    "measured_speedup",
    "measured_over_promised",
    "latency_promised_speedup",
    "measured_over_latency_promised",
    "full_network_images_per_second",
    "early_exit_images_per_second",
    "early_exit_ms_per_image",
    "expected_ms_per_image",
    "latency_budget_ms",
    "paired_speedup_low",
    "paired_speedup_high",
)


def batches_of(images: Tensor, batch_size: int) -> list[np.ndarray]:
    """`images` cut into consecutive batches of `batch_size` (the last may be smaller), as the
    arrays the runner reads, so that no conversion is timed."""
    return [as_images(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]


def setting_speed(
    backend: StageBackend, setting: Setting, batches: Sequence[np.ndarray], repeats: int
) -> Throughput:
    """`setting` on `backend` over `batches`, paired with the full network on the same backend."""
    return paired_throughput(
        lambda images: full_network(backend, images),
        lambda images: classify(backend, images, setting.thresholds),
        batches,
        torch.device("cpu"),
        repeats,
    )


def speed_row(
    backend: str,
    setting: Setting,
    batch_size: int,
    speed: Throughput,
    full_macs: float,
    seconds: Sequence[float] | None,
    latency_budget_ms: float | None = None,
) -> dict[str, Any]:
    """One row of SPEED_COLUMNS, in their order: `setting` timed on `backend`; the stage-latency
    promise only where stage latencies `seconds` (per image) were measured."""
    promised = full_macs / setting.expected_macs
    expected = expected_seconds(setting, list(seconds)) if seconds and setting.val_exit_counts else None
    by_latency = sum(seconds) / expected if seconds and expected else None
    low, high = speed.paired_speedup_range
    values = {
        "setting": setting.name,
        "backend": backend,
        "batch_size": batch_size,
        "expected_macs": setting.expected_macs,
        "promised_speedup": promised,
        "measured_speedup": speed.speedup,
        "measured_over_promised": speed.speedup / promised,
        "latency_promised_speedup": by_latency,
        "measured_over_latency_promised": speed.speedup / by_latency if by_latency else None,
        "full_network_images_per_second": speed.full_network,
        "early_exit_images_per_second": speed.early_exit,
        "early_exit_ms_per_image": 1000 / speed.early_exit,
        "expected_ms_per_image": 1000 * expected if expected else None,
        "latency_budget_ms": latency_budget_ms,
        "paired_speedup_low": low,
        "paired_speedup_high": high,
    }
    return {column: values[column] for column in SPEED_COLUMNS}


def device_speed_rows(
    network: BoostedNetwork,
    setting: Setting,
    full_macs: float,
    images: Tensor,
    batch_sizes: Sequence[int],
    device: torch.device,
    repeats: int,
) -> list[dict[str, Any]]:
    """Rows of `setting` through eager PyTorch on `device`, the evaluator's real early exit
    (:func:`~boostnet.evaluation.early_exit.early_exit_throughput`): on a GPU the full network
    replays one CUDA graph and each exit stage one of its own while its sub-batch keeps the batch's
    size. Backend `pytorch-cuda-graphs` on a GPU (`pytorch-<device>` elsewhere); no stage-latency
    promise (stages are not timed apart here)."""
    name = "pytorch-cuda-graphs" if device.type == "cuda" else f"pytorch-{device.type}"
    rows = []
    for batch_size in batch_sizes:
        batches = [chunk.to(device) for chunk in images.split(batch_size)]
        speed = early_exit_throughput(network, batches, setting.thresholds, device, repeats)
        rows.append(speed_row(name, setting, len(batches[0]), speed, full_macs, None))
    return rows


def speed_table(
    backends: dict[str, StageBackend],
    policy: ExitPolicy,
    settings: Sequence[Setting],
    images: Tensor,
    batch_sizes: Sequence[int],
    repeats: int,
    latency_budgets: Sequence[float] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of every backend x batch size x setting, columns SPEED_COLUMNS, and the latency
    budgets no setting meets. Each latency budget (ms per image) adds, per backend and batch size,
    the row of the setting :func:`choose_for_latency` picks from the stage latencies measured
    there: its `early_exit_ms_per_image` is what it achieves on `images` beside the promised
    `expected_ms_per_image`."""
    rows, unmet = [], []
    for name, backend in backends.items():
        for batch_size in batch_sizes:
            batches = batches_of(images, batch_size)
            seconds = stage_seconds(backend, batches[0])
            timed = [(setting, None) for setting in settings]
            for budget_ms in latency_budgets:
                try:
                    timed.append((choose_for_latency(policy, seconds, budget_ms).setting, budget_ms))
                except UserError as error:
                    unmet.append({"backend": name, "batch_size": batch_size, "why": str(error)})
            for setting, budget_ms in timed:
                speed = setting_speed(backend, setting, batches, repeats)
                rows.append(
                    speed_row(name, setting, len(batches[0]), speed, policy.macs[-1], seconds, budget_ms)
                )
    return rows, unmet
