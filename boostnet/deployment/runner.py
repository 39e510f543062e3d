"""Real early exit over stages of flat arrays, whatever runs them (docs/deployment.md).

A backend is anything with `num_exits`, `boosted` and `run(n, inputs) -> outputs` over the
arrays of :mod:`boostnet.deployment.stages`: the project's own modules (eager PyTorch),
programs loaded from `torch.export` files, or ONNX Runtime sessions. The runner speaks NumPy,
the one array type every backend reads without a copy: ONNX Runtime takes and returns NumPy
arrays, and :class:`TorchStages` wraps them as tensors at its edge (`torch.from_numpy` and
`Tensor.numpy` share memory). At batch 1 a torch round trip per stage would cost about a tenth
of the smallest stage's time. :func:`classify` sends a batch through stage after stage and lets
each sample leave at the first exit whose confidence reaches its threshold, exactly as
:func:`boostnet.evaluation.early_exit.early_exit_predict` does; only the samples still running
reach the next stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import nn


class StageBackend(Protocol):
    """What :func:`classify` needs of a backend."""

    num_exits: int
    boosted: bool

    def run(self, n: int, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Stage n's outputs (features..., output, confidence, predicted) for its inputs."""
        ...


@dataclass
class Decisions:
    """Per sample: predicted class, 0-based exit taken, and the confidence at that exit."""

    classes: np.ndarray
    exits: np.ndarray
    confidences: np.ndarray


class TorchStages:
    """Stages as PyTorch modules (the project's FlatStage, or a loaded torch.export program), on
    the CPU: arrays in and out are shared with the tensors, not copied."""

    def __init__(self, modules: Sequence[nn.Module], boosted: bool):
        self.modules = list(modules)
        self.num_exits = len(self.modules)
        self.boosted = boosted

    @torch.inference_mode()
    def run(self, n: int, inputs: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self.modules[n](*(torch.from_numpy(array) for array in inputs))
        return [tensor.numpy() for tensor in outputs]


class OnnxStages:
    """Stages as ONNX Runtime sessions, fed by the input names each graph declares."""

    def __init__(self, sessions: Sequence[Any], boosted: bool):
        self.sessions = list(sessions)
        self.names = [[node.name for node in session.get_inputs()] for session in self.sessions]
        self.num_exits = len(self.sessions)
        self.boosted = boosted

    def run(self, n: int, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.sessions[n].run(None, dict(zip(self.names[n], inputs)))


def as_images(images: Any) -> np.ndarray:
    """A batch (array or CPU tensor) as the contiguous float32 array stage 0 reads."""
    return np.ascontiguousarray(images, dtype=np.float32)


def classify(backend: StageBackend, images: Any, thresholds: Sequence[float]) -> Decisions:
    """Early exit of `images` (array or CPU tensor) through `backend`'s stages at `thresholds`.

    Who leaves is decided in NumPy on each stage's outputs (a few microseconds per stage);
    features are gathered only when some samples left.
    """
    if len(thresholds) != backend.num_exits:
        raise ValueError(f"need {backend.num_exits} thresholds, got {len(thresholds)}")
    inputs = [as_images(images)]
    batch = len(inputs[0])
    classes = np.empty(batch, dtype=np.int64)
    exits = np.empty(batch, dtype=np.int64)
    confidences = np.empty(batch, dtype=np.float32)
    remaining = np.arange(batch)
    for n in range(backend.num_exits):
        *features, output, confidence, predicted = backend.run(n, inputs)
        classes[remaining], exits[remaining], confidences[remaining] = predicted, n, confidence
        staying = np.flatnonzero(~(confidence >= thresholds[n]))
        if n == backend.num_exits - 1 or staying.size == 0:
            break
        if staying.size < remaining.size:
            remaining = remaining[staying]
            features, output = [array[staying] for array in features], output[staying]
        inputs = features + ([output] if backend.boosted else [])
    return Decisions(classes, exits, confidences)


def full_network(backend: StageBackend, images: Any) -> np.ndarray:
    """Every stage on every sample (no exit): the last exit's output, for timing the full network."""
    return stage_outputs(backend, images)[-1]


def stage_outputs(backend: StageBackend, images: Any) -> list[np.ndarray]:
    """Every exit's output F_n for every sample (exits x samples x classes), for agreement checks."""
    inputs, outputs = [as_images(images)], []
    for n in range(backend.num_exits):
        *features, output, _, _ = backend.run(n, inputs)
        outputs.append(output)
        inputs = features + ([output] if backend.boosted else [])
    return outputs
