"""The recipe models scripts/benchmark.py times (docs/recipes.md), at their real sizes and
shrunk for `--quick`. Torch-free, so that the benchmark's --help and flag checks are instant;
the timing itself is boostnet/benchmarks/timing.py, which gets each case with its flags
parsed into a training job by the script.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from boostnet.recipes import RECIPES

if TYPE_CHECKING:
    from boostnet.training.settings import TrainingJob


@dataclass(frozen=True)
class BenchmarkOptions:
    """How scripts/benchmark.py times (its flags, defaults resolved by --quick)."""

    quick: bool
    out: Path
    device: str
    modes: Optional[tuple[str, ...]]
    steps: int
    warmup: int
    compile_backend: str
    amp: Optional[str]
    channels_last: bool
    early_exit: bool
    jobs: Optional[int]  # None: 1, or 2 for --quick on the CPU
    early_exit_warmup: int
    early_exit_steps: int
    single_images: int  # images timed one at a time for batch 1
    exit_overhead: bool = False  # also time a timm backbone with and without its exits


@dataclass(frozen=True)
class Benchmarked:
    """A paper recipe's model as the benchmark times it (`extra` flags shrink it for --quick)."""

    name: str
    recipe: str
    extra: tuple[str, ...] = ()
    batch: Optional[int] = None  # per-GPU training batch; None: the recipe's
    eval_batch: int = 256

    @property
    def flags(self) -> tuple[str, ...]:
        return ("--recipe", self.recipe, *self.extra) + (
            ("--batch-size", str(self.batch)) if self.batch else ()
        )

    @property
    def gpus(self) -> int:
        return RECIPES[self.recipe].gpus

    def steps_per_epoch(self, job: TrainingJob) -> int:
        return job.data.dataset.train_size // (job.train.batch_size * self.gpus)

    def record(self, job: TrainingJob) -> dict:
        """What the JSON says about the model (`job`: its flags parsed): the flags and how its
        recipe trains."""
        return {
            **asdict(self),
            "flags": list(self.flags),
            "epochs": job.train.epochs,
            "train_images": job.data.dataset.train_size,
            "batch": job.train.batch_size,
            "gpus": self.gpus,
            "steps_per_epoch": self.steps_per_epoch(job),
        }


MODELS = (
    Benchmarked("msdnet_cifar100", "msdnet_cifar100_anytime"),
    Benchmarked("ranet_cifar100", "ranet_cifar100_anytime"),
    Benchmarked("msdnet_imagenet", "msdnet_imagenet_anytime"),
    Benchmarked("ranet_imagenet", "ranet_imagenet_anytime"),
)
TINY_MSDNET = (
    "--nBlocks",
    "2",
    "--base",
    "1",
    "--step",
    "1",
    "--no-bottleneck",
    "--nChannels",
    "4",
    "--growthRate",
    "2",
)
TINY_RANET = (
    "--nBlocks",
    "1",
    "--block-step",
    "1",
    "--step",
    "1",
    "--no-bottleneck",
    "--nChannels",
    "4",
    "--growthRate",
    "4",
)
QUICK_MODELS = (  # one layer per block, no bottlenecks, the fewest scales the heads accept
    Benchmarked(
        "msdnet_cifar100",
        "msdnet_cifar100_anytime",
        (*TINY_MSDNET, "--grFactor", "1-2-2", "--bnFactor", "1-2-2"),
        8,
        16,
    ),
    Benchmarked(
        "ranet_cifar100",
        "ranet_cifar100_anytime",
        (*TINY_RANET, "--scale-list", "1-2-3", "--grFactor", "2-1-1", "--bnFactor", "2-1-1"),
        8,
        16,
    ),
    Benchmarked(
        "msdnet_imagenet",
        "msdnet_imagenet_anytime",
        (*TINY_MSDNET, "--grFactor", "1-2-2-2", "--bnFactor", "1-2-2-2"),
        2,
        2,
    ),
    Benchmarked(
        "ranet_imagenet",
        "ranet_imagenet_anytime",
        (*TINY_RANET, "--scale-list", "1-2-3-4", "--grFactor", "2-1-1-1", "--bnFactor", "2-1-1-1"),
        2,
        2,
    ),
)
