"""Tiny trained models and run directories (written per the run-directory contract) for evaluation tests."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from args import parse_args
from models import MultiExitNetwork, build_model
from models.boosting import ExitObjective, build_boosted, build_objective
from tests.conftest import TINY_MSDNET
from utils.checkpoint import save_checkpoint
from boostnet.data.loaders import build_splits
from boostnet.runs.records import BEST_CHECKPOINT, LATEST_CHECKPOINT, write_config
from boostnet.runs.layout import run_config

TINY_DIGITS = TINY_MSDNET + ["--dataset", "digits", "--workers", "0", "--device", "cpu",
                             "--eval-batch-size", "64"]
TRAIN_STEPS = 6
TRAIN_BATCH = 32


def file_states(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `run_dir` with its bytes and modification time (to assert none changed)."""
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in run_dir.rglob("*") if p.is_file()}


def tiny_args(*extra: str) -> argparse.Namespace:
    return parse_args(TINY_DIGITS + list(extra))


def boosted_recurrence(logits: list[torch.Tensor], factors: list[float]) -> list[torch.Tensor]:
    """F_1 = f_1, F_n = f_n + r_n F_{n-1}, written out by hand (the reference for BoostedNetwork)."""
    outputs = [logits[0]]
    for n in range(1, len(logits)):
        outputs.append(logits[n] + factors[n] * outputs[n - 1])
    return outputs


def train_briefly(model: MultiExitNetwork, objective: ExitObjective, dataset: Dataset,
                  args: argparse.Namespace, steps: int = TRAIN_STEPS) -> None:
    """A few SGD steps so the exits' confidences are spread like a trained model's; ends in eval mode."""
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    network = build_boosted(args, model)
    model.train()
    done = 0
    while done < steps:
        for images, targets in DataLoader(dataset, batch_size=TRAIN_BATCH, shuffle=True):
            loss, _ = objective(network.training_outputs(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    model.eval()


def save_run(run_dir: Path, args: argparse.Namespace, model: MultiExitNetwork,
             objective: ExitObjective) -> Path:
    """config.json, model_latest.pth and its copy model_best.pth, as training writes them after
    an epoch that is the best so far; returns the latest checkpoint's path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_config(args)
    write_config(run_dir, config)
    checkpoint = run_dir / LATEST_CHECKPOINT
    save_checkpoint({"model": model.state_dict(), "optimizer": {}, "scheduler": {},
                     "objective": objective.state_dict(), "epoch": 1, "rng": {}, "config": config,
                     "best_metric": 0.0}, checkpoint, [run_dir / BEST_CHECKPOINT])
    return checkpoint


def trained_model(args: argparse.Namespace, dataset: Dataset) -> tuple[MultiExitNetwork, ExitObjective]:
    torch.manual_seed(args.seed)
    model = build_model(args)
    objective = build_objective(args, model.num_exits)
    train_briefly(model, objective, dataset, args)
    return model, objective


def make_trained_run(run_dir: Path, *extra: str) -> Path:
    """A briefly trained tiny digits run with a validation split (split.json) in `run_dir`."""
    args = tiny_args("--use-valid", "--result_dir", str(run_dir), *extra)
    run_dir.mkdir(parents=True, exist_ok=True)
    splits = build_splits(args, run_dir)
    model, objective = trained_model(args, splits.train)
    save_run(run_dir, args, model, objective)
    return run_dir
