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


ECE_BINS = 15


def expected_calibration_error(probs: Tensor, targets: Tensor, bins: int = ECE_BINS) -> list[float]:
    """Per-exit expected calibration error, a fraction in [0, 1], of stacked probabilities
    (exits x samples x classes): how far confidence strays from accuracy.

    Confidence is a sample's largest class probability and its prediction that class. The
    `bins` equal-width bins are right-closed, bin b holding confidences in (b/bins, (b+1)/bins],
    with confidence 0 in the first. ECE = sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|.
    """
    confidence, prediction = probs.max(dim=2)
    confidence = confidence.double()
    correct = (prediction == targets.to(probs.device).view(1, -1)).double()
    edges = torch.arange(1, bins, dtype=torch.float64, device=probs.device) / bins
    bin_index = torch.bucketize(confidence, edges)
    gaps = torch.zeros(probs.shape[0], bins, dtype=torch.float64, device=probs.device)
    gaps.scatter_add_(1, bin_index, correct - confidence)
    return (gaps.abs().sum(dim=1) / probs.shape[1]).tolist()


def negative_log_likelihood(probs: Tensor, targets: Tensor) -> list[float]:
    """Per-exit mean of -log p(target) of stacked probabilities (exits x samples x classes).

    p is clamped below at the dtype's smallest positive normal number (torch.finfo().tiny) so
    that a probability rounded to 0 gives a large but finite loss.
    """
    index = targets.to(probs.device).long().view(1, -1, 1).expand(probs.shape[0], -1, 1)
    target_probs = probs.gather(2, index).squeeze(2).clamp(min=torch.finfo(probs.dtype).tiny)
    return (-target_probs.double().log().mean(dim=1)).tolist()
