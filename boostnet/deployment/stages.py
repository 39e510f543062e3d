"""Exit stages as modules of flat tensors: what export writes and every runner calls.

Stage n of early exit (:func:`boostnet.evaluation.early_exit.exit_stage`) maps nested features
and the previous ensemble output F_{n-1} to the next features, exit n's output, its confidence
and its class. Exported graphs need named tensors, not nestings, so :class:`FlatStage` takes and
returns the features' leaves in :func:`torch.utils._pytree.tree_flatten` order: stage 0 reads
`images`; stage n > 0 reads `features_0..k` and, for a boosted network, `previous`; every stage
but the last returns `next_features_0..k` (an ONNX graph cannot reuse an input's name), then
`output`, `confidence` and `predicted`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

from boostnet.evaluation.early_exit import exit_stage
from models.boosting import BoostedNetwork

HEAD_OUTPUTS = ("output", "confidence", "predicted")


@dataclass(frozen=True)
class StageSignature:
    """The tensor names stage n reads and writes, in call order."""

    inputs: list[str]
    outputs: list[str]


def feature_names(count: int, prefix: str = "") -> list[str]:
    """Tensor names of `count` feature leaves (`prefix` "next_" for a stage's outputs)."""
    return [f"{prefix}features_{k}" for k in range(count)]


class FlatStage(nn.Module):
    """Stage `n` of `model` on flat tensors (see the module docstring)."""

    def __init__(self, model: BoostedNetwork, n: int, spec: Optional[TreeSpec], last: bool):
        super().__init__()
        self.model = model
        self.n = n
        self.spec = spec
        self.last = last
        self.stage = exit_stage(model)

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """Inputs and outputs named by :func:`signature`, in that order."""
        if self.n == 0:
            features, previous = tensors[0], None
        else:
            count = self.spec.num_leaves
            features = tree_unflatten(list(tensors[:count]), self.spec)
            previous = tensors[count] if self.model.boosted else None
        features, output, confidence, predicted = self.stage(self.n, features, previous)
        leaves = [] if self.last else tree_flatten(features)[0]
        return (*leaves, output, confidence, predicted)


def signature(boosted: bool, n: int, leaves_in: int, leaves_out: int) -> StageSignature:
    """Names of stage n's inputs and outputs given its feature leaf counts."""
    inputs = ["images"] if n == 0 else feature_names(leaves_in) + (["previous"] if boosted else [])
    return StageSignature(inputs, feature_names(leaves_out, "next_") + list(HEAD_OUTPUTS))


def chained_signatures(outputs: list[list[str]], boosted: bool) -> list[StageSignature]:
    """The signatures of stages that follow one another, from each stage's output names: stage n
    reads the features stage n - 1 returns; the last returns none."""
    counts = [sum(name.startswith("next_features_") for name in names) for names in outputs]
    return [
        signature(boosted, n, counts[n - 1] if n else 0, counts[n] if n + 1 < len(outputs) else 0)
        for n in range(len(outputs))
    ]


@torch.no_grad()
def flat_stages(model: BoostedNetwork, images: Tensor) -> tuple[list[FlatStage], list[tuple[Tensor, ...]]]:
    """Every stage of `model` (in eval mode) as a :class:`FlatStage`, and each stage's example
    inputs, obtained by running `images` (no sample leaves) through them."""
    model.eval()
    stage = exit_stage(model)
    stages, examples = [], []
    features, previous, spec = images, None, None
    for n in range(model.num_exits):
        last = n == model.num_exits - 1
        stages.append(FlatStage(model, n, spec, last).eval())
        leaves = [features] if n == 0 else tree_flatten(features)[0]
        examples.append(tuple(leaves + ([previous] if n > 0 and model.boosted else [])))
        features, previous, _, _ = stage(n, features, previous)
        spec = tree_flatten(features)[1]
    return stages, examples


def signatures(model: BoostedNetwork, examples: list[tuple[Tensor, ...]]) -> list[StageSignature]:
    """Every stage's tensor names from the example inputs of :func:`flat_stages`."""
    boosted = int(model.boosted)
    leaf_counts = [len(example) - (boosted if n > 0 else 0) for n, example in enumerate(examples)]
    leaf_counts.append(0)
    return [
        signature(model.boosted, n, leaf_counts[n], leaf_counts[n + 1] if n + 1 < len(examples) else 0)
        for n in range(len(examples))
    ]
