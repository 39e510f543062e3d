"""The result files an evaluation writes into the run directory (docs/evaluation-outputs.md):
anytime.csv/json, budgeted.csv/json, budget.json, real_exit.json. Each JSON file starts with
the run's header (run, checkpoint and its SHA-256, arch, loss, dataset). exit_policy.json, the
thresholds a deployed copy exits by, has its own schema (boostnet/evaluation/policy.py)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from boostnet.evaluation.policy import POLICY_FILE
from utils.checkpoint import write_text_atomically
from utils.json_files import write_json

BUDGETED_COLUMNS = ("level", "q", "expected_cost", "val_accuracy", "test_accuracy", "test_ece", "test_nll")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """`rows` as CSV with a header line, written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(path, text.getvalue())


def budgeted_rows(levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten sweep records into CSV rows with one threshold and exit-count column per exit."""
    rows = []
    for level in levels:
        row = {key: level[key] for key in BUDGETED_COLUMNS}
        row.update({f"threshold_{n + 1}": t for n, t in enumerate(level["thresholds"])})
        row.update({f"exit_count_{n + 1}": c for n, c in enumerate(level["exit_counts"])})
        rows.append(row)
    return rows


def write_anytime(run_dir: Path, header: dict[str, Any], samples: int, rows: list[dict[str, Any]]) -> None:
    write_csv(run_dir / "anytime.csv", rows)
    write_json(run_dir / "anytime.json", {**header, "test_samples": samples, "exits": rows})


def write_budgeted(
    run_dir: Path,
    header: dict[str, Any],
    flat_curve: bool,
    costs: list[int],
    samples: tuple[int, int],
    levels: list[dict[str, Any]],
) -> None:
    """budgeted.csv and budgeted.json (`samples`: validation and test counts)."""
    write_csv(run_dir / "budgeted.csv", budgeted_rows(levels))
    write_json(
        run_dir / "budgeted.json",
        {
            **header,
            "flat_curve": flat_curve,
            "costs": costs,
            "val_samples": samples[0],
            "test_samples": samples[1],
            "levels": levels,
        },
    )


def write_budget(run_dir: Path, header: dict[str, Any], result: dict[str, Any]) -> None:
    write_json(run_dir / "budget.json", {**header, **result})


def write_policy(run_dir: Path, document: dict[str, Any]) -> None:
    """exit_policy.json (docs/deployment.md)."""
    write_json(run_dir / POLICY_FILE, document)


def write_real_exit(run_dir: Path, header: dict[str, Any], result: dict[str, Any]) -> None:
    """real_exit.json (the record without its Throughput object, whose figures it holds)."""
    write_json(
        run_dir / "real_exit.json",
        {**header, **{key: value for key, value in result.items() if key != "speed"}},
    )
