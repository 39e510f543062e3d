"""Accuracy against multiply-adds for evaluated runs: anytime and budgeted-batch PNGs and a Markdown table.

Reads each run directory's anytime.json / budgeted.json (written by eval_cifar100.py or
eval_imagenet.py), overlays the runs labelled by run name, and can add the published
CIFAR-100 MSDNet accuracies of docs/recipes.md (baseline and BoostNet, per exit, at the published
MACs of docs/costs.md).

    python -m utils.plots runs/boostnet runs/msdnet_joint --out results/plots --reference msdnet_c100
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from args import OneLineParser  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.json_files import read_json  # noqa: E402

ANYTIME_FILE = "anytime.json"
BUDGETED_FILE = "budgeted.json"
MSDNET_C100_MACS = [15140452, 25505992, 37788460, 52061840, 62181620, 74070872, 87729596, 100038944,
                    110121860, 121679336]


@dataclass
class Curve:
    """One line of a plot: accuracy (percent) at multiply-adds per image."""

    label: str
    macs: list[float]
    accuracy: list[float]


REFERENCES = {"msdnet_c100": [
    Curve("MSDNet (published)", MSDNET_C100_MACS,
          [64.6, 67.9, 69.4, 71.5, 72.8, 74.0, 74.7, 75.4, 75.5, 76.0]),
    Curve("BoostNet (published)", MSDNET_C100_MACS,
          [65.3, 70.0, 72.3, 74.2, 75.2, 75.9, 75.9, 76.5, 76.5, 76.3]),
]}


@dataclass
class RunResults:
    """What the evaluator saved for one run (either part may be missing)."""

    label: str
    anytime: dict[str, Any] | None
    budgeted: dict[str, Any] | None


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Run directory names, or the paths as given where two runs share a name."""
    names = [path.resolve().name for path in run_dirs]
    return [name if names.count(name) == 1 else str(path) for name, path in zip(names, run_dirs)]


def read_results_file(path: Path) -> dict[str, Any] | None:
    """The saved evaluation file's JSON, None when it is missing; unreadable is a UserError."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}") from None


def load_results(run_dir: Path, label: str) -> RunResults:
    """The saved evaluation of `run_dir`; a run that was never evaluated is a UserError."""
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    results = RunResults(label, read_results_file(run_dir / ANYTIME_FILE), read_results_file(run_dir / BUDGETED_FILE))
    if results.anytime is None and results.budgeted is None:
        raise UserError(f"{run_dir} has no {ANYTIME_FILE} or {BUDGETED_FILE}; evaluate it first "
                        f"(eval_cifar100.py --evaluate-from {run_dir})")
    return results


def anytime_curves(runs: Sequence[RunResults]) -> list[Curve]:
    """Top-1 accuracy of every exit at its cumulative cost, per run."""
    return [Curve(run.label, [e["macs"] for e in run.anytime["exits"]],
                  [e["top1"] for e in run.anytime["exits"]]) for run in runs if run.anytime]


def budgeted_curves(runs: Sequence[RunResults]) -> list[Curve]:
    """Test accuracy of every budget level at its expected cost, per run."""
    return [Curve(run.label, [level["expected_cost"] for level in run.budgeted["levels"]],
                  [level["test_accuracy"] for level in run.budgeted["levels"]])
            for run in runs if run.budgeted]


def draw(curves: Sequence[Curve], title: str, path: Path) -> None:
    """Accuracy against millions of multiply-adds, one marked line per curve, saved as PNG."""
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    for curve in curves:
        axes.plot([m / 1e6 for m in curve.macs], curve.accuracy, marker="o", markersize=3,
                  label=curve.label, linestyle="--" if "published" in curve.label else "-")
    axes.set(title=title, xlabel="multiply-adds per image (millions)", ylabel="top-1 accuracy (%)")
    axes.set_ylim(top=min(axes.get_ylim()[1], 100))  # no margin above what accuracy can reach
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def results_markdown(runs: Sequence[RunResults], reference: Sequence[Curve]) -> str:
    """The plotted numbers as Markdown: anytime per exit, budgeted per level, the reference."""
    sections = ["# Results"]
    anytime = [(run.label, e["exit"], f"{e['macs'] / 1e6:.2f}", f"{e['params']:,}", f"{e['top1']:.2f}",
                f"{e['top5']:.2f}") for run in runs if run.anytime for e in run.anytime["exits"]]
    if anytime:
        sections += ["## Anytime prediction (test)",
                     markdown_table(["run", "exit", "MMACs", "params", "top-1 %", "top-5 %"], anytime)]
    budgeted = [(run.label, level["level"], f"{level['expected_cost'] / 1e6:.2f}",
                 f"{level['val_accuracy']:.2f}", f"{level['test_accuracy']:.2f}")
                for run in runs if run.budgeted for level in run.budgeted["levels"]]
    if budgeted:
        sections += ["## Budgeted batch classification",
                     markdown_table(["run", "level", "expected MMACs", "val top-1 %", "test top-1 %"],
                                    budgeted)]
    if reference:
        sections += ["## Published reference (anytime, CIFAR-100)",
                     markdown_table(["curve", "exit", "MMACs", "top-1 %"],
                                    [(curve.label, n + 1, f"{macs / 1e6:.2f}", f"{accuracy:.1f}")
                                     for curve in reference
                                     for n, (macs, accuracy) in enumerate(zip(curve.macs, curve.accuracy))])]
    return "\n\n".join(sections) + "\n"


def parse_plot_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m utils.plots", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="evaluated run directories")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs and results.md")
    parser.add_argument("--reference", choices=sorted(REFERENCES), default=None,
                        help="overlay published accuracies on the anytime plot")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Write anytime.png, budgeted.png (when any run has budgeted results) and results.md to --out."""
    options = parse_plot_args(argv)
    if options.out.exists() and not options.out.is_dir():
        raise UserError(f"--out {options.out} is a file; give a folder for the plots")
    runs = [load_results(path, label) for path, label in zip(options.runs, run_labels(options.runs))]
    reference = REFERENCES.get(options.reference, [])
    try:
        options.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {options.out}: {error.strerror or error}") from None
    written = []
    plots = {"anytime.png": ("Anytime prediction", anytime_curves(runs) + reference),
             "budgeted.png": ("Budgeted batch classification", budgeted_curves(runs))}
    for name, (title, curves) in plots.items():
        if curves:
            draw(curves, title, options.out / name)
            written.append(options.out / name)
    (options.out / "results.md").write_text(results_markdown(runs, reference))
    written.append(options.out / "results.md")
    print("wrote " + ", ".join(str(path) for path in written))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
