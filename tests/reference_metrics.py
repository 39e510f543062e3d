"""Plain-loop references for the calibration metrics and for where early exit sends each sample."""

from __future__ import annotations

import math
from typing import Sequence

import torch

BINS = 15


def confidence_bin(confidence: float, bins: int = BINS) -> int:
    """Right-closed bins (b/bins, (b+1)/bins]; confidence 0 (and below) in the first."""
    return next((b for b in range(bins) if confidence <= (b + 1) / bins), bins - 1)


def reference_ece(rows: Sequence[Sequence[float]], targets: Sequence[int], bins: int = BINS) -> float:
    """Sum over bins of |bin| / N * |accuracy(bin) - mean confidence(bin)|, sample by sample."""
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for row, target in zip(rows, targets):
        confidence = max(row)
        members[confidence_bin(confidence, bins)].append((confidence, row.index(confidence) == target))
    total = 0.0
    for samples in members:
        if samples:
            accuracy = sum(correct for _, correct in samples) / len(samples)
            mean_confidence = sum(confidence for confidence, _ in samples) / len(samples)
            total += len(samples) / len(rows) * abs(accuracy - mean_confidence)
    return total


def reference_nll(rows: Sequence[Sequence[float]], targets: Sequence[int], smallest: float) -> float:
    """Mean of -log p(target), p clamped below at `smallest`."""
    return sum(-math.log(max(row[target], smallest)) for row, target in zip(rows, targets)) / len(rows)


def reference_exits(probs: torch.Tensor, thresholds: Sequence[float]) -> list[int]:
    """Per sample, the first exit whose threshold its confidence reaches; the last takes the rest."""
    confidence = probs.max(dim=2).values.tolist()
    last = len(thresholds) - 1
    return [
        next((n for n in range(last) if confidence[n][i] >= thresholds[n]), last)
        for i in range(probs.shape[1])
    ]


def reference_made(probs: torch.Tensor, thresholds: Sequence[float]) -> list[list[float]]:
    """Each sample's probabilities at the exit it leaves at, as Python floats."""
    rows = probs.double().tolist()
    return [rows[n][i] for i, n in enumerate(reference_exits(probs, thresholds))]
