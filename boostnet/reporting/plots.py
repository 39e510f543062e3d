"""Accuracy against multiply-adds for evaluated runs: anytime and budgeted-batch figures and a Markdown table.

Reads each run directory's anytime.json / budgeted.json (written by eval_cifar100.py or
eval_imagenet.py), overlays the runs (one seed each, with a 95% Wilson interval per point over
the test samples), names the dataset, test split, sample count and each run's checkpoint, and can
add the published CIFAR-100 MSDNet accuracies of docs/recipes.md (baseline and BoostNet, per exit,
at the published MACs of docs/costs.md) to CIFAR-100 runs.

The command is `python -m utils.plots` (utils/plots.py); this module is the library behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from boostnet.evaluation.checkpoint_choice import SHOWN_DIGEST_CHARS
from boostnet.reporting.markdown import markdown_table
from utils.errors import UserError
from utils.json_files import read_json

ANYTIME_FILE = "anytime.json"
BUDGETED_FILE = "budgeted.json"
MSDNET_C100_MACS = [
    15140452,
    25505992,
    37788460,
    52061840,
    62181620,
    74070872,
    87729596,
    100038944,
    110121860,
    121679336,
]
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals
SPLIT = "test"  # the split every plotted accuracy is measured on
ONE_SEED_NOTE = "one seed per run; bars: 95% Wilson interval over the test samples"
FORMATS = ("png", "pdf", "svg")
HEADER_KEYS = (
    "dataset",
    "test_samples",
    "checkpoint",
    "checkpoint_sha256",
    "checkpoint_kind",
    "checkpoint_epoch",
)
ROW_KEYS = {
    ANYTIME_FILE: ("exits", ("exit", "macs", "params", "top1", "top5", "nll", "ece")),
    BUDGETED_FILE: (
        "levels",
        ("level", "expected_cost", "val_accuracy", "test_accuracy", "test_nll", "test_ece"),
    ),
}


@dataclass
class Curve:
    """One line of a plot: accuracy (percent) at multiply-adds per image; `samples` is the test
    sample count behind each accuracy (None for published numbers, drawn without intervals) and
    `note` what the legend adds to the label (the checkpoint)."""

    label: str
    macs: list[float]
    accuracy: list[float]
    samples: int | None = None
    note: str = ""


REFERENCES = {
    "msdnet_c100": [
        Curve(
            "MSDNet (published)",
            MSDNET_C100_MACS,
            [64.6, 67.9, 69.4, 71.5, 72.8, 74.0, 74.7, 75.4, 75.5, 76.0],
        ),
        Curve(
            "BoostNet (published)",
            MSDNET_C100_MACS,
            [65.3, 70.0, 72.3, 74.2, 75.2, 75.9, 75.9, 76.5, 76.5, 76.3],
        ),
    ]
}
REFERENCE_DATASETS = {"msdnet_c100": "cifar100"}


@dataclass(frozen=True)
class Source:
    """What one result file was computed from: the checkpoint (file, SHA-256, kind, epoch) and
    the test set (dataset, sample count), as the evaluator's header records them."""

    result_file: Path
    checkpoint: str
    sha256: str
    kind: str
    epoch: int | None
    dataset: str
    test_samples: int

    @classmethod
    def of(cls, result_file: Path, data: dict[str, Any]) -> Source:
        """The source `data`, the checked JSON of `result_file`, names."""
        return cls(
            result_file,
            str(data["checkpoint"]),
            str(data["checkpoint_sha256"]),
            str(data["checkpoint_kind"]),
            data["checkpoint_epoch"],
            str(data["dataset"]),
            int(data["test_samples"]),
        )

    def checkpoint_note(self) -> str:
        """`best, epoch 7` (`epoch unknown` for an imported file that did not say)."""
        return f"{self.kind}, epoch {'unknown' if self.epoch is None else self.epoch}"

    def describe(self) -> str:
        """`runs/x/model_best.pth (best, epoch 7, sha256 1a2b3c4d5e6f7a8b)`."""
        return f"{self.checkpoint} ({self.checkpoint_note()}, sha256 {self.sha256[:SHOWN_DIGEST_CHARS]})"


