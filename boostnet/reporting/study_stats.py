"""Statistics of a study over seeds: per-exit means with Student-t intervals, paired differences,
budgeted curves on a common cost grid and their areas (docs/study.md).

Pure Python on plain numbers, so it can be checked by hand: the input is one :class:`RunResult`
per trained run (read from the evaluator's anytime.json / budgeted.json by :func:`run_result`),
the output of :func:`aggregate` is a JSON-ready dict. An interval needs two seeds or more; with
one seed its std and half-width are None (null in JSON, "n/a" in tables).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

# Two-sided 95% Student-t quantiles t_{0.975}(df) for df = 1..30 (standard tables, 6 decimals).
T_975 = (
    12.706205,
    4.302653,
    3.182446,
    2.776445,
    2.570582,
    2.446912,
    2.364624,
    2.306004,
    2.262157,
    2.228139,
    2.200985,
    2.178813,
    2.160369,
    2.144787,
    2.131450,
    2.119905,
    2.109816,
    2.100922,
    2.093024,
    2.085963,
    2.079614,
    2.073873,
    2.068658,
    2.063899,
    2.059539,
    2.055529,
    2.051831,
    2.048407,
    2.045230,
    2.042272,
)
Z_975 = 1.959964
DEFAULT_GRID_POINTS = 50


def t_quantile_975(df: int) -> float:
    """t_{0.975}(df): the table up to df 30, beyond it the Cornish-Fisher expansion around the
    normal quantile (two terms; off by less than 1e-4 at df 31, less further out)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Summary:
    """Mean of n values, their sample std and the 95% t-interval half-width (None when n < 2)."""

    n: int
    mean: float
    std: Optional[float]
    ci95: Optional[float]

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON (None stays None: null)."""
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": self.ci95}


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample std (n - 1) and half-width t_{0.975}(n - 1) * std / sqrt(n) of `values`."""
    n = len(values)
    if n == 0:
        raise ValueError("cannot summarize an empty list of values")
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(n, mean, std, t_quantile_975(n - 1) * std / math.sqrt(n))


@dataclass(frozen=True)
class RunResult:
    """One evaluated run: per-exit cost and top-1, and its budgeted (test cost, test accuracy) curve."""

    variant: str
    seed: int
    exit_macs: list[float]
    exit_top1: list[float]
    budget_costs: list[float]
    budget_accuracy: list[float]


def run_result(variant: str, seed: int, anytime: dict[str, Any], budgeted: dict[str, Any]) -> RunResult:
    """A RunResult from the evaluator's anytime.json and budgeted.json contents."""
    return RunResult(
        variant,
        seed,
        [row["macs"] for row in anytime["exits"]],
        [row["top1"] for row in anytime["exits"]],
        [level["expected_cost"] for level in budgeted["levels"]],
        [level["test_accuracy"] for level in budgeted["levels"]],
    )


def sorted_curve(costs: Sequence[float], accuracy: Sequence[float]) -> tuple[list[float], list[float]]:
    """The points sorted by cost, points of equal cost merged into their mean accuracy."""
    merged: dict[float, list[float]] = {}
    for cost, value in zip(costs, accuracy):
        merged.setdefault(float(cost), []).append(value)
    xs = sorted(merged)
    return xs, [math.fsum(merged[x]) / len(merged[x]) for x in xs]


def interpolate(xs: Sequence[float], ys: Sequence[float], at: Sequence[float]) -> list[float]:
    """Linear interpolation of the curve (xs increasing) at points inside [xs[0], xs[-1]]."""
    values = []
    for x in at:
        if not xs[0] <= x <= xs[-1]:
            raise ValueError(f"cost {x} lies outside the curve's range [{xs[0]}, {xs[-1]}]")
        right = next(i for i, xi in enumerate(xs) if xi >= x)
        if xs[right] == x:
            values.append(ys[right])
            continue
        left = right - 1
        weight = (x - xs[left]) / (xs[right] - xs[left])
        values.append(ys[left] + weight * (ys[right] - ys[left]))
    return values


def common_grid(runs: Sequence[RunResult], points: int = DEFAULT_GRID_POINTS) -> list[float]:
    """`points` evenly spaced costs from the largest of the runs' cheapest budgeted costs to the
    smallest of their dearest, so that every run's curve covers the whole grid."""
    if points < 2:
        raise ValueError(f"a cost grid needs at least 2 points, got {points}")
    low = max(min(run.budget_costs) for run in runs)
    high = min(max(run.budget_costs) for run in runs)
    if not low < high:
        raise ValueError(
            f"the runs' budgeted curves share no range of costs (the cheapest ends at "
            f"{high:g}, the dearest starts at {low:g})"
        )
    return [low + (high - low) * i / (points - 1) for i in range(points)]


