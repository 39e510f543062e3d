"""The optimiser and its schedule: SGD over per-exit (or single) weight-decay groups, stepped at
the milestones (docs/method.md)."""

from __future__ import annotations

from decimal import Decimal
from typing import Sequence

import numpy as np
import torch

from boostnet.training.settings import TrainSettings
from boostnet.training.step import make_sgd
from models.multi_exit import MultiExitNetwork, param_groups_by_stage


def weight_decays(weight_decay: Sequence[float], exits: int) -> list[float]:
    """`--weight-decay a` for every exit, or `a,b` linearly spaced from first to last exit."""
    if len(weight_decay) == 1:
        return list(weight_decay) * exits
    return np.linspace(weight_decay[0], weight_decay[1], exits).tolist()


def parameter_groups(
    model: MultiExitNetwork, weight_decay: Sequence[float], per_exit: bool = True
) -> list[dict]:
    """One group per exit (block n + head n), or one group for all (docs/method.md): the
    backbone's `per_exit_weight_decay` says which."""
    if not per_exit:  # the parser allows such backbones one value only
        return [{"params": list(model.parameters()), "weight_decay": weight_decay[0]}]
    return [
        {"params": params, "weight_decay": decay}
        for params, decay in zip(param_groups_by_stage(model), weight_decays(weight_decay, model.num_exits))
    ]


def build_optimizer(
    model: MultiExitNetwork, train: TrainSettings, per_exit: bool, device: torch.device
) -> torch.optim.SGD:
    """SGD over the per-exit or single parameter groups."""
    return make_sgd(parameter_groups(model, train.weight_decay, per_exit), train.lr, train.momentum, device)


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainSettings
) -> torch.optim.lr_scheduler.MultiStepLR:
    """The step schedule of --lr_milestones and --lr_gamma, stepped once per epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(train.lr_milestones), gamma=train.lr_gamma
    )


def schedule_text(train: TrainSettings) -> str:
    """The learning-rate schedule in words, e.g. 'lr 0.1, x0.1 after epochs 15, 22 (default
    schedule: 50%, 75% of --epochs 30)'."""
    milestones = train.lr_milestones
    if not milestones:
        return f"lr {train.lr:g}, constant (no --lr_milestones)"
    text = (
        f"lr {train.lr:g}, x{train.lr_gamma:g} after epoch{'s' * (len(milestones) > 1)} "
        f"{', '.join(map(str, milestones))}"
    )
    return f"{text} (default schedule: {train.schedule_note})" if train.schedule_note else text


def scheduled_lr(train: TrainSettings, epoch: int) -> float:
    """The learning rate of 0-based `epoch` as the flags state it: --lr times --lr_gamma once
    per milestone passed, in decimal arithmetic (0.1, then 0.01). The optimiser holds the
    float32 nearest to each step's product (0.10000000149011612, then 0.010000001)."""
    decays = sum(milestone <= epoch for milestone in train.lr_milestones)
    return float(Decimal(repr(train.lr)) * Decimal(repr(train.lr_gamma)) ** decays)
