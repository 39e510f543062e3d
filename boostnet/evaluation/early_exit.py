"""Real early-exit inference: run exit by exit and stop computing for samples that are done.

A sample leaves at the first exit whose confidence (largest softmax probability of that
exit's evaluation-time output) reaches the exit's threshold, exactly as the simulated
budgeted-batch protocol (docs/evaluation.md) decides it; the last exit takes whoever is left.
Every stage carries the running output F_{n-1} of the remaining samples along, and the
:class:`~models.boosting.BoostedNetwork` combines it with the exit's logits.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from boostnet.training.step import build_eval_forward
from models.boosting import BoostedNetwork
from models.multi_exit import Features, select_samples
from utils.cuda_graphs import ShapeGraphs, require_cuda, tensor_leaves


@dataclass
class EarlyExitResult:
    """Per-sample predicted class and the 0-based exit that produced it."""

    predictions: Tensor
    exit_index: Tensor


def inference_model(model: BoostedNetwork) -> BoostedNetwork:
    """An eval-mode copy for timing: every Conv2d+BatchNorm2d pair folded into one conv, channels_last.

    Outputs equal the original's up to float rounding; the full network and early exit are
    timed on the same copy so their comparison stays fair.
    """
    fast = copy.deepcopy(model).eval()
    for module in fast.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
    return fast.to(memory_format=torch.channels_last)


ExitStage = Callable[[int, Features, Optional[Tensor]], tuple[Features, Tensor, Tensor, Tensor]]


def exit_stage(model: BoostedNetwork) -> ExitStage:
    """Stage n of early exit: (features, or the images for n = 0; the previous output F_{n-1})
    -> (features, output of exit n, confidence, predicted class)."""
    backbone = model.network

    def stage(
        n: int, features: Features, previous: Optional[Tensor]
    ) -> tuple[Features, Tensor, Tensor, Tensor]:
        if n == 0:
            features = backbone.stem(features)
        features = backbone.advance(n, features)
        output = model.combine(n, backbone.classify(n, features), previous)
        confidence, predicted = torch.softmax(output, dim=1).max(dim=1)
        return features, output, confidence, predicted

    return stage


@torch.inference_mode()
def early_exit_predict(
    model: BoostedNetwork, images: Tensor, thresholds: Sequence[float], stage: ExitStage | None = None
) -> EarlyExitResult:
    """Classify `images` with `model`'s exit outputs, dropping samples as they exit.

    One `nonzero` per exit is the only host synchronisation (deciding who stays needs the
    count); predictions are written for every remaining sample and overwritten by later exits.
    `stage` replaces `exit_stage(model)`, e.g. by :class:`GraphedExitStages`.
    """
    if len(thresholds) != model.num_exits:
        raise ValueError(f"need {model.num_exits} thresholds, got {len(thresholds)}")
    stage = stage or exit_stage(model)
    batch = images.shape[0]
    predictions = torch.empty(batch, dtype=torch.long, device=images.device)
    exit_index = torch.empty(batch, dtype=torch.long, device=images.device)
    remaining = torch.arange(batch, device=images.device)
    features: Features = images
    previous: Tensor | None = None
    for n in range(model.num_exits):
        features, output, confidence, predicted = stage(n, features, previous)
        predictions.index_copy_(0, remaining, predicted)
        exit_index.index_fill_(0, remaining, n)  # a scalar argument: `[remaining] = n` copies n to the GPU
        if n == model.num_exits - 1:
            break
        staying = torch.nonzero(~(confidence >= thresholds[n])).squeeze(1)
        if len(staying) == 0:
            break
        if len(staying) < len(remaining):
            remaining = remaining[staying]
            features = select_samples(features, staying)
            output = output[staying]
        previous = output
    return EarlyExitResult(predictions, exit_index)


class GraphedExitStages(ShapeGraphs):
    """Exit stages replayed from one CUDA graph each for sub-batches of `batch_size` samples.

    Early exit at batch 1 is all launch overhead on a GPU; each stage (blocks, head, ensemble,
    softmax) becomes one replay, captured the first time a sub-batch of that size reaches it.
    A stage's inputs are copied into its static buffers unless they already are them (the
    previous stage's outputs, when nobody left), so a sample that stays pays no copies. Other
    sub-batch sizes (after some samples left a larger batch) run the eager stage.
    """

    def __init__(self, stage: ExitStage, batch_size: int, device: torch.device):
        require_cuda(device, "GraphedExitStages", "use the eager stage")

        def full_batch_stage(n: int, features: Features, previous: Optional[Tensor]) -> Optional[int]:
            """Stage n's graph for a sub-batch of `batch_size` samples, none for other sizes."""
            return n if tensor_leaves((features, previous))[0].shape[0] == batch_size else None

        super().__init__(stage, stage, key=full_batch_stage, copy_outputs=False)


def expected_cost(exit_counts: Tensor, costs: Sequence[float]) -> float:
    """Average multiply-adds per sample: sum_n (share leaving at exit n) * cost of exit n."""
    counts = exit_counts.double().cpu()
    return (counts @ torch.tensor(costs, dtype=torch.float64)).item() / counts.sum().item()


