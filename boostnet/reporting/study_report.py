"""The files of a study over seeds: study.json, study.csv, study.md and study.png (docs/study.md).

Everything is drawn from the dict :func:`boostnet.reporting.study_stats.aggregate` returns; a missing interval
(one seed) is null in JSON and "n/a" in the CSV and the Markdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from boostnet.evaluation.outputs import write_csv  # noqa: E402
from boostnet.reporting.markdown import markdown_table  # noqa: E402
from utils.checkpoint import write_text_atomically  # noqa: E402
from utils.json_files import write_json  # noqa: E402

MISSING = "n/a"
BAND_ALPHA = 0.2


def number(value: Optional[float]) -> Any:
    """The value itself, or "n/a" where there is none (an interval of one seed)."""
    return MISSING if value is None else value


def mean_pm(summary: dict[str, Any]) -> str:
    """'mean ± half-width' with two decimals, 'mean ± n/a' for a single seed."""
    interval = MISSING if summary["ci95"] is None else f"{summary['ci95']:.2f}"
    return f"{summary['mean']:.2f} ± {interval}"


def csv_row(
    kind: str, variant: str, summary: dict[str, Any], exit_number: Any = "", cost: Any = ""
) -> dict[str, Any]:
    """One CSV row: what, of which variant, at which exit or cost, and the summary's numbers."""
    return {
        "kind": kind,
        "variant": variant,
        "exit": exit_number,
        "cost": cost,
        "n": summary["n"],
        "mean": summary["mean"],
        "std": number(summary["std"]),
        "ci95": number(summary["ci95"]),
    }


def csv_rows(study: dict[str, Any]) -> list[dict[str, Any]]:
    """Long format: anytime per variant x exit, paired differences per exit, the budgeted grid, AUCs."""
    rows = [
        csv_row("anytime_top1", variant, row["top1"], row["exit"], row["macs"])
        for variant in study["variants"]
        for row in study["anytime"][variant]
    ]
    for variant, paired in study["paired"].items():
        label = f"{study['reference']}-{variant}"
        rows += [
            csv_row("paired_top1_difference", label, summary, n + 1)
            for n, summary in enumerate(paired["exits"])
        ]
        rows.append(csv_row("paired_auc_difference", label, paired["auc"]))
    rows += [
        csv_row("budgeted_test_top1", variant, summary, cost=cost)
        for variant in study["variants"]
        for cost, summary in zip(study["budget_grid"], study["budgeted"][variant])
    ]
    rows += [csv_row("auc", variant, study["auc"][variant]) for variant in study["variants"]]
    return rows


def exit_mmacs(study: dict[str, Any], exit_index: int) -> str:
    """The exit's multiply-adds in millions (the distinct values, should the variants differ)."""
    values = {f"{study['anytime'][v][exit_index]['macs'] / 1e6:.2f}" for v in study["variants"]}
    return "/".join(sorted(values))


def study_markdown(study: dict[str, Any], config: dict[str, Any]) -> str:
    """Tables: per-exit top-1 per variant, paired differences, AUC per variant, AUC per run."""
    variants, reference = study["variants"], study["reference"]
    seeds = ", ".join(f"{v}: {' '.join(map(str, s))}" for v, s in study["seeds"].items())
    low, high = study["budget_grid"][0] / 1e6, study["budget_grid"][-1] / 1e6
    sections = [
        f"# Study on {config['dataset']} over seeds",
        f"Seeds ({seeds}); intervals are "
        f"95% Student-t over seeds (mean ± half-width).\n\n`{config['command']}`",
        "## Anytime prediction: test top-1 % per exit",
        markdown_table(
            ["exit", "MMACs"] + variants,
            [
                [n + 1, exit_mmacs(study, n)] + [mean_pm(study["anytime"][v][n]["top1"]) for v in variants]
                for n in range(min(len(study["anytime"][v]) for v in variants))
            ],
        ),
    ]
    if study["paired"]:
        others = list(study["paired"])
        sections += [
            f"## Paired difference {reference} − variant, top-1 points per exit (seeds both have)",
            markdown_table(
                ["exit"] + [f"{reference} − {v}" for v in others],
                [
                    [n + 1] + [mean_pm(study["paired"][v]["exits"][n]) for v in others]
                    for n in range(len(study["paired"][others[0]]["exits"]))
                ]
                + [["AUC"] + [mean_pm(study["paired"][v]["auc"]) for v in others]],
            ),
        ]
    sections += [
        f"## Budgeted batch: area under the test accuracy–cost curve "
        f"(mean top-1 % over {low:.2f}–{high:.2f} MMACs)",
        markdown_table(
            ["variant", "seeds", "AUC"],
            [[v, study["auc"][v]["n"], mean_pm(study["auc"][v])] for v in variants],
        ),
        "## Runs",
        markdown_table(
            ["variant", "seed", "final exit top-1 %", "AUC"],
            [
                [run["variant"], run["seed"], f"{run['exit_top1'][-1]:.2f}", f"{run['auc']:.2f}"]
                for run in study["runs"]
            ],
        ),
    ]
    return "\n\n".join(sections) + "\n"


def band(axes, xs: list[float], summaries: list[dict[str, Any]], label: str, marker: str) -> None:
    """A mean line and, where there are intervals, the shaded mean ± half-width band."""
    means = [s["mean"] for s in summaries]
    (line,) = axes.plot([x / 1e6 for x in xs], means, marker=marker, markersize=3, label=label)
    if all(s["ci95"] is not None for s in summaries):
        axes.fill_between(
            [x / 1e6 for x in xs],
            [s["mean"] - s["ci95"] for s in summaries],
            [s["mean"] + s["ci95"] for s in summaries],
            color=line.get_color(),
            alpha=BAND_ALPHA,
            linewidth=0,
        )


def draw_study(study: dict[str, Any], path: Path) -> None:
    """Anytime (left) and budgeted (right) test accuracy against cost, bands = 95% intervals."""
    figure, (anytime, budgeted) = plt.subplots(1, 2, figsize=(12.8, 4.8))
    for variant in study["variants"]:
        rows = study["anytime"][variant]
        band(anytime, [r["macs"] for r in rows], [r["top1"] for r in rows], variant, "o")
        band(budgeted, study["budget_grid"], study["budgeted"][variant], variant, "")
    for axes, title in ((anytime, "Anytime prediction"), (budgeted, "Budgeted batch classification")):
        axes.set(
            title=f"{title} (mean, 95% CI over seeds)",
            xlabel="multiply-adds per image (millions)",
            ylabel="top-1 accuracy (%)",
        )
        axes.set_ylim(top=min(axes.get_ylim()[1], 100))
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def write_study(out: Path, study: dict[str, Any], config: dict[str, Any]) -> list[Path]:
    """Write the four files to `out`; returns their paths."""
    paths = [out / name for name in ("study.json", "study.csv", "study.md", "study.png")]
    write_json(paths[0], {"config": config, **study})
    write_csv(paths[1], csv_rows(study))
    write_text_atomically(paths[2], study_markdown(study, config))
    draw_study(study, paths[3])
    return paths
