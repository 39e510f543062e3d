"""Per-exit cumulative multiply-adds and parameters in the MSDNet convention (docs/costs.md).

Counts come from forward hooks on the leaf modules of the model actually built, run on one
image (32x32, or 224x224 for ImageNet). Exit n's cost covers everything run up to and
including head n, earlier heads included. The "true" count also charges bilinear
interpolation (4 multiply-adds per output element), which the MSDNet convention ignores.
`op_counter.py` is the command line over this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from models.layers import Resize
from models.multi_exit import MultiExitNetwork, param_groups_by_stage
from models.registry import InputSpec

INTERPOLATION_MACS_PER_OUTPUT = 4


@dataclass
class ExitCosts:
    """Cumulative per-exit costs: `macs` (MSDNet convention), `true_macs`, `params`."""

    macs: list[int] = field(default_factory=list)
    true_macs: list[int] = field(default_factory=list)
    params: list[int] = field(default_factory=list)


def _spatial(t: torch.Tensor) -> int:
    return t.shape[-1] * t.shape[-2]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def module_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
    """(MSDNet-convention MACs, interpolation MACs) of one call of a leaf module, batch 1."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return (module.in_channels * module.out_channels * kh * kw * _spatial(output) // module.groups, 0)
    if isinstance(module, nn.ReLU):
        return output[0].numel(), 0
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        kh, kw = _pair(module.kernel_size)
        return output.shape[1] * _spatial(output) * kh * kw, 0
    if isinstance(module, nn.Linear):
        bias = module.bias.numel() if module.bias is not None else 0
        return module.weight.numel() + bias, 0
    if isinstance(module, Resize) and output.shape[-2:] != inputs[0].shape[-2:]:
        return 0, output[0].numel() * INTERPOLATION_MACS_PER_OUTPUT
    return 0, 0


class _Counter:
    """Accumulates MACs and the parameters of every module seen running."""

    def __init__(self) -> None:
        self.macs = 0
        self.interp_macs = 0
        self.params = 0
        self._seen: set[int] = set()

    def hook(self, module: nn.Module, inputs: tuple, output) -> None:
        macs, interp = module_macs(module, inputs, output)
        self.macs += macs
        self.interp_macs += interp
        for p in module.parameters(recurse=False):
            if id(p) not in self._seen:
                self._seen.add(id(p))
                self.params += p.numel()


@torch.no_grad()
def count_exit_costs(model: MultiExitNetwork, input_size: int) -> ExitCosts:
    """Run one image through every exit and snapshot the cumulative counts after each head."""
    counter = _Counter()
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(counter.hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        costs = ExitCosts()
        x = torch.zeros(1, 3, input_size, input_size)
        for _ in model.iter_exits(x):
            costs.macs.append(counter.macs)
            costs.true_macs.append(counter.macs + counter.interp_macs)
            costs.params.append(counter.params)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return costs


def msdnet_convention(model: MultiExitNetwork, inputs: InputSpec) -> ExitCosts:
    """The MSDNet-convention costs of `model` on one image of the size it reads."""
    return count_exit_costs(model, inputs.image_size)


@torch.no_grad()
def counted_operations(model: MultiExitNetwork, inputs: InputSpec) -> ExitCosts:
    """Cumulative per-exit costs of `model` on one image, from the operations actually run
    (torch.utils.flop_counter: convolutions, matmuls, attention; MACs = FLOPs / 2): the
    convention for any backbone without a counter of its own (docs/costs.md). `true_macs` equals
    `macs` (the operations counted include any interpolation); `params` counts the parameters of
    stages 0..n, leftovers (embeddings, tokens) in stage 0."""
    from torch.utils.flop_counter import FlopCounterMode

    groups = param_groups_by_stage(model)
    was_training = model.training
    model.eval()
    try:
        costs = ExitCosts()
        x = torch.zeros(1, inputs.channels, inputs.image_size, inputs.image_size)
        with FlopCounterMode(display=False) as counter:
            for n, _ in enumerate(model.iter_exits(x)):
                macs = counter.get_total_flops() // 2
                costs.macs.append(macs)
                costs.true_macs.append(macs)
                costs.params.append(sum(p.numel() for group in groups[: n + 1] for p in group))
    finally:
        model.train(was_training)
    return costs
