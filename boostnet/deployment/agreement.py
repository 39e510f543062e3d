"""Does an export decide as the network it came from? (docs/deployment.md#agreement)

Over test images, the exported stages' outputs are compared with the PyTorch network's
evaluation-time outputs F_n (relative error: the largest absolute difference of an exit's
output for a sample over that output's largest magnitude), and real early exit through the
export with the simulated protocol applied to the PyTorch outputs, at every threshold setting
of the policy: same exit and same class for every sample, except near-ties. A sample is a
near-tie at a setting when one of the confidences the protocol compares with a threshold lies
within TIE_TOLERANCE of it, or when the top two probabilities at its exit are that close: another
runtime's float rounding may legitimately decide those either way, so they are counted and
reported apart, never hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from adaptive_inference import exit_indices
from boostnet.deployment.runner import StageBackend, classify, stage_outputs
from boostnet.evaluation.policy import Setting
from models.boosting import BoostedNetwork

TIE_TOLERANCE = 1e-5
RELATIVE_TOLERANCE = 1e-4  # the largest relative error of an exported exit output that agrees


@dataclass(frozen=True)
class ProtocolDecisions:
    """Per sample, under one setting: the exit (0-based), the class, and whether it is a near-tie."""

    exits: Tensor
    classes: Tensor
    near_tie: Tensor


def protocol_decisions(outputs: Tensor, thresholds: Sequence[float]) -> ProtocolDecisions:
    """The simulated protocol's decisions on exit outputs (exits x samples x classes), with the
    probabilities evaluation computes (float32 softmax)."""
    probs = torch.softmax(outputs.float(), dim=2)
    exits = exit_indices(probs, thresholds)
    samples = torch.arange(probs.shape[1])
    at_exit = probs[exits, samples]
    confidence = probs.max(dim=2).values
    margin = (confidence - torch.tensor(thresholds, dtype=confidence.dtype).unsqueeze(1)).abs()
    compared = torch.arange(len(thresholds)).unsqueeze(1) <= exits.unsqueeze(0)
    near_threshold = ((margin <= TIE_TOLERANCE) & compared)[:-1].any(dim=0)  # the last exit compares none
    top2 = at_exit.topk(2, dim=1).values
    return ProtocolDecisions(
        exits, at_exit.argmax(dim=1), near_threshold | (top2[:, 0] - top2[:, 1] <= TIE_TOLERANCE)
    )


@dataclass
class SettingAgreement:
    """Counts of one setting: same exit and class, near-ties (and how many of them differ), and
    samples that differ without being near-ties (an export that agrees has none)."""

    setting: str
    same: int = 0
    near_ties: int = 0
    near_ties_differing: int = 0
    differing: int = 0

    def add(self, reference: ProtocolDecisions, exits: np.ndarray, classes: np.ndarray) -> None:
        differs = (torch.from_numpy(exits) != reference.exits) | (
            torch.from_numpy(classes) != reference.classes
        )
        self.same += int((~differs).sum())
        self.near_ties += int(reference.near_tie.sum())
        self.near_ties_differing += int((differs & reference.near_tie).sum())
        self.differing += int((differs & ~reference.near_tie).sum())


@dataclass
class Agreement:
    """The comparison over all images: per-exit largest relative error, per-setting counts."""

    settings: list[SettingAgreement]
    max_relative_error: list[float] = field(default_factory=list)
    samples: int = 0

    @property
    def agrees(self) -> bool:
        """Outputs within RELATIVE_TOLERANCE and no decision that differs outside the near-ties."""
        return max(self.max_relative_error, default=0.0) <= RELATIVE_TOLERANCE and not any(
            entry.differing for entry in self.settings
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "agrees": self.agrees,
            "relative_tolerance": RELATIVE_TOLERANCE,
            "tie_tolerance": TIE_TOLERANCE,
            "max_relative_error": self.max_relative_error,
            "settings": [vars(entry) for entry in self.settings],
        }

    def summary(self) -> str:
        """One line: samples, largest error, near-ties and differences over all settings."""
        decisions = self.samples * len(self.settings)
        ties = sum(entry.near_ties for entry in self.settings)
        differing = sum(entry.differing for entry in self.settings)
        return (
            f"{'agrees' if self.agrees else 'DIFFERS'} on {self.samples} test images: largest relative "
            f"error of an exit output {max(self.max_relative_error, default=0.0):.2g} (tolerance "
            f"{RELATIVE_TOLERANCE:g}); over {len(self.settings)} settings, {differing} of {decisions} "
            f"decisions differ outside {ties} near-ties ({ties / max(decisions, 1):.2%}, "
            f"{sum(entry.near_ties_differing for entry in self.settings)} of them decided otherwise)"
        )


def relative_errors(exported: Sequence[np.ndarray], reference: Sequence[Tensor]) -> list[float]:
    """Per exit, the largest over samples of max |exported - reference| / max |reference| (an
    all-zero reference row divides by the smallest float32, so equal zeros agree; NaN counts as
    infinite error)."""
    errors = []
    for output, expected in zip(exported, reference):
        difference = (torch.from_numpy(output).double() - expected.double()).abs().amax(dim=1)
        scale = expected.double().abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
        error = (difference / scale).max().item()
        errors.append(math.inf if math.isnan(error) else error)  # a NaN output never agrees
    return errors


@torch.inference_mode()
def measure_agreement(
    network: BoostedNetwork, backend: StageBackend, settings: Sequence[Setting], batches: Iterable[Tensor]
) -> Agreement:
    """Compare `backend` (the export) with `network` (eval mode, CPU) over `batches` of images."""
    result = Agreement([SettingAgreement(setting.name) for setting in settings])
    for images in batches:
        reference = network.eval()(images)
        exported = stage_outputs(backend, images)
        errors = relative_errors(exported, reference)
        result.max_relative_error = [max(pair) for pair in zip(result.max_relative_error or errors, errors)]
        stacked = torch.stack(reference)
        for counts, setting in zip(result.settings, settings):
            decisions = classify(backend, images, setting.thresholds)
            counts.add(protocol_decisions(stacked, setting.thresholds), decisions.exits, decisions.classes)
        result.samples += len(images)
    return result
