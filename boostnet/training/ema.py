"""`--model-ema`: an exponential moving average of the network's weights (docs/fine-tuning.md).

After every optimiser step each floating-point tensor of the network's state (parameters and
BatchNorm running statistics alike, as timm's ModelEmaV3 averages them) moves to
``ema = d * ema + (1 - d) * live``; integer buffers (BatchNorm's batch counters) are copied. The
average is a whole copy of the network, so validation, the checkpoint (`model_ema`, keyed like
`model`) and evaluation use it as they use the live network. The decay is constant (no timm
warm-up of the decay).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class WeightEMA:
    """The averaged copy of `model` (in eval mode, without gradients) and its update."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def pairs(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """(averaged, live) floating-point tensors and (averaged, live) other tensors, in state order."""
        averaged = self.module.state_dict(keep_vars=True).values()
        live = model.state_dict(keep_vars=True).values()
        floats = [(a, b) for a, b in zip(averaged, live) if a.is_floating_point()]
        others = [(a, b) for a, b in zip(averaged, live) if not a.is_floating_point()]
        return (
            [a.data for a, _ in floats],
            [b.data for _, b in floats],
            [a.data for a, _ in others],
            [b.data for _, b in others],
        )

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards `model`'s current state."""
        averaged, live, averaged_other, live_other = self.pairs(model)
        torch._foreach_mul_(averaged, self.decay)
        torch._foreach_add_(averaged, live, alpha=1.0 - self.decay)
        for target, source in zip(averaged_other, live_other):
            target.copy_(source)

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Start the average at `model`'s current state (a resume whose checkpoint has none)."""
        self.module.load_state_dict(model.state_dict())

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged state, keyed as the network's own (what `model_ema` holds)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.module.load_state_dict(state)
