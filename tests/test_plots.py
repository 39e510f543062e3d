"""utils.plots: curves read from the evaluator's JSON, PNGs written, results.md holds the same numbers."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import pytest

from utils import plots
from utils.errors import run_cli
from utils.json_files import write_json
from utils.plots import REFERENCES, anytime_curves, budgeted_curves, load_results, main, run_labels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(run_dir: Path, top1: list[float], with_budgeted: bool = True) -> Path:
    """A run directory holding anytime.json (and budgeted.json) in the evaluator's format."""
    run_dir.mkdir(parents=True)
    exits = [{"exit": n + 1, "macs": 1_000_000 * (n + 1), "params": 1000 * (n + 1), "top1": acc,
              "top5": acc + 10} for n, acc in enumerate(top1)]
    write_json(run_dir / "anytime.json", {"run": run_dir.name, "exits": exits})
    if with_budgeted:
        levels = [{"level": k, "q": k / 20, "expected_cost": 1_000_000 + 25_000 * k,
                   "val_accuracy": 50 + k / 2, "test_accuracy": 40 + k / 4, "thresholds": [0.5, -math.inf],
                   "exit_counts": [10, 5]} for k in range(1, 40)]
        write_json(run_dir / "budgeted.json", {"run": run_dir.name, "levels": levels})
    return run_dir


@pytest.fixture
def two_runs(tmp_path) -> list[Path]:
    return [write_run(tmp_path / "boostnet", [61.25, 70.5]),
            write_run(tmp_path / "msdnet_joint", [60.0, 68.75], with_budgeted=False)]


def test_curves_carry_the_saved_numbers(two_runs):
    runs = [load_results(path, label) for path, label in zip(two_runs, run_labels(two_runs))]
    anytime = anytime_curves(runs)
    budgeted = budgeted_curves(runs)
    assert [(c.label, c.macs, c.accuracy) for c in anytime] == [
        ("boostnet", [1_000_000, 2_000_000], [61.25, 70.5]),
        ("msdnet_joint", [1_000_000, 2_000_000], [60.0, 68.75])]
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


@pytest.mark.parametrize("make, expected", [
    (lambda root: root / "missing", "does not exist"),
    (lambda root: (root / "empty").mkdir() or root / "empty", "has no anytime.json or budgeted.json"),
])
def test_bad_run_directory_is_one_line(tmp_path, capsys, make, expected):
    run_dir = make(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(run_dir), "--out", str(tmp_path / "plots")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(lines) == 1 and expected in lines[0] and str(run_dir) in lines[0]
    assert not (tmp_path / "plots").exists()


def test_a_flat_curve_near_100_percent_is_not_drawn_with_room_above_100(tmp_path, monkeypatch):
    closed = []
    monkeypatch.setattr(plots.plt, "close", closed.append)
    plots.draw([plots.Curve("flat", [1e6, 2e6, 3e6], [98.6, 98.6, 98.6])], "flat", tmp_path / "f.png")
    bottom, top = closed[0].axes[0].get_ylim()
    assert bottom < 98.6 < top <= 100
