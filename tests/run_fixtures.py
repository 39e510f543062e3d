"""Tiny trained models and run directories (written per the run-directory contract) for evaluation tests."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from args import parse_args
from boostnet.data.loaders import build_splits
from boostnet.runs.records import BEST_CHECKPOINT, LATEST_CHECKPOINT, write_config
from boostnet.training.settings import TrainingJob
from models.boosting import BoostedNetwork, ExitObjective
from models.multi_exit import MultiExitNetwork
from tests.conftest import TINY_MSDNET
from utils.checkpoint import save_checkpoint

TINY_DIGITS = TINY_MSDNET + [
    "--dataset",
    "digits",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--eval-batch-size",
    "64",
]
TRAIN_STEPS = 6
TRAIN_BATCH = 32


def file_states(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `run_dir` with its bytes and modification time (to assert none changed)."""
    return {
        str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in run_dir.rglob("*")
        if p.is_file()
    }


def tiny_job(*extra: str) -> TrainingJob:
    """The training job of the tiny digits model, with `extra` flags."""
    return parse_args(TINY_DIGITS + list(extra))


def network_of(job: TrainingJob, model: MultiExitNetwork) -> BoostedNetwork:
    """`model` read as the job's objective reads it (F_n for boost, f_n for joint)."""
    return job.objective.network(model, job.model.num_exits)


def losses_of(job: TrainingJob) -> ExitObjective:
    """The job's per-exit losses."""
    return job.objective.loss(job.model.num_exits)


def boosted_recurrence(logits: list[torch.Tensor], factors: list[float]) -> list[torch.Tensor]:
    """F_1 = f_1, F_n = f_n + r_n F_{n-1}, written out by hand (the reference for BoostedNetwork)."""
    outputs = [logits[0]]
    for n in range(1, len(logits)):
        outputs.append(logits[n] + factors[n] * outputs[n - 1])
    return outputs


def train_briefly(
    model: MultiExitNetwork,
    objective: ExitObjective,
    dataset: Dataset,
    job: TrainingJob,
    steps: int = TRAIN_STEPS,
) -> None:
    """A few SGD steps so the exits' confidences are spread like a trained model's; ends in eval mode."""
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    network = network_of(job, model)
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


def save_run(run_dir: Path, job: TrainingJob, model: MultiExitNetwork, objective: ExitObjective) -> Path:
    """config.json, model_latest.pth and its copy model_best.pth, as training writes them after
    an epoch that is the best so far; returns the latest checkpoint's path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = job.record
    write_config(run_dir, config)
    checkpoint = run_dir / LATEST_CHECKPOINT
    save_checkpoint(
        {
            "model": model.state_dict(),
            "optimizer": {},
            "scheduler": {},
            "objective": objective.state_dict(),
            "epoch": 1,
            "rng": {},
            "config": config,
            "best_metric": 0.0,
        },
        checkpoint,
        [run_dir / BEST_CHECKPOINT],
    )
    return checkpoint


def trained_model(job: TrainingJob, dataset: Dataset) -> tuple[MultiExitNetwork, ExitObjective]:
    torch.manual_seed(job.train.seed)
    model = job.model.build()
    losses = losses_of(job)
    train_briefly(model, losses, dataset, job)
    return model, losses


def make_trained_run(run_dir: Path, *extra: str) -> Path:
    """A briefly trained tiny digits run with a validation split (split.json) in `run_dir`."""
    job = tiny_job("--use-valid", "--result_dir", str(run_dir), *extra)
    run_dir.mkdir(parents=True, exist_ok=True)
    splits = build_splits(job.data, job.train.use_valid, job.train.seed, run_dir)
    model, losses = trained_model(job, splits.train)
    save_run(run_dir, job, model, losses)
    return run_dir
