"""Real early-exit inference: run exit by exit and stop computing for samples that are done.

A sample leaves at the first exit whose confidence (largest softmax probability of that
exit's evaluation-time output) reaches the exit's threshold, exactly as the simulated
budgeted-batch protocol (SPEC §6) decides it; the last exit takes whoever is left.
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

from models import select_samples
from models.boosting import BoostedNetwork
from models.multi_exit import Features
from utils.cuda_graphs import ShapeGraphs, require_cuda, tensor_leaves
from utils.fast_step import build_eval_forward


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

    def stage(n: int, features: Features, previous: Optional[Tensor]
              ) -> tuple[Features, Tensor, Tensor, Tensor]:
        if n == 0:
            features = backbone.stem(features)
        features = backbone.advance(n, features)
        output = model.combine(n, backbone.classify(n, features), previous)
        confidence, predicted = torch.softmax(output, dim=1).max(dim=1)
        return features, output, confidence, predicted
    return stage


@torch.inference_mode()
def early_exit_predict(model: BoostedNetwork, images: Tensor, thresholds: Sequence[float],
                       stage: ExitStage | None = None) -> EarlyExitResult:
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
        predictions[remaining] = predicted
        exit_index[remaining] = n
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


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(step: Callable[[Tensor], object], images: Tensor, device: torch.device) -> float:
    """Wall-clock time of one call of `step` on `images`, queued GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    step(images)
    synchronize(device)
    return time.perf_counter() - start


@dataclass
class Throughput:
    """Images/s of the full network and of early exit, and the speed-up of early exit."""

    full_network: float
    early_exit: float
    speedup: float


def paired_throughput(full_network: Callable[[Tensor], object], early_exit: Callable[[Tensor], object],
                      batches: Sequence[Tensor], device: torch.device, repeats: int) -> Throughput:
    """Both paths timed back to back on every batch (alternating which goes first), summarised by medians.

    Pairs close in time share the machine's background load, so the median ratio of a pair's
    times is a stable speed-up even on a busy machine; one warm-up call of each comes first.
    """
    full_network(batches[0])
    early_exit(batches[0])
    full_times, early_times, ratios = [], [], []
    for repeat in range(repeats):
        for images in batches:
            if repeat % 2:
                early, full = seconds(early_exit, images, device), seconds(full_network, images, device)
            else:
                full, early = seconds(full_network, images, device), seconds(early_exit, images, device)
            full_times.append(full / len(images))
            early_times.append(early / len(images))
            ratios.append(full / early)
    return Throughput(full_network=1 / statistics.median(full_times),
                      early_exit=1 / statistics.median(early_times), speedup=statistics.median(ratios))


def early_exit_throughput(model: BoostedNetwork, batches: Sequence[Tensor],
                          thresholds: Sequence[float], device: torch.device,
                          repeats: int) -> Throughput:
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

    return paired_throughput(full_network, early_exit,
                             [images.contiguous(memory_format=torch.channels_last) for images in batches],
                             device, repeats)
