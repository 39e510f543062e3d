"""The optimiser and its schedule: SGD (or AdamW) over per-exit (or single) weight-decay groups,
stepped once per epoch at the milestones (or along a cosine, after an optional linear warm-up);
docs/method.md and docs/fine-tuning.md."""

from __future__ import annotations

import functools
import math
from decimal import Decimal
from typing import Sequence

import numpy as np
import torch

from boostnet.training.settings import TrainSettings
from boostnet.training.step import make_adamw, make_sgd
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
) -> torch.optim.Optimizer:
    """SGD (`--opt sgd`, with --momentum) or AdamW (`--opt adamw`, torch's betas and eps) over
    the per-exit or single parameter groups, each with its own weight decay."""
    groups = parameter_groups(model, train.weight_decay, per_exit)
    if train.opt == "adamw":
        return make_adamw(groups, train.lr, device)
    return make_sgd(groups, train.lr, train.momentum, device)


def steps_only(train: TrainSettings) -> bool:
    """The paper's schedule: multistep without warm-up (MultiStepLR itself, bit for bit)."""
    return train.sched == "multistep" and not train.warmup_epochs


def lr_factor(train: TrainSettings, epoch: int) -> float:
    """The learning rate of 0-based `epoch` over --lr: the warm-up ramp (e+1)/(W+1) for the first
    W = --warmup-epochs epochs, times the schedule's shape: --lr_gamma per milestone passed, or
    the half cosine (1 + cos(pi (e - W) / (E - W))) / 2 over the E - W epochs after warm-up
    (1 at epoch W, towards 0 at --epochs E)."""
    warmup = train.warmup_epochs
    ramp = (epoch + 1) / (warmup + 1) if epoch < warmup else 1.0
    if train.sched == "cosine":
        progress = max(epoch - warmup, 0) / (train.epochs - warmup)
        return ramp * 0.5 * (1.0 + math.cos(math.pi * progress))
    return ramp * train.lr_gamma ** sum(milestone <= epoch for milestone in train.lr_milestones)


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainSettings
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule, stepped once per epoch: MultiStepLR for the paper's (--lr_milestones,
    --lr_gamma), else a LambdaLR of :func:`lr_factor`; its state (the epoch reached) is what a
    resume restores."""
    if steps_only(train):
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(train.lr_milestones), gamma=train.lr_gamma
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, train))


def warmup_text(train: TrainSettings) -> str:
    """', after 3 warm-up epochs (linear from lr/4)', or nothing without warm-up."""
    warmup = train.warmup_epochs
    if not warmup:
        return ""
    return f", after {warmup} warm-up epoch{'s' * (warmup > 1)} (linear from lr/{warmup + 1})"


def schedule_text(train: TrainSettings) -> str:
    """The optimiser and learning-rate schedule in words, e.g. 'lr 0.1, x0.1 after epochs 15, 22
    (default schedule: 50%, 75% of --epochs 30)' or 'AdamW, lr 0.001, cosine to 0 over epochs
    3-30, after 2 warm-up epochs (linear from lr/3)'."""
    prefix = "AdamW, " if train.opt == "adamw" else ""
    if train.sched == "cosine":
        span = f"epochs {train.warmup_epochs + 1}-{train.epochs}"
        return f"{prefix}lr {train.lr:g}, cosine to 0 over {span}{warmup_text(train)}"
    milestones = train.lr_milestones
    if not milestones:
        return f"{prefix}lr {train.lr:g}, constant (no --lr_milestones){warmup_text(train)}"
    text = (
        f"{prefix}lr {train.lr:g}, x{train.lr_gamma:g} after epoch{'s' * (len(milestones) > 1)} "
        f"{', '.join(map(str, milestones))}{warmup_text(train)}"
    )
    return f"{text} (default schedule: {train.schedule_note})" if train.schedule_note else text


def scheduled_lr(train: TrainSettings, epoch: int) -> float:
    """The learning rate of 0-based `epoch` as the flags state it. The paper's schedule: --lr
    times --lr_gamma once per milestone passed, in decimal arithmetic (0.1, then 0.01); the
    optimiser holds the float32 nearest to each step's product (0.10000000149011612, then
    0.010000001). Others: --lr times :func:`lr_factor` in float64 (the optimiser holds its
    float32 lr times the same factor)."""
    if not steps_only(train):
        return train.lr * lr_factor(train, epoch)
    decays = sum(milestone <= epoch for milestone in train.lr_milestones)
    return float(Decimal(repr(train.lr)) * Decimal(repr(train.lr_gamma)) ** decays)
