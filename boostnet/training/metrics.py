"""Per-exit training metrics kept on the device, and the images/s between readings."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from utils import distributed


@dataclass
class ExitMetrics:
    """Per-exit mean loss and top-1 accuracy (%) over `count` samples."""

    loss: list[float]
    accuracy: list[float]
    count: int

    def scalars(self, prefix: str) -> dict[str, float]:
        """TensorBoard tags `prefix/loss_exit_n` and `prefix/acc_exit_n`, exits numbered from 1."""
        values = {}
        for n, (loss, accuracy) in enumerate(zip(self.loss, self.accuracy), 1):
            values[f"{prefix}/loss_exit_{n}"] = loss
            values[f"{prefix}/acc_exit_{n}"] = accuracy
        return values

    def summary(self) -> str:
        """One line for the console: the loss summed over exits and every exit's accuracy."""
        accuracies = "/".join(f"{a:.1f}" for a in self.accuracy)
        return f"loss (sum of {len(self.loss)} exits) {sum(self.loss):.3f} acc {accuracies}"


class MetricSums:
    """Per-exit loss and correct-count sums kept on the device, so adding never synchronises."""

    def __init__(self, exits: int, device: torch.device):
        self.loss = torch.zeros(exits, dtype=torch.float64, device=device)
        self.correct = torch.zeros(exits, dtype=torch.float64, device=device)
        self.count = 0

    def add(self, exit_losses: Tensor, exit_correct: Tensor, batch_size: int) -> None:
        """Accumulate one batch (per-exit mean losses, per-exit correct counts)."""
        self.loss += exit_losses.double() * batch_size
        self.correct += exit_correct
        self.count += batch_size

    def state_dict(self) -> dict:
        """The sums so far on the CPU (a recovery checkpoint carries them)."""
        return {"loss": self.loss.cpu(), "correct": self.correct.cpu(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s sums."""
        self.loss.copy_(state["loss"])
        self.correct.copy_(state["correct"])
        self.count = state["count"]

    def metrics(self, across_ranks: bool) -> ExitMetrics:
        """Means over this rank's samples, or over all ranks' (exact: each sample counted once)."""
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.loss.device)
        totals = torch.cat([self.loss, self.correct, count])
        if across_ranks:
            distributed.all_reduce_(totals)
        exits = len(self.loss)
        count = max(totals[-1].item(), 1)
        return ExitMetrics(
            loss=(totals[:exits] / count).tolist(),
            accuracy=(100 * totals[exits : 2 * exits] / count).tolist(),
            count=int(totals[-1].item()),
        )


class IntervalSpeed:
    """Images per second (all ranks) since the previous reading."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self.images = 0
        self.started = time.perf_counter()

    def images_per_second(self) -> float:
        """The rate since the last call (or creation); restarts the count."""
        now = time.perf_counter()
        rate = self.images * self.world_size / max(now - self.started, 1e-9)
        self.images, self.started = 0, now
        return rate
