"""Training-step time by CPU thread count: what `--threads` should default to (docs/flags.md).

The same eager training step of a model (every exit, its objective, SGD) is timed at each
thread count, the counts taking turns step by step so that all of them see the same machine
load; the load average before and after is recorded, since only an idle machine says what is
fastest in general.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch

from boostnet.benchmarks.exit_overhead import alternate, exits_step
from boostnet.benchmarks.subjects import synthetic_batch
from boostnet.training.settings import TrainingJob


def with_threads(call: Callable[[], object], threads: int) -> Callable[[], None]:
    """`call` run with torch's intra-op pool set to `threads`."""

    def run() -> None:
        torch.set_num_threads(threads)
        call()

    return run


def time_thread_counts(name: str, job: TrainingJob, counts: Sequence[int], warmup: int, steps: int) -> dict:
    """Median ms per training step of `job`'s model at each of `counts`, and the fastest count."""
    batch = job.train.batch_size
    images, targets = synthetic_batch(job, batch, torch.device("cpu"))
    step = exits_step(job, images, targets)
    load_before = os.getloadavg()[0]
    ms = alternate({str(n): with_threads(step, n) for n in counts}, warmup, steps)
    fastest = min(ms, key=ms.get)
    return {
        "model": name,
        "arch": job.model.arch,
        "batch": batch,
        "image_size": job.model.inputs.image_size,
        "steps": steps,
        "ms_per_step": ms,
        "images_per_s": {n: batch * 1000 / value for n, value in ms.items()},
        "fastest_threads": int(fastest),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }
