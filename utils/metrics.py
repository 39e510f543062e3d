"""Per-exit classification metrics shared by training, evaluation and the benchmarks."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def correct_counts(outputs: Sequence[Tensor], targets: Tensor) -> Tensor:
    """Per-exit number of samples whose top-1 class is right, on the outputs' device."""
    return torch.stack([(output.argmax(1) == targets).sum() for output in outputs])


def topk_accuracy(probs: Tensor, targets: Tensor, k: int) -> list[float]:
    """Per-exit top-k accuracy in percent of stacked scores (exits x samples x classes)."""
    k = min(k, probs.shape[2])
    hits = (probs.topk(k, dim=2).indices == targets.view(1, -1, 1)).any(dim=2)
    return (hits.sum(dim=1).double() * 100.0 / probs.shape[1]).tolist()
