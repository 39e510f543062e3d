"""Measured against promised speed-up of real early exit at the budget levels of a run's exit policy.

    python scripts/measure_exit_speed.py RUN --levels 5 10 20 30 39 --batch-sizes 1 256

For each chosen setting (budget levels of RUN/exit_policy.json, and its --budget setting), real
early exit on the first --images test images is timed against the full network on the same
copy (paired passes, medians), with eager PyTorch (conv+BN folded) and ONNX Runtime (stages
exported to a temporary folder), at each batch size. Per row: promised speed-up (full MACs /
expected MACs on validation), measured speed-up, their ratio. Written to
RUN/real_exit_levels.json, .csv and .png (measured vs promised), or to --out; a measurement
already there is never overwritten (timings cannot be reproduced). See docs/deployment.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import (  # noqa: E402
    OneLineParser,
    existing_folder,
    int_at_least,
    output_stem,
    positive_float,
)
from utils.errors import UserError, run_cli  # noqa: E402
from utils.machine import cpu_name  # noqa: E402

RESULT_STEM = "real_exit_levels"


def parse_speed_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The request, its counts checked before the run is loaded."""
    parser = OneLineParser(prog="measure_exit_speed.py", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=existing_folder, help="evaluated run directory (holds exit_policy.json)")
    parser.add_argument("--levels", type=int, nargs="+", help="budget levels to time (default: all)")
    parser.add_argument(
        "--batch-sizes", type=int_at_least(1), nargs="+", default=[1, 256], help="batch sizes to time"
    )
    parser.add_argument(
        "--images", type=int_at_least(1), default=256, help="test images timed (the first ones)"
    )
    parser.add_argument("--repeats", type=int_at_least(1), default=5, help="paired timed passes per row")
    parser.add_argument("--threads", type=int_at_least(1), default=1, help="CPU threads of both backends")
    parser.add_argument(
        "--latency-budget",
        type=positive_float,
        nargs="+",
        default=[],
        metavar="MS",
        help="also time, per backend and batch size, the setting picked for each latency budget "
        "(ms per image) from the stage latencies measured there",
    )
    parser.add_argument(
        "--out",
        type=output_stem,
        metavar="PATH",
        help=f"results as PATH.json, .csv and .png (default: RUN/{RESULT_STEM})",
    )
    request = parser.parse_args(argv)
    request.out = request.out or request.run / RESULT_STEM
    taken = [path for path in result_files(request.out) if path.exists()]
    if taken:
        raise UserError(
            f"--out {request.out}: {taken[0]} already exists; give another --out (nothing was overwritten)"
        )
    return request


def result_files(stem: Path) -> list[Path]:
    """The table (JSON, CSV) and the plot written for results stem `stem`."""
    return [stem.with_name(stem.name + suffix) for suffix in (".json", ".csv", ".png")]


def chosen_settings(policy, levels: Optional[list[int]]) -> list:
    """The levels asked for (all by default) and the policy's --budget setting."""
    from boostnet.evaluation.policy import setting_for_level

    chosen = (
        [setting_for_level(policy, level, "--levels") for level in levels] if levels else list(policy.levels)
    )
    return chosen + ([policy.budget] if policy.budget is not None else [])


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Load the run and its policy, time every chosen setting, write the table and the plot."""
    request = parse_speed_args(argv)
    import torch

    from args import parse_evaluation_args
    from boostnet.data.loaders import official_test_set
    from boostnet.deployment.export import timing_backends
    from boostnet.deployment.source import loading_flags, run_policy, test_batches
    from boostnet.deployment.speed import speed_table
    from boostnet.evaluation.loading import load_run
    from boostnet.evaluation.outputs import write_csv
    from boostnet.reporting.speed_plot import write_speed_plot
    from utils.json_files import write_json

    policy, checkpoint = run_policy(request.run)
    settings = chosen_settings(policy, request.levels)
    job = parse_evaluation_args(loading_flags(checkpoint, policy))
    run = load_run(job)
    torch.set_num_threads(request.threads)
    images = next(test_batches(official_test_set(job.data), request.images, request.images))
    with tempfile.TemporaryDirectory() as folder:
        backends = timing_backends(
            run.network, policy, job.model.inputs.channels, Path(folder) / "onnx", request.threads
        )
        rows, unmet = speed_table(
            backends, policy, settings, images, request.batch_sizes, request.repeats, request.latency_budget
        )
    header = {**run.header(), "device": cpu_name(), "threads": request.threads, "images": len(images),
              "repeats": request.repeats, "full_macs": policy.macs[-1]}  # fmt: skip
    table, csv, plot = result_files(request.out)
    request.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(table, {**header, "rows": rows, "unmet_latency_budgets": unmet})
    write_csv(csv, rows)
    levels = [row for row in rows if row["latency_budget_ms"] is None]
    write_speed_plot(plot, levels, f"{run.name}: real early exit, CPU")
    for row in rows:
        print(row_line(row))
    for miss in unmet:
        print(f"{miss['backend']} batch {miss['batch_size']}: {miss['why']}")
    fewer = (
        f" (the whole test split; --images asked for {request.images})"
        if len(images) < request.images
        else ""
    )
    print(f"{len(images)} test images timed{fewer}; written to {request.out}.json/.csv/.png")


def row_line(row: dict) -> str:
    """One row as text: promised against measured speed-up; for a latency budget's choice, the
    latency it promised against the one it achieved."""
    where = f"{row['backend']:>11} batch {row['batch_size']:>3}"
    budget = row["latency_budget_ms"]
    if budget is None:
        return (
            f"{row['setting']:>14} {where}: promised {row['promised_speedup']:.2f}x, measured "
            f"{row['measured_speedup']:.2f}x ({row['measured_over_promised']:.0%})"
        )
    achieved = row["early_exit_ms_per_image"]
    return (
        f"latency budget {budget:g} ms: {row['setting']}, {where}: expected "
        f"{row['expected_ms_per_image']:.3g} ms, achieved {achieved:.3g} ms per image on the test images "
        f"({'within' if achieved <= budget else 'OVER'} the budget)"
    )


if __name__ == "__main__":
    run_cli(main)