def curve_area(costs: Sequence[float], accuracy: Sequence[float], low: float, high: float) -> float:
    """Mean accuracy of the piecewise-linear curve over [low, high]: its exact area there (the
    trapezoid rule through the curve's own points and both ends) divided by high - low."""
    xs, ys = sorted_curve(costs, accuracy)
    knots = [low] + [x for x in xs if low < x < high] + [high]
    values = interpolate(xs, ys, knots)
    area = math.fsum((b - a) * (u + v) / 2 for a, b, u, v in zip(knots, knots[1:], values, values[1:]))
    return area / (high - low)


def by_variant(runs: Sequence[RunResult]) -> dict[str, dict[int, RunResult]]:
    """Runs grouped as variant -> seed -> run, variants in order of first appearance."""
    grouped: dict[str, dict[int, RunResult]] = {}
    for run in runs:
        seeds = grouped.setdefault(run.variant, {})
        if run.seed in seeds:
            raise ValueError(f"variant {run.variant} has seed {run.seed} twice")
        seeds[run.seed] = run
    return grouped


def per_exit(values: Sequence[Sequence[float]], what: str) -> list[Summary]:
    """Summary per exit of per-run lists of per-exit values (every list of the same length)."""
    if len({len(v) for v in values}) != 1:
        raise ValueError(f"{what}: the runs have different numbers of exits")
    return [summarize(column) for column in zip(*values)]


def anytime_summary(seeds: dict[int, RunResult]) -> list[dict[str, Any]]:
    """Per exit: mean cost over seeds and the top-1 summary."""
    runs = list(seeds.values())
    macs = per_exit([run.exit_macs for run in runs], f"variant {runs[0].variant}")
    top1 = per_exit([run.exit_top1 for run in runs], f"variant {runs[0].variant}")
    return [
        {"exit": n + 1, "macs": cost.mean, "top1": accuracy.to_dict()}
        for n, (cost, accuracy) in enumerate(zip(macs, top1))
    ]


def paired_difference(
    reference: dict[int, RunResult], other: dict[int, RunResult], areas: dict[tuple[str, int], float]
) -> dict[str, Any] | None:
    """reference - other per exit and in area, over the seeds both have (None when they share none)."""
    seeds = sorted(set(reference) & set(other))
    if not seeds:
        return None
    first = reference[seeds[0]]
    if any(len(reference[s].exit_top1) != len(other[s].exit_top1) for s in seeds):
        raise ValueError(
            f"variants {first.variant} and {other[seeds[0]].variant} have different numbers of exits"
        )
    differences = [[a - b for a, b in zip(reference[s].exit_top1, other[s].exit_top1)] for s in seeds]
    area_differences = [areas[first.variant, s] - areas[other[s].variant, s] for s in seeds]
    return {
        "seeds": seeds,
        "exits": [s.to_dict() for s in per_exit(differences, "paired")],
        "auc": summarize(area_differences).to_dict(),
    }


def aggregate(
    runs: Sequence[RunResult], reference: str = "boost", grid_points: int = DEFAULT_GRID_POINTS
) -> dict[str, Any]:
    """Everything the study reports, as plain JSON-ready values (see docs/study.md)."""
    if not runs:
        raise ValueError("no runs to aggregate")
    grouped = by_variant(runs)
    grid = common_grid(runs, grid_points)
    areas = {
        (run.variant, run.seed): curve_area(run.budget_costs, run.budget_accuracy, grid[0], grid[-1])
        for run in runs
    }
    budgeted = {}
    for variant, seeds in grouped.items():
        curves = [
            interpolate(*sorted_curve(run.budget_costs, run.budget_accuracy), grid) for run in seeds.values()
        ]
        budgeted[variant] = [summarize(column).to_dict() for column in zip(*curves)]
    paired = {}
    if reference in grouped:
        for variant, seeds in grouped.items():
            difference = paired_difference(grouped[reference], seeds, areas) if variant != reference else None
            if difference is not None:
                paired[variant] = difference
    return {
        "variants": list(grouped),
        "seeds": {variant: sorted(seeds) for variant, seeds in grouped.items()},
        "anytime": {variant: anytime_summary(seeds) for variant, seeds in grouped.items()},
        "budget_grid": grid,
        "budgeted": budgeted,
        "auc": {
            variant: summarize([areas[variant, s] for s in seeds]).to_dict()
            for variant, seeds in grouped.items()
        },
        "runs": [
            {
                "variant": run.variant,
                "seed": run.seed,
                "exit_top1": run.exit_top1,
                "auc": areas[run.variant, run.seed],
            }
            for run in runs
        ],
        "reference": reference,
        "paired": paired,
    }
