"""The one evaluator behind eval_cifar100.py and eval_imagenet.py (docs/evaluation.md).

`--evaluate-from` names a run directory (its model_best.pth is evaluated, or with
`--checkpoint latest` its model_latest.pth) or a checkpoint file inside one; the first line
printed and every result file say which checkpoint was read and why. The model is
rebuilt from the run's config.json (device, workers and batch size included); flags given on
the command line override it, and the evaluation flags come from the command line only. Results
go to the run directory (anytime.*, budgeted.*, budget.json, real_exit.json, and cache/
holding per-exit logits keyed by the checkpoint's content hash); nothing else there is
touched. `--save-logits FILE.npz` also dumps every exit's outputs (docs/evaluation-outputs.md).
"""
from __future__ import annotations

import argparse
import csv
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from adaptive_inference import apply_thresholds, budgeted_sweep, exit_indices, thresholds_for_budget
from args import OneLineParser, TypedFlags, checked, parse_evaluation_args
from models import MultiExitNetwork, build_model
from models.boosting import BoostedNetwork, build_boosted
from utils.checkpoint import (file_digest, load_checkpoint, load_weights, save_checkpoint,
                              write_text_atomically)
from models.costs import ExitCosts, count_exit_costs
from boostnet.data.loaders import SPLIT_FILE, DataSplits, build_splits, eval_loader
from boostnet.data.datasets import dataset_info
from utils.distributed import DistInfo, resolve_device, use_threads
from boostnet.evaluation.early_exit import early_exit_predict, early_exit_throughput, expected_cost
from utils.errors import UserError
from boostnet.evaluation.checkpoint_choice import EvaluatedCheckpoint, checkpoint_path, describe_checkpoint
from utils.json_files import read_json, write_json
from boostnet.evaluation.logits_dump import SplitDump, check_dump_path, source_indices, write_logits_dump
from utils.metrics import expected_calibration_error, negative_log_likelihood, topk_accuracy
from boostnet.runs.records import CONFIG_FILE

COMMAND_LINE_ONLY = ("evaluate_from", "checkpoint", "evalmode", "flat_curve", "budget", "real_exit",
                     "save_logits")
CACHE_DIR = "cache"
DIGEST_CHARS = 16
TOP_K = (1, 5)
TIMED_BATCHES = 4
TIMING_REPEATS = 10


@dataclass
class LoadedRun:
    """A run ready to evaluate: resolved flags, where it lives, its network and costs."""

    args: argparse.Namespace
    run_dir: Path
    checkpoint: EvaluatedCheckpoint
    network: BoostedNetwork
    costs: ExitCosts
    device: torch.device

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name


@dataclass
class SplitOutputs:
    """Evaluation-time per-exit outputs F_n, their probabilities (exits x samples x classes) and
    the targets of one split."""

    outputs: Tensor
    probs: Tensor
    targets: Tensor