PAIRED_GROUP_IMAGES = 32  # images timed with one path before the other runs (paired_throughput)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pass_seconds(step: Callable[[Tensor], object], batches: Sequence[Tensor], device: torch.device) -> float:
    """Wall-clock time of one call of `step` per batch, all batches in a row, queued GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    for images in batches:
        step(images)
    synchronize(device)
    return time.perf_counter() - start


@dataclass
class Throughput:
    """Images/s of the full network and of early exit over the same images, and what they imply.

    Each rate is the median over `repeats` timed passes over all `images`; `speedup` is the
    ratio of those two medians, and `paired_speedup_range` the smallest and largest ratio of
    early exit's rate to the full network's within one repetition (their spread).
    """

    full_network: float
    early_exit: float
    speedup: float
    paired_speedup_range: tuple[float, float]
    repeats: int
    images: int

    def as_json(self) -> dict:
        """The figures as JSON fields (shared by real_exit.json and the benchmark report)."""
        return {
            "images_per_second": {"full_network": self.full_network, "early_exit": self.early_exit},
            "speedup": self.speedup,
            "paired_speedup_range": list(self.paired_speedup_range),
            "timing_repeats": self.repeats,
            "timed_images": self.images,
        }

    def summary(self) -> str:
        """One line whose speed-up is the ratio of the two rates it prints."""
        low, high = self.paired_speedup_range
        return (
            f"early exit {self.early_exit:.1f} images/s vs full network {self.full_network:.1f} "
            f"images/s, {self.speedup:.2f}x (medians of {self.repeats} paired passes over "
            f"{self.images} images; per-pass ratio {low:.2f}-{high:.2f}x)"
        )


def paired_groups(batches: Sequence[Tensor], group_images: int) -> list[Sequence[Tensor]]:
    """Consecutive whole batches, each group holding at least `group_images` images (the last
    group may hold fewer)."""
    groups, start, images = [], 0, 0
    for end, batch in enumerate(batches, start=1):
        images += len(batch)
        if images >= group_images or end == len(batches):
            groups.append(batches[start:end])
            start, images = end, 0
    return groups


def paired_throughput(
    full_network: Callable[[Tensor], object],
    early_exit: Callable[[Tensor], object],
    batches: Sequence[Tensor],
    device: torch.device,
    repeats: int,
    group_images: int = PAIRED_GROUP_IMAGES,
) -> Throughput:
    """Each repetition times one pass over all `batches` with each path, interleaved: every group
    of consecutive batches (:func:`paired_groups`) runs with one path, then the other (which goes
    first alternates), and a path's pass time is the sum over groups. Rates are medians over
    repetitions, the spread from the per-repetition ratios.

    The two halves of a pair share the machine's load only when they are close in time: on this
    project's shared 2-core CPU, four runs of the deployment benchmark's batch-1 ONNX Runtime
    row gave speed-ups spread over 1.92-2.22x when whole passes (about a second each) were
    paired, 1.87-1.92x when groups of 32 images were. One warm-up call of each path comes first.
    """
    if repeats < 1:
        raise ValueError(f"need at least one timed repetition, got {repeats}")
    full_network(batches[0])
    early_exit(batches[0])
    groups = paired_groups(batches, group_images)
    images = sum(len(batch) for batch in batches)
    full_rates, early_rates = [], []
    for repeat in range(repeats):
        full = early = 0.0
        for k, group in enumerate(groups):
            if (repeat + k) % 2:
                early += pass_seconds(early_exit, group, device)
                full += pass_seconds(full_network, group, device)
            else:
                full += pass_seconds(full_network, group, device)
                early += pass_seconds(early_exit, group, device)
        full_rates.append(images / full)
        early_rates.append(images / early)
    ratios = [early_rate / full_rate for early_rate, full_rate in zip(early_rates, full_rates)]
    full_rate, early_rate = statistics.median(full_rates), statistics.median(early_rates)
    return Throughput(
        full_network=full_rate,
        early_exit=early_rate,
        speedup=early_rate / full_rate,
        paired_speedup_range=(min(ratios), max(ratios)),
        repeats=repeats,
        images=images,
    )


def early_exit_throughput(
    model: BoostedNetwork,
    batches: Sequence[Tensor],
    thresholds: Sequence[float],
    device: torch.device,
    repeats: int,
) -> Throughput:
    """Images/s of the full network and of real early exit, both on one inference copy of `model`.

    On a GPU both replay CUDA graphs: the full network one at the first batch's shape, early exit
    one per exit stage while a sub-batch keeps the first batch's size (other sizes run eagerly).
    """
    fast = inference_model(model)
    graphs = device.type == "cuda"
    full_network = build_eval_forward(fast, "cuda_graph" if graphs else "eager")
    stages = GraphedExitStages(exit_stage(fast), len(batches[0]), device) if graphs else None

    def early_exit(images: Tensor) -> EarlyExitResult:
        return early_exit_predict(fast, images, thresholds, stages)

    return paired_throughput(
        full_network,
        early_exit,
        [images.contiguous(memory_format=torch.channels_last) for images in batches],
        device,
        repeats,
    )
