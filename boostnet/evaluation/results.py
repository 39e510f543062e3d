"""What an evaluation computes, as plain records: per-exit outputs (cached per checkpoint), the
anytime rows, the budgeted-batch sweep, the `--budget` choice and real early exit. Nothing here
prints or writes a result file (boostnet/evaluation/tables.py formats, outputs.py writes)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from adaptive_inference import apply_thresholds, budgeted_sweep, exit_indices, thresholds_for_budget
from boostnet.data.loaders import eval_loader
from boostnet.evaluation.early_exit import early_exit_predict, early_exit_throughput, expected_cost
from boostnet.evaluation.loading import LoadedRun
from models.multi_exit import MultiExitNetwork
from utils.checkpoint import save_checkpoint
from utils.distributed import DistInfo
from utils.errors import UserError
from utils.metrics import expected_calibration_error, negative_log_likelihood, topk_accuracy

CACHE_DIR = "cache"
DIGEST_CHARS = 16
TOP_K = (1, 5)
TIMED_BATCHES = 4
TIMING_REPEATS = 10


@dataclass
class SplitOutputs:
    """Evaluation-time per-exit outputs F_n, their probabilities (exits x samples x classes) and
    the targets of one split."""

    outputs: Tensor
    probs: Tensor
    targets: Tensor

    @property
    def samples(self) -> int:
        return self.probs.shape[1]


def data_loader(dataset: Dataset, run: LoadedRun) -> DataLoader:
    """Evaluation batches of the whole of `dataset`, in order."""
    data = run.job.data
    return eval_loader(dataset, data.eval_batch_size, data.workers, DistInfo(), run.device)


@torch.inference_mode()
def compute_logits(
    model: MultiExitNetwork, loader: DataLoader, device: torch.device, description: str
) -> tuple[Tensor, Tensor]:
    """Raw per-exit logits f_n (exits x samples x classes) and targets of every sample, on the CPU."""
    logits, targets = [], []
    for images, labels in tqdm(loader, desc=description, unit="batch", leave=False, disable=None):
        outputs = model(images.to(device, non_blocking=True))
        logits.append(torch.stack(outputs).float().cpu())
        targets.append(labels)
    return torch.cat(logits, dim=1), torch.cat(targets)


def read_cache(cache_file: Path, samples: int) -> tuple[Tensor, Tensor] | None:
    """Cached (logits, targets) of `samples` samples, or None when absent, unreadable or of another size."""
    try:
        cached = torch.load(cache_file, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None
    if not isinstance(cached, dict) or cached.get("logits") is None or cached["logits"].shape[1] != samples:
        return None
    return cached["logits"], cached["targets"]


def cached_logits(run: LoadedRun, dataset: Dataset, split: str) -> tuple[Tensor, Tensor]:
    """Per-exit logits of a split, from the run's cache when these weights of this checkpoint already
    produced them (the --model-ema average's under a name of its own)."""
    weights = "_ema" if run.weights == "ema" else ""
    cache_file = (
        run.job.run_dir / CACHE_DIR / f"logits_{split}_{run.checkpoint.digest[:DIGEST_CHARS]}{weights}.pt"
    )
    cached = read_cache(cache_file, len(dataset))
    if cached is not None:
        return cached
    logits, targets = compute_logits(
        run.network.backbone, data_loader(dataset, run), run.device, f"{run.name} {split}"
    )
    cache_file.parent.mkdir(exist_ok=True)
    save_checkpoint({"logits": logits, "targets": targets}, cache_file)
    return logits, targets


def split_outputs(run: LoadedRun, dataset: Dataset, split: str) -> SplitOutputs:
    """Outputs, probabilities (their softmax) and targets of one split (logits cached per checkpoint)."""
    logits, targets = cached_logits(run, dataset, split)
    outputs = torch.stack(run.network.ensemble(list(logits)))
    return SplitOutputs(outputs, torch.softmax(outputs, dim=2), targets)


def anytime_rows(run: LoadedRun, outputs: SplitOutputs) -> list[dict[str, Any]]:
    """One row per exit: cumulative multiply-adds, parameters, top-1 / top-5 accuracy, NLL, ECE."""
    top1, top5 = (topk_accuracy(outputs.probs, outputs.targets, k) for k in TOP_K)
    nll = negative_log_likelihood(outputs.probs, outputs.targets)
    ece = expected_calibration_error(outputs.probs, outputs.targets)
    costs = run.costs
    return [
        {
            "exit": n + 1,
            "macs": costs.macs[n],
            "params": costs.params[n],
            "top1": top1[n],
            "top5": top5[n],
            "nll": nll[n],
            "ece": ece[n],
        }
        for n in range(len(top1))
    ]


def early_exit_calibration(outputs: SplitOutputs, thresholds: Sequence[float]) -> dict[str, float]:
    """ECE and NLL of the predictions early exit at `thresholds` makes: each sample's
    probabilities at the exit it leaves at."""
    exits = exit_indices(outputs.probs, thresholds)
    made = outputs.probs[exits, torch.arange(outputs.samples)].unsqueeze(0)
    return {
        "test_ece": expected_calibration_error(made, outputs.targets)[0],
        "test_nll": negative_log_likelihood(made, outputs.targets)[0],
    }


def budgeted_levels(run: LoadedRun, val: SplitOutputs, test: SplitOutputs) -> list[dict[str, Any]]:
    """The 39-level sweep, each record with the test ECE / NLL of the predictions behind its
    test accuracy (under --flat_curve those of the accuracy level's thresholds)."""
    levels = [
        level.to_dict()
        for level in budgeted_sweep(
            val.probs,
            val.targets,
            test.probs,
            test.targets,
            run.costs.macs,
            flat_curve=run.job.evaluation.flat_curve,
        )
    ]
    thresholds = {level["level"]: level["thresholds"] for level in levels}
    return [
        {**level, **early_exit_calibration(test, thresholds[level["accuracy_level"]])} for level in levels
    ]


def budget_result(run: LoadedRun, val: SplitOutputs, test: SplitOutputs, budget: float) -> dict[str, Any]:
    """The thresholds most accurate on validation within `budget` and their test outcome."""
    try:
        choice = thresholds_for_budget(val.probs, val.targets, run.costs.macs, budget)
    except ValueError as error:
        raise UserError(f"--budget {budget:g}: {error}") from None
    accuracy, cost, counts = apply_thresholds(test.probs, test.targets, choice.thresholds, run.costs.macs)
    return {
        "budget": budget,
        **choice.to_dict(),
        "test_accuracy": accuracy,
        **early_exit_calibration(test, choice.thresholds),
        "test_expected_cost": cost,
        "test_exit_counts": counts.tolist(),
    }


def timed_batches(run: LoadedRun, dataset: Dataset) -> tuple[list[Tensor], Tensor]:
    """The first TIMED_BATCHES test batches, already on the device, and their targets."""
    images, targets = [], []
    for batch_images, batch_targets in data_loader(dataset, run):
        images.append(batch_images.to(run.device))
        targets.append(batch_targets)
        if len(images) == TIMED_BATCHES:
            break
    return images, torch.cat(targets)


def real_exit_result(
    run: LoadedRun, dataset: Dataset, test: SplitOutputs, thresholds: list[float]
) -> dict[str, Any]:
    """Real early exit on the first test batches: its exits against the simulation, and its
    measured images/s beside the full network's (`speed`: the Throughput object)."""
    batches, targets = timed_batches(run, dataset)
    results = [early_exit_predict(run.network, images, thresholds) for images in batches]
    predictions = torch.cat([result.predictions for result in results]).cpu()
    counts = torch.bincount(
        torch.cat([result.exit_index for result in results]).cpu(), minlength=run.network.num_exits
    )
    samples = len(targets)
    simulated_accuracy, simulated_cost, simulated_counts = apply_thresholds(
        test.probs[:, :samples], test.targets[:samples], thresholds, run.costs.macs
    )
    speed = early_exit_throughput(run.network, batches, thresholds, run.device, TIMING_REPEATS)
    return {
        "device": str(run.device),
        "batch_size": run.job.data.eval_batch_size,
        "cuda_graphs": run.device.type == "cuda",
        "samples": samples,
        "thresholds": thresholds,
        **speed.as_json(),
        "full_cost": run.costs.macs[-1],
        "expected_cost": expected_cost(counts, run.costs.macs),
        "simulated_expected_cost": simulated_cost,
        "accuracy": (predictions == targets).sum().item() * 100.0 / samples,
        "simulated_accuracy": simulated_accuracy,
        "exit_counts": counts.tolist(),
        "simulated_exit_counts": simulated_counts.tolist(),
        "speed": speed,
    }
