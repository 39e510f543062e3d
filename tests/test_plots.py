"""utils.plots (the command) and boostnet.reporting.plots (the library): curves read from the
evaluator's JSON, figures written, results.md holds the same numbers, and both say what they were
measured on (dataset, test split, samples, checkpoint)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import matplotlib.image
import matplotlib.pyplot
import pytest

from boostnet.reporting import plots
from boostnet.reporting.plots import (
    REFERENCES,
    anytime_curves,
    budgeted_curves,
    load_results,
    run_labels,
    wilson_interval,
)
from utils.errors import run_cli
from utils.json_files import write_json
from utils.plots import main, plot_parser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def header(
    run_dir: Path,
    kind: str = "best",
    epoch: int | None = 7,
    dataset: str = "cifar100",
    test_samples: int = 10_000,
) -> dict[str, Any]:
    """The evaluator's header of a result file: the checkpoint (a digest per run, kind and epoch)
    and the test set it was measured on."""
    checkpoint = run_dir / f"model_{kind}.pth"
    return {
        "run": run_dir.name,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": hashlib.sha256(f"{checkpoint}:{epoch}".encode()).hexdigest(),
        "checkpoint_kind": kind,
        "checkpoint_epoch": epoch,
        "checkpoint_reason": "test",
        "arch": "msdnet_ge",
        "loss": "boost",
        "dataset": dataset,
        "test_samples": test_samples,
    }


def write_anytime(run_dir: Path, top1: list[float], **checkpoint: Any) -> None:
    """anytime.json in the evaluator's format; `checkpoint` as `header` takes it."""
    exits = [
        {
            "exit": n + 1,
            "macs": 1_000_000 * (n + 1),
            "params": 1000 * (n + 1),
            "top1": acc,
            "top5": acc + 10,
            "nll": 1.5 - n / 4,
            "ece": 0.05 + n / 100,
        }
        for n, acc in enumerate(top1)
    ]
    write_json(run_dir / "anytime.json", {**header(run_dir, **checkpoint), "exits": exits})


def write_budgeted(run_dir: Path, **checkpoint: Any) -> None:
    """budgeted.json of 39 levels in the evaluator's format; `checkpoint` as `header` takes it."""
    levels = [
        {
            "level": k,
            "q": k / 20,
            "expected_cost": 1_000_000 + 25_000 * k,
            "val_accuracy": 50 + k / 2,
            "test_accuracy": 40 + k / 4,
            "thresholds": [0.5, -math.inf],
            "exit_counts": [10, 5],
            "test_nll": 2 - k / 40,
            "test_ece": k / 1000,
        }
        for k in range(1, 40)
    ]
    write_json(
        run_dir / "budgeted.json", {**header(run_dir, **checkpoint), "val_samples": 500, "levels": levels}
    )


def write_run(run_dir: Path, top1: list[float], with_budgeted: bool = True, **checkpoint: Any) -> Path:
    """A run directory holding anytime.json (and budgeted.json) of one checkpoint."""
    run_dir.mkdir(parents=True)
    write_anytime(run_dir, top1, **checkpoint)
    if with_budgeted:
        write_budgeted(run_dir, **checkpoint)
    return run_dir


def refusal(argv: list[str], capsys) -> str:
    """The one line `python -m utils.plots argv` refuses with (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1
    return lines[0]


def drawn_figures(monkeypatch) -> list:
    """The figures `draw` closes from now on, kept to be inspected."""
    closed = []
    monkeypatch.setattr(matplotlib.pyplot, "close", closed.append)
    return closed


@pytest.fixture
def two_runs(tmp_path) -> list[Path]:
    return [
        write_run(tmp_path / "boostnet", [61.25, 70.5]),
        write_run(tmp_path / "msdnet_joint", [60.0, 68.75], with_budgeted=False),
    ]


def test_curves_carry_the_saved_numbers(two_runs):
    runs = [load_results(path, label) for path, label in zip(two_runs, run_labels(two_runs))]
    anytime = anytime_curves(runs)
    budgeted = budgeted_curves(runs)
    assert [(c.label, c.macs, c.accuracy) for c in anytime] == [
        ("boostnet", [1_000_000, 2_000_000], [61.25, 70.5]),
        ("msdnet_joint", [1_000_000, 2_000_000], [60.0, 68.75]),
    ]
    assert [c.label for c in budgeted] == ["boostnet"]
    assert budgeted[0].macs[0] == 1_025_000 and budgeted[0].accuracy[-1] == 40 + 39 / 4


def test_writes_pngs_and_markdown_table(two_runs, tmp_path, capsys):
    out = tmp_path / "plots"
    main([*map(str, two_runs), "--out", str(out), "--reference", "msdnet_c100"])

    for name in ("anytime.png", "budgeted.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert matplotlib.image.imread(out / name).shape[0] > 100
    markdown = (out / "results.md").read_text()
    assert "| boostnet | 2 | 2.00 | 2,000 | 70.50 | 80.50 |" in markdown
    assert "| msdnet_joint | 1 | 1.00 | 1,000 | 60.00 | 70.00 |" in markdown
    assert "| boostnet | 39 | 1.98 | 69.50 | 49.75 |" in markdown
    assert "msdnet_joint | 1 | 1.0" not in markdown.split("## Budgeted")[1]
    assert "| BoostNet (published) | 10 | 121.68 | 76.3 |" in markdown
    assert "| MSDNet (published) | 1 | 15.14 | 64.6 |" in markdown
    assert str(out / "results.md") in capsys.readouterr().out


def test_reference_uses_the_golden_macs_and_published_accuracies():
    baseline, boostnet = REFERENCES["msdnet_c100"]
    assert baseline.macs == boostnet.macs and len(baseline.macs) == 10
    assert baseline.macs[0] == 15140452 and baseline.macs[-1] == 121679336
    assert (baseline.accuracy[0], boostnet.accuracy[0], boostnet.accuracy[-1]) == (64.6, 65.3, 76.3)


def test_budgeted_plot_skipped_when_no_run_has_it(tmp_path):
    run = write_run(tmp_path / "anytime_only", [50.0], with_budgeted=False)
    main([str(run), "--out", str(tmp_path / "plots")])
    assert (tmp_path / "plots" / "anytime.png").is_file()
    assert not (tmp_path / "plots" / "budgeted.png").exists()
    assert "## Budgeted" not in (tmp_path / "plots" / "results.md").read_text()


def test_runs_sharing_a_name_are_labelled_by_path(tmp_path):
    paths = [tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "c" / "other"]
    assert run_labels(paths) == [str(paths[0]), str(paths[1]), "other"]


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "has no anytime.json or budgeted.json"),
    ],
)
def test_bad_run_directory_is_one_line(tmp_path, capsys, make, expected):
    run_dir = make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(run_dir), "--out", str(tmp_path / "plots")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(lines) == 1 and expected in lines[0] and str(run_dir) in lines[0]
    assert not (tmp_path / "plots").exists()


def test_a_flat_curve_near_100_percent_is_not_drawn_with_room_above_100(tmp_path, monkeypatch):
    closed = drawn_figures(monkeypatch)
    plots.draw([plots.Curve("flat", [1e6, 2e6, 3e6], [98.6, 98.6, 98.6])], "flat", [tmp_path / "f.png"])
    bottom, top = closed[0].axes[0].get_ylim()
    assert bottom < 98.6 < top <= 100


def test_results_of_two_checkpoints_of_one_run_are_refused(tmp_path, capsys):
    """After --resume and evaluating one mode again, anytime.json and budgeted.json disagree."""
    run = tmp_path / "resumed"
    run.mkdir()
    write_anytime(run, [61.0, 70.0], kind="latest", epoch=12)
    write_budgeted(run, kind="best", epoch=8)
    message = refusal([str(run), "--out", str(tmp_path / "plots")], capsys)
    anytime_digest = header(run, kind="latest", epoch=12)["checkpoint_sha256"][:16]
    budgeted_digest = header(run, kind="best", epoch=8)["checkpoint_sha256"][:16]
    assert anytime_digest != budgeted_digest
    for part in (
        str(run / "anytime.json"),
        "latest, epoch 12",
        anytime_digest,
        str(run / "budgeted.json"),
        "best, epoch 8",
        budgeted_digest,
        "different checkpoints",
    ):
        assert part in message
    assert not (tmp_path / "plots").exists()


def test_results_of_one_checkpoint_are_plotted_together(tmp_path):
    run = write_run(tmp_path / "run", [61.0, 70.0], kind="latest", epoch=12)
    main([str(run), "--out", str(tmp_path / "plots")])
    assert (tmp_path / "plots" / "anytime.png").is_file() and (tmp_path / "plots" / "budgeted.png").is_file()


def test_a_result_file_without_the_checkpoint_header_is_refused(tmp_path, capsys):
    run = write_run(tmp_path / "old", [61.0])
    row = {"exit": 1, "macs": 1, "params": 1, "top1": 61.0, "top5": 71.0, "nll": 1.0, "ece": 0.1}
    write_json(run / "anytime.json", {"run": "old", "exits": [row]})
    message = refusal([str(run), "--out", str(tmp_path / "plots")], capsys)
    assert all(part in message for part in (str(run / "anytime.json"), "checkpoint_sha256", "test_samples"))
    assert not (tmp_path / "plots").exists()


def test_figures_and_results_name_dataset_split_samples_checkpoint_and_epoch(tmp_path, monkeypatch):
    runs = [
        write_run(tmp_path / "boostnet", [61.25, 70.5], dataset="fashion_mnist", test_samples=1000),
        write_run(
            tmp_path / "joint",
            [60.0, 68.75],
            kind="latest",
            epoch=None,
            dataset="fashion_mnist",
            test_samples=1000,
        ),
    ]
    figures = drawn_figures(monkeypatch)
    main([*map(str, runs), "--out", str(tmp_path / "plots")])

    assert len(figures) == 2
    for figure, kind in zip(figures, ("Anytime prediction", "Budgeted batch classification")):
        axes = figure.axes[0]
        assert axes.get_title() == f"{kind}\nfashion_mnist, test split, 1,000 samples"
        legend = axes.get_legend()
        assert [text.get_text() for text in legend.get_texts()] == [
            "boostnet (best, epoch 7)",
            "joint (latest, epoch unknown)",
        ]
        assert "one seed per run" in legend.get_title().get_text()
    markdown = (tmp_path / "plots" / "results.md").read_text()
    assert "Dataset fashion_mnist, test split, 1,000 samples. Each run is one seed" in markdown
    digest = header(runs[0], dataset="fashion_mnist", test_samples=1000)["checkpoint_sha256"][:16]
    assert f"- boostnet: {runs[0] / 'model_best.pth'} (best, epoch 7, sha256 {digest})" in markdown
    assert f"- joint: {runs[1] / 'model_latest.pth'} (latest, epoch unknown, sha256 " in markdown


def test_results_md_carries_nll_ece_and_the_wilson_interval(two_runs, tmp_path):
    main([*map(str, two_runs), "--out", str(tmp_path / "plots")])
    markdown = (tmp_path / "plots" / "results.md").read_text()
    low, high = wilson_interval(70.5, 10_000)
    assert "| top-1 % | top-5 % | top-1 95% CI | NLL (nats) | ECE |" in markdown
    assert (
        f"| boostnet | 2 | 2.00 | 2,000 | 70.50 | 80.50 | {low:.2f}–{high:.2f} | 1.2500 | 0.0600 |"
        in markdown
    )
    low, high = wilson_interval(49.75, 10_000)
    assert f"| boostnet | 39 | 1.98 | 69.50 | 49.75 | {low:.2f}–{high:.2f} | 1.0250 | 0.0390 |" in markdown


def test_labels_and_title_replace_the_names_and_the_heading(two_runs, tmp_path, monkeypatch):
    figures = drawn_figures(monkeypatch)
    main(
        [
            *map(str, two_runs),
            "--out",
            str(tmp_path / "plots"),
            "--labels",
            "BoostNet r=0.5",
            "MSDNet",
            "--title",
            "Seed 0 study",
        ]
    )
    axes = figures[0].axes[0]
    assert axes.get_title() == "Seed 0 study: anytime prediction\ncifar100, test split, 10,000 samples"
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [
        "BoostNet r=0.5 (best, epoch 7)",
        "MSDNet (best, epoch 7)",
    ]
    markdown = (tmp_path / "plots" / "results.md").read_text()
    assert markdown.startswith("# Seed 0 study\n")
    assert "| BoostNet r=0.5 | 2 | 2.00 |" in markdown and "| MSDNet | 1 | 1.00 |" in markdown
    assert "| boostnet |" not in markdown and "| msdnet_joint |" not in markdown


@pytest.mark.parametrize(
    "labels, expected",
    [
        (["only_one"], "--labels: 1 label(s) for 2 run(s)"),
        (["same", "same"], "--labels: 'same' given twice"),
    ],
)
def test_bad_labels_are_one_line(two_runs, tmp_path, capsys, labels, expected):
    message = refusal([*map(str, two_runs), "--out", str(tmp_path / "plots"), "--labels", *labels], capsys)
    assert message.startswith(f"error: {expected}")
    assert not (tmp_path / "plots").exists()


def test_pdf_and_svg_are_written_as_asked(two_runs, tmp_path, capsys):
    out = tmp_path / "plots"
    main([*map(str, two_runs), "--out", str(out), "--format", "pdf", "svg"])
    for name in ("anytime", "budgeted"):
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
        assert "<svg" in (out / f"{name}.svg").read_text()
        assert not (out / f"{name}.png").exists()
    assert str(out / "budgeted.svg") in capsys.readouterr().out


def test_wilson_interval_of_850_in_1000_matches_the_hand_computation():
    # p = 0.85, n = 1000, z = 1.959964, z^2 = 3.841459:
    # centre = (p + z^2/2n) / (1 + z^2/n) = 0.851920730 / 1.003841459 = 0.848660...
    # half   = z * sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
    #        = 1.959964 * sqrt(0.0001275 + 0.00000096036) / 1.003841459 = 0.022129...
    # bounds = 0.826531, 0.870790
    low, high = wilson_interval(85.0, 1000)
    assert low == pytest.approx(82.6531, abs=1e-3) and high == pytest.approx(87.0790, abs=1e-3)
    assert 85.0 - low > high - 85.0  # not symmetric: it leans towards 50 %


@pytest.mark.parametrize("accuracy", [0.0, 100.0])
def test_wilson_interval_stays_inside_0_and_100_percent(accuracy):
    low, high = wilson_interval(accuracy, 100)
    assert -1e-9 <= low <= accuracy + 1e-9 and accuracy - 1e-9 <= high <= 100 + 1e-9 and high - low > 3


def test_each_point_of_a_run_has_its_wilson_bar_and_published_curves_none(two_runs, tmp_path, monkeypatch):
    figures = drawn_figures(monkeypatch)
    main([*map(str, two_runs), "--out", str(tmp_path / "plots"), "--reference", "msdnet_c100"])
    bars = figures[0].axes[0].containers
    assert len(bars) == 2  # the two runs, not the two published curves
    segments = bars[0].lines[2][0].get_segments()
    assert [tuple(segment[:, 1]) for segment in segments] == [
        pytest.approx(wilson_interval(61.25, 10_000)),
        pytest.approx(wilson_interval(70.5, 10_000)),
    ]


def test_reference_is_refused_for_a_run_not_on_cifar100(tmp_path, capsys):
    run = write_run(tmp_path / "fm", [80.0, 85.0], dataset="fashion_mnist")
    message = refusal([str(run), "--out", str(tmp_path / "plots"), "--reference", "msdnet_c100"], capsys)
    assert "--reference msdnet_c100" in message and "fashion_mnist" in message and "cifar100" in message
    assert not (tmp_path / "plots").exists()


def test_runs_on_different_test_sets_are_refused(tmp_path, capsys):
    runs = [write_run(tmp_path / "c100", [60.0]), write_run(tmp_path / "fm", [85.0], dataset="fashion_mnist")]
    message = refusal([*map(str, runs), "--out", str(tmp_path / "plots")], capsys)
    assert "different test sets" in message and "c100: cifar100" in message and "fm: fashion_mnist" in message
    assert not (tmp_path / "plots").exists()


def test_help_documents_every_flag(capsys):
    parser = plot_parser()
    actions = [action for action in parser._actions if action.dest != "help"]
    assert {action.dest for action in actions} == {"runs", "out", "reference", "labels", "title", "formats"}
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for action in actions:
        assert action.help and " ".join(action.help.split()) in text
        assert all(option in text for option in action.option_strings)