def run_config(run_dir: Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The training flags: the run's config.json, else the copy stored in the checkpoint."""
    config_file = run_dir / CONFIG_FILE
    if config_file.is_file():
        try:
            return read_json(config_file)
        except (OSError, ValueError) as error:
            raise UserError(f"--evaluate-from: cannot read {config_file}: {error}") from None
    if isinstance(checkpoint.get("config"), dict):
        return checkpoint["config"]
    raise UserError(f"--evaluate-from: {run_dir} has no {CONFIG_FILE} and the checkpoint carries no config")


def with_run_config(parser: OneLineParser, values: dict[str, Any], typed: dict[str, Any],
                    config: dict[str, Any]) -> argparse.Namespace:
    """The parsed evaluation flags over the run's saved training flags, checked."""
    saved = {key: value for key, value in config.items()
             if key not in typed and key not in COMMAND_LINE_ONLY and key != "program"}
    return checked(argparse.Namespace(**{**values, **saved}), parser)


def load_run(flags: TypedFlags) -> LoadedRun:
    """Resolve `--evaluate-from`, rebuild the model from the run's flags and load its weights."""
    parser, values, typed = flags
    run_dir, checkpoint_file = checkpoint_path(Path(typed["evaluate_from"]), typed.get("checkpoint"))
    checkpoint = load_checkpoint(checkpoint_file, flag="--evaluate-from")
    config = run_config(run_dir, checkpoint)
    args = with_run_config(parser, values, typed, config)
    use_threads(args.threads)
    model = build_model(args)
    load_weights(model, checkpoint["model"], checkpoint_file, "--evaluate-from",
                 "the run's config (different architecture or flags?)")
    costs = count_exit_costs(model, dataset_info(args).image_size)
    device = resolve_device(args.device, DistInfo())
    return LoadedRun(args=args, run_dir=run_dir,
                     checkpoint=describe_checkpoint(checkpoint_file, checkpoint, config,
                                                    file_digest(checkpoint_file)),
                     network=build_boosted(args, model.to(device).eval()), costs=costs,
                     device=device)


def data_loader(dataset: Dataset, run: LoadedRun) -> DataLoader:
    """Evaluation batches of the whole of `dataset`, in order."""
    return eval_loader(dataset, run.args.eval_batch_size, run.args.workers, DistInfo(), run.device)


@torch.inference_mode()
def compute_logits(model: MultiExitNetwork, loader: DataLoader, device: torch.device,
                   description: str) -> tuple[Tensor, Tensor]:
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
    """Per-exit logits of a split, from the run's cache when this checkpoint already produced them."""
    cache_file = run.run_dir / CACHE_DIR / f"logits_{split}_{run.checkpoint.digest[:DIGEST_CHARS]}.pt"
    cached = read_cache(cache_file, len(dataset))
    if cached is not None:
        return cached
    logits, targets = compute_logits(run.network.backbone, data_loader(dataset, run), run.device,
                                     f"{run.name} {split}")
    cache_file.parent.mkdir(exist_ok=True)
    save_checkpoint({"logits": logits, "targets": targets}, cache_file)
    return logits, targets


def split_outputs(run: LoadedRun, dataset: Dataset, split: str) -> SplitOutputs:
    """Outputs, probabilities (their softmax) and targets of one split (logits cached per checkpoint)."""
    logits, targets = cached_logits(run, dataset, split)
    outputs = torch.stack(run.network.ensemble(list(logits)))
    return SplitOutputs(outputs, torch.softmax(outputs, dim=2), targets)


def anytime_rows(outputs: SplitOutputs, costs: ExitCosts) -> list[dict[str, Any]]:
    """One row per exit: cumulative multiply-adds, parameters, top-1 / top-5 accuracy, NLL, ECE."""
    top1, top5 = (topk_accuracy(outputs.probs, outputs.targets, k) for k in TOP_K)
    nll = negative_log_likelihood(outputs.probs, outputs.targets)
    ece = expected_calibration_error(outputs.probs, outputs.targets)
    return [{"exit": n + 1, "macs": costs.macs[n], "params": costs.params[n], "top1": top1[n],
             "top5": top5[n], "nll": nll[n], "ece": ece[n]} for n in range(len(top1))]


def early_exit_calibration(outputs: SplitOutputs, thresholds: Sequence[float]) -> dict[str, float]:
    """ECE and NLL of the predictions early exit at `thresholds` makes: each sample's
    probabilities at the exit it leaves at."""
    exits = exit_indices(outputs.probs, thresholds)
    made = outputs.probs[exits, torch.arange(outputs.probs.shape[1])].unsqueeze(0)
    return {"test_ece": expected_calibration_error(made, outputs.targets)[0],
            "test_nll": negative_log_likelihood(made, outputs.targets)[0]}


def with_calibration(levels: list[dict[str, Any]], test: SplitOutputs) -> list[dict[str, Any]]:
    """Sweep records with the test ECE / NLL of the predictions behind their test accuracy
    (under --flat_curve those of the accuracy level's thresholds)."""
    thresholds = {level["level"]: level["thresholds"] for level in levels}
    return [{**level, **early_exit_calibration(test, thresholds[level["accuracy_level"]])}
            for level in levels]


def budgeted_rows(levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten sweep records into CSV rows with one threshold and exit-count column per exit."""
    rows = []
    for level in levels:
        row = {key: level[key] for key in ("level", "q", "expected_cost", "val_accuracy", "test_accuracy",
                                           "test_ece", "test_nll")}
        row.update({f"threshold_{n + 1}": t for n, t in enumerate(level["thresholds"])})
        row.update({f"exit_count_{n + 1}": c for n, c in enumerate(level["exit_counts"])})
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(path, text.getvalue())


def format_table(rows: list[dict[str, Any]], columns: dict[str, Callable[[Any], str]]) -> str:
    """Aligned text table of `rows` with one formatter per column."""
    cells = [list(columns)] + [[fmt(row[key]) for key, fmt in columns.items()] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells)


def mmacs(value: float) -> str:
    return f"{value / 1e6:.2f}M"


def percent(value: float) -> str:
    return f"{value:.2f}"


def four_places(value: float) -> str:
    return f"{value:.4f}"


def slash_joined(values: Sequence[Any]) -> str:
    return "/".join(map(str, values))


def run_header(run: LoadedRun) -> dict[str, Any]:
    """Identification shared by every output file."""
    return {"run": run.name, **run.checkpoint.header(),
            "arch": run.args.arch, "loss": run.args.loss, "dataset": run.args.dataset}


def evaluate_anytime(run: LoadedRun, test: SplitOutputs) -> None:
    """Per-exit accuracy and cost on the test split: printed, anytime.csv and anytime.json."""
    rows = anytime_rows(test, run.costs)
    print(f"anytime ({run.name}, {test.probs.shape[1]} test samples)")
    print(format_table(rows, {"exit": str, "macs": mmacs, "params": "{:,}".format, "top1": percent,
                              "top5": percent, "nll": four_places, "ece": four_places}))
    write_csv(run.run_dir / "anytime.csv", rows)
    write_json(run.run_dir / "anytime.json", {**run_header(run), "test_samples": test.probs.shape[1],
                                              "exits": rows})


def evaluate_dynamic(run: LoadedRun, val: SplitOutputs, test: SplitOutputs) -> None:
    """The 39-level budgeted-batch sweep: printed, budgeted.csv and budgeted.json."""
    levels = with_calibration([level.to_dict() for level in budgeted_sweep(
        val.probs, val.targets, test.probs, test.targets, run.costs.macs,
        flat_curve=run.args.flat_curve)], test)
    print(f"budgeted batch ({run.name}, {val.probs.shape[1]} validation / {test.probs.shape[1]} test"
          f"{', flat curve' if run.args.flat_curve else ''})")
    print(format_table(levels, {"level": str, "expected_cost": mmacs, "val_accuracy": percent,
                                "test_accuracy": percent, "test_ece": four_places,
                                "test_nll": four_places, "exit_counts": slash_joined}))
    write_csv(run.run_dir / "budgeted.csv", budgeted_rows(levels))
    write_json(run.run_dir / "budgeted.json", {
        **run_header(run), "flat_curve": run.args.flat_curve, "costs": run.costs.macs,
        "val_samples": val.probs.shape[1], "test_samples": test.probs.shape[1], "levels": levels})


def evaluate_budget(run: LoadedRun, val: SplitOutputs, test: SplitOutputs) -> list[float]:
    """Thresholds for `--budget` (most accurate on validation within it), their test result: budget.json."""
    try:
        choice = thresholds_for_budget(val.probs, val.targets, run.costs.macs, run.args.budget)
    except ValueError as error:
        raise UserError(f"--budget {run.args.budget:g}: {error}") from None
    accuracy, cost, counts = apply_thresholds(test.probs, test.targets, choice.thresholds,
                                              run.costs.macs)
    result = {**run_header(run), "budget": run.args.budget, **choice.to_dict(),
              "test_accuracy": accuracy, **early_exit_calibration(test, choice.thresholds),
              "test_expected_cost": cost, "test_exit_counts": counts.tolist()}
    print(f"budget {mmacs(run.args.budget)} ({run.name}): q {choice.q:.4g}, validation "
          f"{percent(choice.val_accuracy)}% at {mmacs(choice.val_expected_cost)}, test "
          f"{percent(accuracy)}% at {mmacs(cost)}, test exits {slash_joined(counts.tolist())}")
    write_json(run.run_dir / "budget.json", result)
    return choice.thresholds


def timed_batches(run: LoadedRun, dataset: Dataset) -> tuple[list[Tensor], Tensor]:
    """The first TIMED_BATCHES test batches, already on the device, and their targets."""
    images, targets = [], []
    for batch_images, batch_targets in data_loader(dataset, run):
        images.append(batch_images.to(run.device))
        targets.append(batch_targets)
        if len(images) == TIMED_BATCHES:
            break
    return images, torch.cat(targets)


def evaluate_real_exit(run: LoadedRun, dataset: Dataset, test: SplitOutputs,
                       thresholds: list[float]) -> None:
    """Real early exit on the first test batches: its exits against the simulation, and its
    measured images/s beside the full network's: printed and real_exit.json."""
    batches, targets = timed_batches(run, dataset)
    results = [early_exit_predict(run.network, images, thresholds) for images in batches]
    predictions = torch.cat([result.predictions for result in results]).cpu()
    counts = torch.bincount(torch.cat([result.exit_index for result in results]).cpu(),
                            minlength=run.network.num_exits)
    samples = len(targets)
    simulated_accuracy, simulated_cost, simulated_counts = apply_thresholds(
        test.probs[:, :samples], test.targets[:samples], thresholds, run.costs.macs)
    speed = early_exit_throughput(run.network, batches, thresholds, run.device, TIMING_REPEATS)
    result = {
        **run_header(run), "device": str(run.device), "batch_size": run.args.eval_batch_size,
        "cuda_graphs": run.device.type == "cuda",
        "samples": samples, "thresholds": thresholds,
        **speed.as_json(), "full_cost": run.costs.macs[-1],
        "expected_cost": expected_cost(counts, run.costs.macs),
        "simulated_expected_cost": simulated_cost,
        "accuracy": (predictions == targets).sum().item() * 100.0 / samples,
        "simulated_accuracy": simulated_accuracy,
        "exit_counts": counts.tolist(), "simulated_exit_counts": simulated_counts.tolist()}
    print(f"real early exit ({run.name}, {samples} test images, batch {run.args.eval_batch_size}, "
          f"{run.device}): {speed.summary()}; accuracy {percent(result['accuracy'])}% (simulated "
          f"{percent(simulated_accuracy)}%), exits {slash_joined(counts.tolist())}")
    write_json(run.run_dir / "real_exit.json", result)


def split_dump(outputs: SplitOutputs, dataset: Dataset) -> SplitDump:
    """What `--save-logits` keeps of one split: outputs, targets and the samples' source indices."""
    return SplitDump(outputs.outputs, outputs.targets, source_indices(dataset))


def save_logits(run: LoadedRun, splits: DataSplits, test: SplitOutputs, val: SplitOutputs | None) -> None:
    """`--save-logits`: the test split's outputs and, when it was evaluated, the validation split's."""
    path = Path(run.args.save_logits)
    write_logits_dump(path, split_dump(test, splits.test),
                      None if val is None else split_dump(val, splits.val), run.costs.macs, run_header(run))
    print(f"outputs of every exit ({'test and validation' if val is not None else 'test'} split) "
          f"written to {path}")


def has_validation_split(run: LoadedRun) -> bool:
    """Whether the run was trained with --use-valid (its split.json names the held-out images)."""
    return (run.run_dir / SPLIT_FILE).is_file()


def validation_only_flag(args: argparse.Namespace) -> str | None:
    """The requested evaluation that cannot run without a validation split, if any (`--evalmode
    both` can: it then runs anytime alone)."""
    if args.evalmode == "dynamic":
        return "--evalmode dynamic"
    return "--budget" if args.budget is not None else None


def uses_validation(run: LoadedRun) -> bool:
    """Whether this evaluation fits thresholds on the run's validation split."""
    wanted = run.args.evalmode != "anytime" or run.args.budget is not None
    return wanted and has_validation_split(run)


def check_request(run: LoadedRun) -> None:
    """Fail before any work when the request cannot be met by this run (what the flags and the
    exit costs alone decide, so no result file is rewritten before an error)."""
    args = run.args
    if args.save_logits is not None:
        check_dump_path(Path(args.save_logits))
    if args.real_exit and args.budget is None:
        raise UserError("--real-exit needs --budget X (multiply-adds per image) to choose its thresholds")
    flag = validation_only_flag(args)
    if flag is not None and not has_validation_split(run):
        raise UserError(f"{flag}: {run.run_dir} has no validation split ({SPLIT_FILE}; the run was "
                        f"trained without --use-valid) to fit thresholds on; use --evalmode anytime "
                        f"or train with --use-valid")
    cheapest = run.costs.macs[0]
    if args.budget is not None and args.budget < cheapest:
        raise UserError(f"--budget {args.budget:g}: below the cheapest setting (every sample leaving "
                        f"at exit 1), which costs {cheapest:g} multiply-adds per image")


def budgeted_skipped(run: LoadedRun) -> str:
    """Why `--evalmode both` ran anytime alone."""
    return (f"budgeted batch skipped: {run.run_dir} was trained without --use-valid, so it has no "
            f"validation split to fit thresholds on (train with --use-valid)")


def main(argv: Sequence[str] | None = None, prog: str | None = None, **defaults) -> None:
    """Parse the command line (`defaults`: the entry point's) and evaluate."""
    evaluate(parse_evaluation_args(argv, prog, **defaults))


def evaluate(flags: TypedFlags) -> None:
    """Evaluate the run `--evaluate-from` names in the modes the flags ask for."""
    run = load_run(flags)
    check_request(run)
    print(run.checkpoint.summary())
    args = run.args
    with_validation = uses_validation(run)
    splits = build_splits(argparse.Namespace(**{**vars(args), "use_valid": with_validation}),
                          run.run_dir)
    test = split_outputs(run, splits.test, "test")
    if args.evalmode in ("anytime", "both"):
        evaluate_anytime(run, test)
    val = split_outputs(run, splits.val, "val") if with_validation else None
    if args.evalmode in ("dynamic", "both"):
        if val is not None:
            evaluate_dynamic(run, val, test)
        else:
            print(budgeted_skipped(run))
    if args.budget is not None:
        thresholds = evaluate_budget(run, val, test)
        if args.real_exit:
            evaluate_real_exit(run, splits.test, test, thresholds)
    if args.save_logits is not None:
        save_logits(run, splits, test, val)
