"""How evaluation results read on the console: aligned tables and one-line summaries of the
records boostnet/evaluation/results.py computes."""

from __future__ import annotations

from typing import Any, Callable, Sequence


def format_table(rows: list[dict[str, Any]], columns: dict[str, Callable[[Any], str]]) -> str:
    """Aligned text table of `rows` with one formatter per column."""
    cells = [list(columns)] + [[fmt(row[key]) for key, fmt in columns.items()] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells)


def mmacs(value: float) -> str:
    return f"{value / 1e6:.2f}M"


def percent(value: float) -> str:
    return f"{value:.2f}"


def four_places(value: float) -> str:
    return f"{value:.4f}"


def slash_joined(values: Sequence[Any]) -> str:
    return "/".join(map(str, values))


def anytime_text(name: str, samples: int, rows: list[dict[str, Any]]) -> str:
    """The anytime table: one line per exit."""
    return f"anytime ({name}, {samples} test samples)\n" + format_table(
        rows,
        {
            "exit": str,
            "macs": mmacs,
            "params": "{:,}".format,
            "top1": percent,
            "top5": percent,
            "nll": four_places,
            "ece": four_places,
        },
    )


def budgeted_text(
    name: str, val_samples: int, test_samples: int, flat_curve: bool, levels: list[dict[str, Any]]
) -> str:
    """The budgeted-batch table: one line per budget level."""
    return (
        f"budgeted batch ({name}, {val_samples} validation / {test_samples} test"
        f"{', flat curve' if flat_curve else ''})\n"
        + format_table(
            levels,
            {
                "level": str,
                "expected_cost": mmacs,
                "val_accuracy": percent,
                "test_accuracy": percent,
                "test_ece": four_places,
                "test_nll": four_places,
                "exit_counts": slash_joined,
            },
        )
    )


def budget_text(name: str, result: dict[str, Any]) -> str:
    """One line: the `--budget` choice on validation and its test outcome."""
    return (
        f"budget {mmacs(result['budget'])} ({name}): q {result['q']:.4g}, validation "
        f"{percent(result['val_accuracy'])}% at {mmacs(result['val_expected_cost'])}, test "
        f"{percent(result['test_accuracy'])}% at {mmacs(result['test_expected_cost'])}, "
        f"test exits {slash_joined(result['test_exit_counts'])}"
    )


def budget_above_full_text(budget: float, full_macs: float) -> str:
    """The note for a `--budget` the full network already meets (a typo of a power of ten?)."""
    return (
        f"note: --budget {mmacs(budget)} is at or above the full network's {mmacs(full_macs)} MACs: "
        "every setting fits, so the one most accurate on validation is chosen"
    )


def real_exit_text(name: str, result: dict[str, Any]) -> str:
    """One line: real early exit's speed, accuracy and exits beside the simulation's."""
    return (
        f"real early exit ({name}, {result['samples']} test images, batch "
        f"{result['batch_size']}, {result['device']}): {result['speed'].summary()}; accuracy "
        f"{percent(result['accuracy'])}% (simulated {percent(result['simulated_accuracy'])}%), "
        f"exits {slash_joined(result['exit_counts'])}"
    )