@dataclass
class RunResults:
    """What the evaluator saved for one run (either part may be missing) and what from."""

    label: str
    anytime: dict[str, Any] | None
    budgeted: dict[str, Any] | None
    source: Source


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Run directory names, or the paths as given where two runs share a name."""
    names = [path.resolve().name for path in run_dirs]
    return [name if names.count(name) == 1 else str(path) for name, path in zip(names, run_dirs)]


def chosen_labels(run_dirs: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    """`--labels` (one per run, all different), else the runs' directory names."""
    if labels is None:
        return run_labels(run_dirs)
    if len(labels) != len(run_dirs):
        raise UserError(f"--labels: {len(labels)} label(s) for {len(run_dirs)} run(s); give one per run")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise UserError(
            f"--labels: {', '.join(map(repr, repeated))} given twice; legends need distinct labels"
        )
    return list(labels)


def read_results_file(path: Path) -> dict[str, Any] | None:
    """The saved evaluation file's JSON, None when it is missing; unreadable or not what the
    evaluator writes (its header, its rows) is a UserError."""
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    rows_key, row_keys = ROW_KEYS[path.name]
    rows = data.get(rows_key) if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UserError(f"{path} holds no '{rows_key}' list; it is not an evaluator result file")
    missing = [key for key in HEADER_KEYS if key not in data]
    missing += sorted({key for row in rows for key in row_keys if key not in row})
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)} (written by an older evaluator?); evaluate "
            f"{path.parent} again (eval_cifar100.py --evaluate-from {path.parent})"
        )
    return data


def one_checkpoint(sources: Sequence[Source]) -> Source:
    """The checkpoint every result file of a run was computed from; files of different
    checkpoints (one mode evaluated again after --resume) are a UserError."""
    first = sources[0]
    for other in sources[1:]:
        if other.sha256 != first.sha256:
            raise UserError(
                f"{first.result_file} is of {first.describe()} but {other.result_file} is of "
                f"{other.describe()}; refusing to plot results of different checkpoints "
                f"together: evaluate {first.result_file.parent} again with --evalmode both"
            )
    return first


def load_results(run_dir: Path, label: str) -> RunResults:
    """The saved evaluation of `run_dir`; a run that was never evaluated is a UserError."""
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    anytime, budgeted = (read_results_file(run_dir / name) for name in (ANYTIME_FILE, BUDGETED_FILE))
    sources = [
        Source.of(run_dir / name, data)
        for name, data in ((ANYTIME_FILE, anytime), (BUDGETED_FILE, budgeted))
        if data is not None
    ]
    if not sources:
        raise UserError(
            f"{run_dir} has no {ANYTIME_FILE} or {BUDGETED_FILE}; evaluate it first "
            f"(eval_cifar100.py --evaluate-from {run_dir})"
        )
    return RunResults(label, anytime, budgeted, one_checkpoint(sources))


def common_test_set(runs: Sequence[RunResults]) -> tuple[str, int]:
    """(dataset, test sample count) all runs were evaluated on; different ones are a UserError,
    since their accuracies are not comparable in one figure."""
    test_sets = {(run.source.dataset, run.source.test_samples) for run in runs}
    if len(test_sets) > 1:
        described = "; ".join(
            f"{run.label}: {run.source.dataset}, {run.source.test_samples} {SPLIT} samples" for run in runs
        )
        raise UserError(f"the runs were evaluated on different test sets ({described}); plot them separately")
    return test_sets.pop()


def reference_curves(name: str | None, dataset: str) -> list[Curve]:
    """The published curves `--reference` names, only for runs of the dataset they were measured on."""
    if name is None:
        return []
    if dataset != REFERENCE_DATASETS[name]:
        raise UserError(
            f"--reference {name}: the published curves are {REFERENCE_DATASETS[name]}'s, but "
            f"the runs were evaluated on {dataset}; drop --reference"
        )
    return REFERENCES[name]


def wilson_interval(accuracy: float, samples: int) -> tuple[float, float]:
    """95% Wilson score interval (percent) of a binomial proportion `accuracy` (percent) measured
    on `samples` samples: it stays inside [0, 100] and is sound near 0 and 100 %, unlike p ± z·se."""
    p, z2 = accuracy / 100, Z_95**2
    scale = 1 + z2 / samples
    centre = (p + z2 / (2 * samples)) / scale
    half = Z_95 * math.sqrt(p * (1 - p) / samples + z2 / (4 * samples**2)) / scale
    return 100 * (centre - half), 100 * (centre + half)


def run_curve(run: RunResults, rows: Sequence[dict[str, Any]], cost_key: str, accuracy_key: str) -> Curve:
    """One run's accuracy (`accuracy_key`) against cost (`cost_key`) over `rows`, with the test
    sample count for its intervals and its checkpoint for the legend."""
    return Curve(
        run.label,
        [row[cost_key] for row in rows],
        [row[accuracy_key] for row in rows],
        run.source.test_samples,
        run.source.checkpoint_note(),
    )


def anytime_curves(runs: Sequence[RunResults]) -> list[Curve]:
    """Top-1 accuracy of every exit at its cumulative cost, per run."""
    return [run_curve(run, run.anytime["exits"], "macs", "top1") for run in runs if run.anytime]


def budgeted_curves(runs: Sequence[RunResults]) -> list[Curve]:
    """Test accuracy of every budget level at its expected cost, per run."""
    return [
        run_curve(run, run.budgeted["levels"], "expected_cost", "test_accuracy")
        for run in runs
        if run.budgeted
    ]


def draw_curve(axes: Any, curve: Curve) -> None:
    """One curve: a marked line, with 95% Wilson error bars where its sample count is known."""
    xs = [m / 1e6 for m in curve.macs]
    label = f"{curve.label} ({curve.note})" if curve.note else curve.label
    style = {
        "marker": "o",
        "markersize": 3,
        "label": label,
        "linestyle": "--" if curve.samples is None else "-",
    }
    if curve.samples is None:
        axes.plot(xs, curve.accuracy, **style)
        return
    bounds = [wilson_interval(accuracy, curve.samples) for accuracy in curve.accuracy]
    errors = [
        [max(0.0, a - low) for a, (low, _) in zip(curve.accuracy, bounds)],  # max: rounding at 0 %
        [max(0.0, high - a) for a, (_, high) in zip(curve.accuracy, bounds)],
    ]
    axes.errorbar(xs, curve.accuracy, yerr=errors, capsize=2, elinewidth=0.8, **style)


def draw(curves: Sequence[Curve], title: str, paths: Sequence[Path]) -> None:
    """Accuracy against millions of multiply-adds, one curve each, saved to every path (its
    suffix picks the format); the legend says the runs are one seed each."""
    import matplotlib  # here: importing matplotlib takes a second the other functions need not pay

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    for curve in curves:
        draw_curve(axes, curve)
    axes.set(title=title, xlabel="multiply-adds per image (millions)", ylabel="top-1 accuracy (%)")
    axes.set_ylim(top=min(axes.get_ylim()[1], 100))  # no margin above what accuracy can reach
    axes.grid(alpha=0.3)
    one_seed = any(curve.samples is not None for curve in curves)
    axes.legend(title=ONE_SEED_NOTE if one_seed else None, title_fontsize="small", fontsize="small")
    figure.tight_layout()
    for path in paths:
        figure.savefig(path, dpi=150)
    plt.close(figure)


def figure_title(kind: str, title: str | None, test_set: tuple[str, int]) -> str:
    """`--title: kind` (or the kind alone) over `dataset, test split, N samples`."""
    dataset, samples = test_set
    heading = f"{title}: {kind.lower()}" if title else kind
    return f"{heading}\n{dataset}, {SPLIT} split, {samples:,} samples"


def interval_text(accuracy: float, samples: int) -> str:
    """`82.65–87.08` (850 of 1,000): the 95% Wilson interval in percent, two decimals."""
    low, high = wilson_interval(accuracy, samples)
    return f"{low:.2f}–{high:.2f}"


def provenance_markdown(runs: Sequence[RunResults], test_set: tuple[str, int]) -> list[str]:
    """What the numbers were measured on, and from which checkpoint of each run."""
    dataset, samples = test_set
    return [
        f"Dataset {dataset}, {SPLIT} split, {samples:,} samples. Each run is one seed (one training "
        f"run): its 95% intervals are Wilson score intervals over the {SPLIT} samples, so they cover "
        f"the sampling of the {SPLIT} set only, not the variation between seeds "
        f"(scripts/study.py measures that).",
        "## Runs",
        "\n".join(f"- {run.label}: {run.source.describe()}" for run in runs),
    ]


def anytime_section(runs: Sequence[RunResults], samples: int) -> list[str]:
    """The anytime table (one row per run and exit), or nothing when no run has one."""
    rows = [
        (
            run.label,
            e["exit"],
            f"{e['macs'] / 1e6:.2f}",
            f"{e['params']:,}",
            f"{e['top1']:.2f}",
            f"{e['top5']:.2f}",
            interval_text(e["top1"], samples),
            f"{e['nll']:.4f}",
            f"{e['ece']:.4f}",
        )
        for run in runs
        if run.anytime
        for e in run.anytime["exits"]
    ]
    header = ["run", "exit", "MMACs", "params", "top-1 %", "top-5 %", "top-1 95% CI", "NLL (nats)", "ECE"]
    return [f"## Anytime prediction ({SPLIT})", markdown_table(header, rows)] if rows else []


def budgeted_section(runs: Sequence[RunResults], samples: int) -> list[str]:
    """The budgeted-batch table (one row per run and level), or nothing when no run has one."""
    rows = [
        (
            run.label,
            level["level"],
            f"{level['expected_cost'] / 1e6:.2f}",
            f"{level['val_accuracy']:.2f}",
            f"{level['test_accuracy']:.2f}",
            interval_text(level["test_accuracy"], samples),
            f"{level['test_nll']:.4f}",
            f"{level['test_ece']:.4f}",
        )
        for run in runs
        if run.budgeted
        for level in run.budgeted["levels"]
    ]
    header = ["run", "level", "expected MMACs", "val top-1 %", "test top-1 %", "test 95% CI"]
    header += ["test NLL (nats)", "test ECE"]
    return ["## Budgeted batch classification", markdown_table(header, rows)] if rows else []


def reference_section(reference: Sequence[Curve]) -> list[str]:
    """The published curves drawn for comparison, or nothing without `--reference`."""
    rows = [
        (curve.label, n + 1, f"{macs / 1e6:.2f}", f"{accuracy:.1f}")
        for curve in reference
        for n, (macs, accuracy) in enumerate(zip(curve.macs, curve.accuracy))
    ]
    table = markdown_table(["curve", "exit", "MMACs", "top-1 %"], rows)
    return ["## Published reference (anytime, CIFAR-100)", table] if rows else []


def results_markdown(
    runs: Sequence[RunResults], reference: Sequence[Curve], test_set: tuple[str, int], title: str | None
) -> str:
    """The plotted numbers as Markdown: provenance, anytime per exit, budgeted per level, the reference."""
    samples = test_set[1]
    sections = [f"# {title or 'Results'}", *provenance_markdown(runs, test_set)]
    sections += (
        anytime_section(runs, samples) + budgeted_section(runs, samples) + reference_section(reference)
    )
    return "\n\n".join(sections) + "\n"


def write_plots(
    run_dirs: Sequence[Path],
    out: Path,
    reference_name: str | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Write anytime.<format>, budgeted.<format> (when any run has budgeted results) and
    results.md to `out`, after every check has passed; returns the files written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the plots")
    chosen = chosen_labels(run_dirs, labels)
    runs = [load_results(path, label) for path, label in zip(run_dirs, chosen)]
    test_set = common_test_set(runs)
    reference = reference_curves(reference_name, test_set[0])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {out}: {error.strerror or error}") from None
    written = []
    plots = {
        "anytime": ("Anytime prediction", anytime_curves(runs) + reference),
        "budgeted": ("Budgeted batch classification", budgeted_curves(runs)),
    }
    for name, (kind, curves) in plots.items():
        if curves:
            paths = [out / f"{name}.{suffix}" for suffix in dict.fromkeys(formats)]
            draw(curves, figure_title(kind, title, test_set), paths)
            written += paths
    (out / "results.md").write_text(results_markdown(runs, reference, test_set, title))
    return written + [out / "results.md"]
