"""What the exits cost in training: a timm backbone's step with its exits (all heads, the
boosted loss) against the same timm model's plain step (its own classifier, one cross-entropy),
timed side by side in one process (scripts/benchmark.py `--exit-overhead`).

Both steps are eager SGD with the recipe's learning rate, momentum and first weight decay, on
the same synthetic batch; the two are called alternately after warm-up, so both see the same
machine load, and each reports its median.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from boostnet.benchmarks.subjects import build, sgd_for, synthetic_batch
from boostnet.training.settings import TrainingJob
from boostnet.training.step import build_train_step, make_sgd
from models.timm_backbone import create_body


def exits_step(job: TrainingJob, images: torch.Tensor, targets: torch.Tensor) -> Callable[[], object]:
    """One training step of the multi-exit network (every exit, the recipe's objective)."""
    network, losses = build(job, images.device)
    optimizer = sgd_for(job, network, images.device)
    step = build_train_step(network, losses, optimizer, "eager")
    network.train()
    return lambda: step(images, targets)


def plain_step(job: TrainingJob, images: torch.Tensor, targets: torch.Tensor) -> Callable[[], object]:
    """One training step of the plain timm model: forward, one cross-entropy, backward, SGD."""
    torch.manual_seed(0)
    config = job.model.config
    model = create_body(config, config.num_classes).train()
    groups = [{"params": list(model.parameters()), "weight_decay": job.train.weight_decay[0]}]
    optimizer = make_sgd(groups, job.train.lr, job.train.momentum, images.device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), targets).backward()
        optimizer.step()

    return step


def alternate(calls: dict[str, Callable[[], object]], warmup: int, steps: int) -> dict[str, float]:
    """Median wall-clock ms of each call, the calls taking turns step by step (CPU)."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    durations: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(steps):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            durations[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in durations.items()}


def time_exit_overhead(job: TrainingJob, batch: int, warmup: int, steps: int) -> dict:
    """The two steps' medians on the CPU, images/s and the exits' overhead in percent."""
    images, targets = synthetic_batch(job, batch, torch.device("cpu"))
    ms = alternate(
        {"with_exits": exits_step(job, images, targets), "plain": plain_step(job, images, targets)},
        warmup,
        steps,
    )
    return {
        "model": job.model.arch,
        "exits": job.model.num_exits,
        "batch": batch,
        "image_size": job.model.inputs.image_size,
        "steps": steps,
        "threads": torch.get_num_threads(),
        **{f"{name}_ms": value for name, value in ms.items()},
        **{f"{name}_images_per_s": batch * 1000 / value for name, value in ms.items()},
        "overhead_percent": 100 * (ms["with_exits"] / ms["plain"] - 1),
    }
