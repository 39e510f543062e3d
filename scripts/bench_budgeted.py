"""Time the full 39-level budgeted-batch sweep (docs/evaluation.md) on realistic random exit outputs.

    python scripts/bench_budgeted.py [--val 5000 --test 10000 --exits 7 --classes 100]
                                     [--threads N] [--repeats 5] [--out FILE]

Writes the sizes, the torch version and the median seconds of a few runs as JSON, and prints
a one-line summary. Exit outputs are softmaxes whose pull towards the target grows with the
exit index, so later exits are both more accurate and more confident, as in a trained network.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import OneLineParser, output_file  # noqa: E402
from utils.json_files import write_json  # noqa: E402

if TYPE_CHECKING:
    import torch


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", type=int, default=5000, help="validation samples")
    parser.add_argument("--test", type=int, default=10000, help="test samples")
    parser.add_argument("--exits", type=int, default=7, help="exits of the simulated network")
    parser.add_argument("--classes", type=int, default=100, help="classes of the simulated outputs")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random exit outputs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (None: torch's choice)")
    parser.add_argument(
        "--out",
        type=output_file,
        default=Path("results/bench_budgeted.json"),
        help="JSON file the timings are written to",
    )
    return parser.parse_args(argv)


def exit_outputs(
    n_exits: int, n_samples: int, n_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-exit softmax outputs (exits x samples x classes) sharpening towards the target with depth."""
    import torch

    targets = torch.randint(0, n_classes, (n_samples,), generator=generator)
    difficulty = torch.rand(1, n_samples, 1, generator=generator)
    depth = torch.linspace(1.0, 4.0, n_exits).view(n_exits, 1, 1)
    logits = torch.randn(n_exits, n_samples, n_classes, generator=generator) * 1.5
    logits += 3.0 * depth * (1 - difficulty) * torch.nn.functional.one_hot(targets, n_classes)
    return logits.softmax(dim=2), targets


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse(argv)
    import torch  # only once the flags are checked: --help stays fast

    from adaptive_inference import budgeted_sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    val = exit_outputs(args.exits, args.val, args.classes, generator)
    test = exit_outputs(args.exits, args.test, args.classes, generator)
    costs = [1e7 * (n + 1) for n in range(args.exits)]
    budgeted_sweep(*val, *test, costs)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        points = budgeted_sweep(*val, *test, costs)
        seconds.append(time.perf_counter() - start)
    result = {
        "benchmark": "budgeted_sweep, 39 levels",
        "val_samples": args.val,
        "test_samples": args.test,
        "exits": args.exits,
        "classes": args.classes,
        "repeats": args.repeats,
        "median_seconds": statistics.median(seconds),
        "seconds": seconds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "test_accuracy_range": [min(p.test_accuracy for p in points), max(p.test_accuracy for p in points)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(
        f"budgeted_sweep: {len(points)} levels, {args.val} val / {args.test} test, {args.exits} exits, "
        f"{args.classes} classes: median {result['median_seconds']:.3f} s over {args.repeats} runs "
        f"(torch {torch.__version__}, {result['threads']} threads) -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
