"""Benchmark: images/s of real early exit against the full network on the CPU, written as JSON.

Small CIFAR-sized 7-exit MSDNets (untrained, eval mode, boosted outputs F_n) classify batches
of 256 random images: `lin_grow` (blocks growing linearly: --stepmode lin_grow --step 1
--base 1) and `even` (the CIFAR layout of docs/recipes.md: --step 2 --base 4). Thresholds
come from the model's own outputs on exactly those images: the setting of the protocol's
family (docs/evaluation.md) that agrees most with the full network's
predictions while its expected cost is at most half the full network's, so the measured
batches really have an expected cost <= 1/2. Both paths run on the same inference copy of
the model (BatchNorm folded, channels_last); the target is >= 1.6x the full network's images/s.
Single-threaded by default: on a shared machine a second thread mostly measures the neighbours.

    python scripts/bench_early_exit.py --out results/bench_early_exit.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from args import parse_args  # noqa: E402
from utils.cli import OneLineParser, output_file  # noqa: E402
from utils.json_files import write_json  # noqa: E402
from utils.machine import cpu_name  # noqa: E402

if TYPE_CHECKING:
    from boostnet.evaluation.early_exit import Throughput

COMMON_FLAGS = ["--dataset", "cifar100", "--arch", "msdnet", "--nChannels", "16", "--nBlocks", "7"]
PRESETS = {
    "lin_grow": ["--stepmode", "lin_grow", "--step", "1", "--base", "1"],
    "even": ["--stepmode", "even", "--step", "2", "--base", "4"],
}
TARGET_SPEEDUP = 1.6
MAX_COST_FRACTION = 0.5


def parse_bench_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets",
        nargs="+",
        choices=list(PRESETS),
        default=list(PRESETS),
        help="block layouts to time (see the description above)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch")
    parser.add_argument("--batches", type=int, default=2, help="batches (thresholds are fitted on them)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=10,
        help="timed passes over the batches (paired: each path once per pass)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the random images")
    parser.add_argument(
        "--out",
        type=output_file,
        default=Path("results/bench_early_exit.json"),
        help="JSON file the results are written to",
    )
    bench = parser.parse_args(argv)
    if bench.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {bench.repeats}")
    return bench


def benchmark(flags: list[str], bench: argparse.Namespace) -> tuple[dict, Throughput]:
    """Thresholds for expected cost <= 1/2 on the model's own outputs, then paired timings."""
    import torch

    from adaptive_inference import apply_thresholds, thresholds_for_budget
    from boostnet.evaluation.early_exit import early_exit_predict, early_exit_throughput, expected_cost

    torch.manual_seed(bench.seed)
    job = parse_args(flags, prog="bench_early_exit.py")
    model = job.model.build().eval()
    network = job.objective.network(model, job.model.num_exits)
    costs = job.model.backbone.cost(model, job.model.inputs).macs
    batches = [torch.randn(bench.batch_size, 3, 32, 32) for _ in range(bench.batches)]

    with torch.inference_mode():
        probs = torch.cat([network.probabilities(model(images)) for images in batches], dim=1)
    full_predictions = probs[-1].argmax(dim=1)
    choice = thresholds_for_budget(probs, full_predictions, costs, MAX_COST_FRACTION * costs[-1])
    agreement, simulated_cost, simulated_counts = apply_thresholds(
        probs, full_predictions, choice.thresholds, costs
    )
    exits = torch.cat(
        [early_exit_predict(network, images, choice.thresholds).exit_index for images in batches]
    )
    exit_counts = torch.bincount(exits, minlength=model.num_exits)
    cost = expected_cost(exit_counts, costs)

    speed = early_exit_throughput(network, batches, choice.thresholds, torch.device("cpu"), bench.repeats)
    cost_fraction = cost / costs[-1]
    return {
        "model_flags": flags,
        "loss": "boost",
        "costs": costs,
        "full_cost": costs[-1],
        "budget": MAX_COST_FRACTION * costs[-1],
        "q": choice.q,
        "thresholds": choice.thresholds,
        "exit_counts": exit_counts.tolist(),
        "expected_cost": cost,
        "expected_cost_fraction": cost_fraction,
        "agreement_with_full_network": agreement,
        "matches_simulation": exit_counts.tolist() == simulated_counts.tolist() and cost == simulated_cost,
        **speed.as_json(),
        "meets_target": speed.speedup >= TARGET_SPEEDUP and cost_fraction <= MAX_COST_FRACTION,
    }, speed


def main(argv: Sequence[str] | None = None) -> dict:
    bench = parse_bench_args(argv)
    import torch  # only once the flags are checked: --help stays fast

    torch.set_num_threads(bench.threads)
    report = {
        "device": cpu_name(),
        "threads": bench.threads,
        "torch": torch.__version__,
        "batch_size": bench.batch_size,
        "images": bench.batch_size * bench.batches,
        "repeats": bench.repeats,
        "max_cost_fraction": MAX_COST_FRACTION,
        "target_speedup": TARGET_SPEEDUP,
        "results": {},
    }
    for name in bench.presets:
        result, speed = benchmark(COMMON_FLAGS + PRESETS[name], bench)
        report["results"][name] = result
        print(
            f"{name}: expected cost {result['expected_cost'] / 1e6:.2f}M of "
            f"{result['full_cost'] / 1e6:.2f}M ({result['expected_cost_fraction']:.1%}), exits "
            f"{result['exit_counts']}; {speed.summary()} (target {TARGET_SPEEDUP}x, "
            f"{bench.threads} thread(s))"
        )
    bench.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(bench.out, report)
    print(f"wrote {bench.out}")
    return report


if __name__ == "__main__":
    main()
