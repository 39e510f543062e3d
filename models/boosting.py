"""The boosted (additive) network and the per-exit losses (docs/method.md).

Exit n of a BoostNet predicts F_n = f_n + r_n * F_{n-1} (F_1 = f_1), where f_n are the raw
logits of the backbone's head n. :class:`BoostedNetwork` is that model, with the backbone's
own interface (all exits, up to exit k, exit by exit); the joint baseline is the same class
without factors, predicting f_n. Training reads :meth:`BoostedNetwork.training_outputs`, in
which the earlier ensemble is a constant, and :class:`ExitObjective` turns them into losses.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.multi_exit import Features, MultiExitNetwork


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


class BoostedNetwork(nn.Module):
    """A multi-exit backbone whose exits predict the additive ensemble F_n (or f_n without factors).

    `backbone` is a :class:`MultiExitNetwork`, or a wrapper of one (DistributedDataParallel)
    whose call returns the per-exit logits; stepping exit by exit needs the network itself.
    The module owns no parameters: its state is the backbone's.
    """

    def __init__(self, backbone: nn.Module, factors: Optional[Sequence[float]]):
        super().__init__()
        self.backbone = backbone
        self.factors = list(factors) if factors is not None else None

    @property
    def boosted(self) -> bool:
        """True for BoostNet (F_n), False for the joint baseline (f_n)."""
        return self.factors is not None

    @property
    def network(self) -> MultiExitNetwork:
        """The backbone without any wrapper."""
        return getattr(self.backbone, "module", self.backbone)

    @property
    def num_exits(self) -> int:
        return self.network.num_exits

    def combine(self, n: int, logits: Tensor, previous: Optional[Tensor]) -> Tensor:
        """Output of exit n (0-based) from its logits f_n and the previous exit's output F_{n-1}."""
        if not self.boosted or previous is None:
            return logits
        return logits + self.factors[n] * previous

    def ensemble(self, logits: Sequence[Tensor], detach_previous: bool = False) -> list[Tensor]:
        """Every exit's output from raw per-exit logits; `detach_previous` holds F_{n-1} constant."""
        outputs: list[Tensor] = []
        for n, f in enumerate(logits):
            previous = outputs[-1] if outputs else None
            if previous is not None and detach_previous:
                previous = previous.detach()
            outputs.append(self.combine(n, f, previous))
        return outputs

    def forward(self, x: Tensor, max_exit: Optional[int] = None) -> list[Tensor]:
        """Evaluation-time outputs of exits 0..max_exit-1 (all when None); later blocks never run."""
        logits = self.backbone(x) if max_exit is None else self.backbone(x, max_exit)
        return self.ensemble(logits)

    def training_outputs(self, x: Tensor) -> list[Tensor]:
        """Every exit's output with the earlier ensemble held constant: what exit n is trained on.

        The values equal :meth:`forward`'s; only the gradient differs (loss n reaches head n and
        the blocks before it, never heads 1..n-1).
        """
        return self.ensemble(self.backbone(x), detach_previous=True)

    def iter_exits(self, x: Tensor, max_exit: Optional[int] = None) -> Iterator[tuple[Tensor, Features]]:
        """Yield (output of exit n, its features) exit by exit; stop iterating to skip the rest."""
        previous: Optional[Tensor] = None
        for n, (logits, features) in enumerate(self.network.iter_exits(x, max_exit)):
            previous = self.combine(n, logits, previous)
            yield previous, features

    def probabilities(self, logits: Sequence[Tensor]) -> Tensor:
        """Softmax of every exit's output from raw logits, stacked: exits x samples x classes."""
        return torch.softmax(torch.stack(self.ensemble(logits)), dim=2)


class ExitObjective(nn.Module):
    """Per-exit cross-entropy losses summed, optionally equalised by their running averages.

    ``forward(outputs, target)`` takes the network's training-time outputs and returns
    (total loss, per-exit losses detached). With `smoothing` eps > 0 each exit's target is
    label-smoothed (PyTorch's `label_smoothing`): (1 - eps) CE + eps * mean over classes of
    -log p; 0 is the plain cross-entropy, computed exactly as before.
    """

    def __init__(
        self, num_exits: int, loss_equal: bool = False, momentum: float = 0.9, smoothing: float = 0.0
    ):
        super().__init__()
        self.loss_equal = loss_equal
        self.momentum = momentum
        self.smoothing = smoothing
        self.register_buffer("loss_ema", torch.zeros(num_exits))
        self.register_buffer("ema_initialised", torch.zeros((), dtype=torch.bool))

    def forward(self, outputs: Sequence[Tensor], target: Tensor) -> tuple[Tensor, Tensor]:
        losses = torch.stack(
            [F.cross_entropy(out, target, label_smoothing=self.smoothing) for out in outputs]
        )
        total = losses.sum() if not self.loss_equal else self._equalised(losses)
        return total, losses.detach()

    def _equalised(self, losses: Tensor) -> Tensor:
        """sum_n L_n * mean(m) / m_n with m the EMA (momentum 0.9) of the stage losses."""
        current = losses.detach()
        if self.training:
            blended = self.momentum * self.loss_ema + (1 - self.momentum) * current
            self.loss_ema.copy_(torch.where(self.ema_initialised, blended, current))
            self.ema_initialised.fill_(True)
        ema = torch.where(self.ema_initialised, self.loss_ema, current)
        return (losses * (ema.mean() / ema)).sum()
