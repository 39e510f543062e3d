"""Time a training step at each CPU thread count, to choose `--threads` (docs/flags.md).

    python scripts/bench_threads.py [--recipes msdnet_cifar100] [--flags "MODEL FLAGS" ...]
                                    [--threads 1 2] [--steps 10] [--out FILE]

Each model (a recipe by name, or training flags as one string) takes its eager training step
at every thread count in turn; the JSON holds the medians, the fastest count and the machine's
load average, which must be near zero for the answer to hold on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from args import parse_args  # noqa: E402
from boostnet.recipes import RECIPES  # noqa: E402
from utils.cli import OneLineParser, int_at_least, output_file  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.json_files import write_json  # noqa: E402


def parse_bench_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The flags, checked: at least one model."""
    parser = OneLineParser(prog="scripts/bench_threads.py", description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=[], choices=list(RECIPES), help="recipe models")
    parser.add_argument(
        "--flags", action="append", default=[], help="a model's training flags as one string (repeatable)"
    )
    parser.add_argument(
        "--threads",
        nargs="+",
        type=int_at_least(1),
        default=sorted({1, os.cpu_count() or 1}),
        help="thread counts to compare (default: 1 and every core)",
    )
    parser.add_argument("--steps", type=int_at_least(1), default=10, help="timed steps per count")
    parser.add_argument("--warmup", type=int_at_least(0), default=2, help="untimed steps per count")
    parser.add_argument(
        "--out", type=output_file, default=Path("results/bench_threads.json"), help="JSON file written"
    )
    options = parser.parse_args(argv)
    if not options.recipes and not options.flags:
        parser.error("give --recipes NAME... or --flags 'MODEL FLAGS'")
    return options


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Time every model at every thread count, write the JSON, print one line per model."""
    options = parse_bench_args(argv)
    models = [(name, ["--recipe", name]) for name in options.recipes]
    models += [(flags, shlex.split(flags)) for flags in options.flags]
    jobs = [(name, parse_args([*flags, "--device", "cpu"], prog="bench_threads")) for name, flags in models]
    import torch  # only once the flags are checked

    from boostnet.benchmarks.threads import time_thread_counts

    rows = [
        time_thread_counts(name, job, options.threads, options.warmup, options.steps) for name, job in jobs
    ]
    report = {"cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}
    options.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(options.out, {**report, "results": rows})
    for row in rows:
        times = ", ".join(f"{n} thread(s) {ms:.0f} ms" for n, ms in row["ms_per_step"].items())
        load = row["load_average_before"]
        print(f"{row['model']}: {times}; fastest {row['fastest_threads']} (load average {load:.1f})")
    print(f"wrote {options.out}")
    return report


if __name__ == "__main__":
    run_cli(main)
