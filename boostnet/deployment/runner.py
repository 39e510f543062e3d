"""Real early exit over stages of flat tensors, whatever runs them (docs/deployment.md).

A backend is anything with `num_exits`, `boosted` and `run(n, inputs) -> outputs` over the
tensors of :mod:`boostnet.deployment.stages`: the project's own modules (eager PyTorch),
programs loaded from `torch.export` files, or ONNX Runtime sessions. :func:`classify` sends a
batch through stage after stage and lets each sample leave at the first exit whose confidence
reaches its threshold, exactly as :func:`boostnet.evaluation.early_exit.early_exit_predict`
does; only the samples still running reach the next stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch
from torch import Tensor, nn


class StageBackend(Protocol):
    """What :func:`classify` needs of a backend."""

    num_exits: int
    boosted: bool

    def run(self, n: int, inputs: list[Tensor]) -> list[Tensor]:
        """Stage n's outputs (features..., output, confidence, predicted) for its inputs."""
        ...


@dataclass
class Decisions:
    """Per sample: predicted class, 0-based exit taken, confidence at that exit, and its output."""

    classes: Tensor
    exits: Tensor
    confidences: Tensor


class TorchStages:
    """Stages as PyTorch modules (the project's FlatStage, or a loaded torch.export program)."""

    def __init__(self, modules: Sequence[nn.Module], boosted: bool):
        self.modules = list(modules)
        self.num_exits = len(self.modules)
        self.boosted = boosted

    @torch.inference_mode()
    def run(self, n: int, inputs: list[Tensor]) -> list[Tensor]:
        return list(self.modules[n](*inputs))


class OnnxStages:
    """Stages as ONNX Runtime sessions, fed by the input names each graph declares."""

    def __init__(self, sessions: Sequence[object], boosted: bool):
        self.sessions = list(sessions)
        self.names = [[node.name for node in session.get_inputs()] for session in self.sessions]
        self.num_exits = len(self.sessions)
        self.boosted = boosted

    def run(self, n: int, inputs: list[Tensor]) -> list[Tensor]:
        feed = {name: np.ascontiguousarray(tensor.numpy()) for name, tensor in zip(self.names[n], inputs)}
        return [torch.from_numpy(array) for array in self.sessions[n].run(None, feed)]


def classify(backend: StageBackend, images: Tensor, thresholds: Sequence[float]) -> Decisions:
    """Early exit of `images` through `backend`'s stages at `thresholds` (one per exit).

    Who leaves is decided in NumPy on the stage's outputs (a few microseconds per stage, where
    the equivalent PyTorch calls would add a tenth of a millisecond: at batch 1 that is a
    measurable share of a small stage); features are gathered only when some samples left.
    """
    if len(thresholds) != backend.num_exits:
        raise ValueError(f"need {backend.num_exits} thresholds, got {len(thresholds)}")
    batch = images.shape[0]
    classes = np.empty(batch, dtype=np.int64)
    exits = np.empty(batch, dtype=np.int64)
    confidences = np.empty(batch, dtype=np.float32)
    remaining = np.arange(batch)
    inputs = [images]
    for n in range(backend.num_exits):
        *features, output, confidence, predicted = backend.run(n, inputs)
        scores = confidence.numpy()
        classes[remaining], exits[remaining], confidences[remaining] = predicted.numpy(), n, scores
        staying = np.flatnonzero(~(scores >= thresholds[n]))
        if n == backend.num_exits - 1 or staying.size == 0:
            break
        if staying.size < remaining.size:
            remaining = remaining[staying]
            index = torch.from_numpy(staying)
            features, output = [tensor[index] for tensor in features], output[index]
        inputs = features + ([output] if backend.boosted else [])
    return Decisions(torch.from_numpy(classes), torch.from_numpy(exits), torch.from_numpy(confidences))


def full_network(backend: StageBackend, images: Tensor) -> Tensor:
    """Every stage on every sample (no exit): the last exit's output, for timing the full network."""
    return stage_outputs(backend, images)[-1]


def stage_outputs(backend: StageBackend, images: Tensor) -> list[Tensor]:
    """Every exit's output F_n for every sample (exits x samples x classes), for agreement checks."""
    inputs, outputs = [images], []
    for n in range(backend.num_exits):
        *features, output, _, _ = backend.run(n, inputs)
        outputs.append(output)
        inputs = features + ([output] if backend.boosted else [])
    return outputs
