"""Time every recipe model's training step and evaluation forward, eager vs fast.

For each recipe model (MSDNet and RANet at CIFAR and ImageNet sizes, docs/recipes.md) it times, on
whatever device is present, a training step (forward through all exits, boosted loss,
backward, SGD) and an evaluation forward in the eager path and in each fast path
(`torch.compile` on the CPU; the captured step and the captured compiled step on a GPU):
median milliseconds over many steps after warm-up (CUDA events on a GPU, so steps pipeline
as in training; wall clock after a synchronisation on the CPU), images/s, peak GPU memory,
the first call's time (compilation / capture), the speedup over eager and the projected
time of the full recipe (epochs x steps per epoch x ms per step, per GPU, ignoring data
loading and all-reduce). It also times real early exit at batch 1 and 256 against the full
network and against its cost ratio's promise. Synthetic data; the device-resident loader
(`boostnet/data/gpu_batches.py`) is timed on its own.

`--exit-overhead` adds what the exits cost in training: the timm ResNet-18 recipe's step with
its four exits against the plain timm ResNet-18 step (own classifier, one cross-entropy), batch
64 at 32 px, the two alternated in one process (boostnet/benchmarks/exit_overhead.py).

`--quick` checks the whole harness in under a minute on a 2-core CPU: the four models with
one layer per block, no bottlenecks and the fewest scales their exit heads accept, few
steps, two models at a time in worker processes, and torch.compile's `aot_eager` backend, which
traces the same forward and backward graphs as inductor but skips its C++ code generation
(cold, that alone takes over 10 minutes here). Its speedups are therefore not the fast
path's; `--quick --compile-backend inductor` times the real thing on the tiny models.

    python scripts/benchmark.py                 # real recipe sizes, results/benchmark.json
    python scripts/benchmark.py --quick         # tiny sizes, a CPU smoke run
    python scripts/benchmark.py --quick --models msdnet_cifar100 --exit-overhead --steps 10
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from args import parse_args  # noqa: E402
from boostnet.benchmarks.cases import MODELS, QUICK_MODELS, BenchmarkOptions  # noqa: E402
from utils.cli import OneLineParser, int_at_least, output_file  # noqa: E402
from utils.errors import run_cli  # noqa: E402

SINGLE_IMAGES = 64  # images timed one at a time for batch 1 (--quick: 32)
OVERHEAD_RECIPE = "timm_resnet18_fashion_mnist"  # --exit-overhead: ResNet-18, four exits, 32 px
OVERHEAD_BATCH = 64


def benchmark_parser() -> OneLineParser:
    """The benchmark's flags, every one with its help: what to time, then how."""
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and few steps (CPU smoke run)")
    parser.add_argument(
        "--out",
        type=output_file,
        default=ROOT / "results" / "benchmark.json",
        help="JSON file the results are written to",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=[m.name for m in MODELS],
        default=[m.name for m in MODELS],
        help="recipe models to time",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=None,
        choices=("compile", "cuda_graph", "compiled_cuda_graph"),
        help="fast paths to time (None: compile on the CPU, both graph modes on CUDA)",
    )
    add_timing_flags(parser)
    return parser


def add_timing_flags(parser: OneLineParser) -> None:
    """How the chosen recipes are timed: steps, compilation, precision, layout, extra timings."""
    parser.add_argument(
        "--steps", type=int_at_least(1), default=None, help="timed steps (None: 50, with --quick 5)"
    )
    parser.add_argument(
        "--warmup", type=int_at_least(0), default=None, help="untimed steps (None: 10, with --quick 2)"
    )
    parser.add_argument(
        "--compile-backend",
        choices=("inductor", "aot_eager"),
        default=None,
        help="torch.compile backend (None: inductor; with --quick aot_eager, which "
        "checks the compiled path's plumbing in seconds but is no speedup)",
    )
    parser.add_argument(
        "--amp", choices=("bf16",), default=None, help="autocast precision of the timed steps (None: fp32)"
    )
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    parser.add_argument(
        "--no-early-exit",
        dest="early_exit",
        action="store_false",
        help="skip the real early-exit timings (on the CPU they run at CIFAR size only)",
    )
    parser.add_argument(
        "--jobs",
        type=int_at_least(1),
        default=None,
        help="recipes timed side by side in worker processes, each on its share "
        "of the CPU threads (None: 1; with --quick on the CPU 2)",
    )
    parser.add_argument(
        "--exit-overhead",
        action="store_true",
        help="also time the timm ResNet-18 training step with its four exits against the plain model's",
    )


def parse_options(argv: Optional[Sequence[str]]) -> tuple[BenchmarkOptions, list[str]]:
    """Benchmark flags, with step counts defaulting by --quick."""
    flags = benchmark_parser().parse_args(argv)
    quick = flags.quick
    return BenchmarkOptions(
        quick=quick,
        out=flags.out,
        device=flags.device,
        modes=None if flags.modes is None else tuple(flags.modes),
        steps=flags.steps or (5 if quick else 50),
        warmup=flags.warmup if flags.warmup is not None else (2 if quick else 10),
        compile_backend=flags.compile_backend or ("aot_eager" if quick else "inductor"),
        amp=flags.amp,
        channels_last=flags.channels_last,
        early_exit=flags.early_exit,
        jobs=flags.jobs,
        early_exit_warmup=0 if quick else 1,
        early_exit_steps=1 if quick else 3,
        single_images=SINGLE_IMAGES // 2 if quick else SINGLE_IMAGES,
        exit_overhead=flags.exit_overhead,
    ), flags.models


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Check the flags, then time everything, write the JSON, print the tables; returns the JSON dict."""
    options, models = parse_options(argv)
    cases = [
        (recipe, parse_args(list(recipe.flags), prog=f"benchmark {recipe.name}"))
        for recipe in (QUICK_MODELS if options.quick else MODELS)
        if recipe.name in models
    ]
    overhead = (
        parse_args(["--recipe", OVERHEAD_RECIPE, "--batch-size", str(OVERHEAD_BATCH)], prog="benchmark")
        if options.exit_overhead
        else None
    )
    from boostnet.benchmarks.timing import run_benchmark  # torch: only once the flags are checked

    return run_benchmark(options, cases, overhead)


if __name__ == "__main__":
    run_cli(main)
