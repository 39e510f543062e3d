"""The boosted (additive) model and the training objectives (SPEC §1).

Exit n outputs F_n = f_n + r_n * F_{n-1} (F_1 = f_1). The boosted loss trains head n on
f_n + r_n * stopgrad(F_{n-1}); the baseline joint loss trains every f_n on its own.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def reweight_factors(values: Sequence[float], num_exits: int) -> list[float]:
    """Expand `--ensemble_reweight` to one factor per exit (r_1 is unused but kept)."""
    values = list(values)
    if len(values) == 1:
        return values * num_exits
    if len(values) == 2:
        return torch.linspace(values[0], values[1], num_exits, dtype=torch.float64).tolist()
    if len(values) != num_exits:
        raise ValueError(f"--ensemble_reweight needs 1, 2 or {num_exits} values, got {len(values)}")
    return values


def additive_outputs(logits: Sequence[Tensor], factors: Sequence[float],
                     detach_previous: bool = False) -> list[Tensor]:
    """F_n for every exit; with `detach_previous` the earlier ensemble is a constant."""
    outputs: list[Tensor] = []
    for n, f in enumerate(logits):
        if n == 0:
            outputs.append(f)
            continue
        previous = outputs[-1].detach() if detach_previous else outputs[-1]
        outputs.append(f + factors[n] * previous)
    return outputs


class ExitObjective(nn.Module):
    """Per-exit cross-entropy losses summed, optionally equalised by their running averages.

    ``forward`` returns (total loss, per-exit losses detached, per-exit outputs the model
    would predict with at evaluation time).
    """

    def __init__(self, num_exits: int, boosted: bool, reweight: Sequence[float] = (0.5,),
                 loss_equal: bool = False, momentum: float = 0.9):
        super().__init__()
        self.boosted = boosted
        self.factors = reweight_factors(reweight, num_exits)
        self.loss_equal = loss_equal
        self.momentum = momentum
        self.register_buffer("loss_ema", torch.zeros(num_exits))
        self.register_buffer("ema_initialised", torch.zeros((), dtype=torch.bool))

    def outputs(self, logits: Sequence[Tensor]) -> list[Tensor]:
        """Evaluation-time predictions of every exit (F_n, or f_n for the baseline)."""
        return additive_outputs(logits, self.factors) if self.boosted else list(logits)

    def probabilities(self, logits: Sequence[Tensor]) -> Tensor:
        """Softmax of the evaluation-time outputs, stacked: exits x samples x classes."""
        return torch.softmax(torch.stack(self.outputs(logits)), dim=2)

    def forward(self, logits: Sequence[Tensor], target: Tensor
                ) -> tuple[Tensor, Tensor, list[Tensor]]:
        if self.boosted:
            train_outputs = additive_outputs(logits, self.factors, detach_previous=True)
        else:
            train_outputs = list(logits)
        losses = torch.stack([F.cross_entropy(out, target) for out in train_outputs])
        total = losses.sum() if not self.loss_equal else self._equalised(losses)
        return total, losses.detach(), train_outputs

    def _equalised(self, losses: Tensor) -> Tensor:
        """sum_n L_n * mean(m) / m_n with m the EMA (momentum 0.9) of the stage losses."""
        current = losses.detach()
        if self.training:
            blended = self.momentum * self.loss_ema + (1 - self.momentum) * current
            self.loss_ema.copy_(torch.where(self.ema_initialised, blended, current))
            self.ema_initialised.fill_(True)
        ema = torch.where(self.ema_initialised, self.loss_ema, current)
        return (losses * (ema.mean() / ema)).sum()


def build_objective(args, num_exits: int) -> ExitObjective:
    """The objective selected by `--loss`, `--ensemble_reweight` and `--loss_equal`."""
    return ExitObjective(num_exits, boosted=args.loss == "boost", reweight=args.ensemble_reweight,
                         loss_equal=args.loss_equal)
