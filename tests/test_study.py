"""Studies over seeds: the statistics against hand computations, the files, and scripts/study.py
end to end on digits (a second invocation reuses the finished runs)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys

import pytest

from boostnet.reporting.study_report import csv_rows, study_markdown, write_study
from boostnet.reporting.study_stats import (
    RunResult,
    aggregate,
    common_grid,
    curve_area,
    interpolate,
    summarize,
    t_quantile_975,
)
from tests.conftest import ROOT, TINY_MSDNET
from utils.errors import run_cli
from utils.json_files import read_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def t_cdf(x: float, df: int, steps: int = 4000) -> float:
    """Student-t CDF at x > 0 by Simpson's rule on the density (the reference for the table)."""
    scale = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    density = [scale * (1 + (x * i / steps) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
    weights = [1 if i in (0, steps) else 4 if i % 2 else 2 for i in range(steps + 1)]
    return 0.5 + x / steps / 3 * sum(w * d for w, d in zip(weights, density))


def test_t_quantiles_put_2_5_percent_in_each_tail():
    assert t_quantile_975(2) == 4.302653
    for df in range(1, 31):
        assert t_cdf(t_quantile_975(df), df) == pytest.approx(0.975, abs=1e-6), df
    for df in (31, 45, 100, 1000):  # beyond the table: the expansion
        assert t_cdf(t_quantile_975(df), df) == pytest.approx(0.975, abs=1e-5), df
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_summary_is_the_mean_sample_std_and_t_interval():
    summary = summarize([70.0, 72.0, 74.0])
    assert (summary.n, summary.mean, summary.std) == (3, 72.0, 2.0)
    assert summary.ci95 == pytest.approx(4.302653 * 2.0 / math.sqrt(3))  # 4.968276
    single = summarize([61.5])
    assert (single.n, single.mean, single.std, single.ci95) == (1, 61.5, None, None)


def test_area_is_the_exact_mean_of_the_piecewise_linear_curve():
    # 50 -> 70 from cost 0 to 10, flat 70 to cost 20; over [5, 15]: (5*65 + 5*70) / 10
    assert curve_area([0, 10, 20], [50, 70, 70], 5, 15) == pytest.approx(67.5)
    # unsorted, and two points at cost 10 (60 and 80) merged into their mean 70: same curve
    assert curve_area([20, 0, 10, 10], [70, 50, 60, 80], 5, 15) == pytest.approx(67.5)
    assert curve_area([0, 10], [40, 60], 0, 10) == pytest.approx(50.0)


def test_grid_spans_the_costs_every_run_covers_and_interpolates_linearly():
    runs = [
        RunResult("a", 0, [], [], [1, 3, 5], [10, 30, 50]),
        RunResult("a", 1, [], [], [2, 4, 6], [0, 40, 40]),
    ]
    grid = common_grid(runs, points=4)
    assert grid == [2.0, 3.0, 4.0, 5.0]
    assert interpolate([1, 3, 5], [10, 30, 50], grid) == pytest.approx([20, 30, 40, 50])
    assert interpolate([2, 4, 6], [0, 40, 40], grid) == pytest.approx([0, 20, 40, 40])
    with pytest.raises(ValueError, match="outside"):
        interpolate([2, 4, 6], [0, 40, 40], [1.5])
    with pytest.raises(ValueError, match="share no range"):
        common_grid([runs[0], RunResult("b", 0, [], [], [6, 7], [1, 2])])


def synthetic_runs() -> list[RunResult]:
    """boost seeds 0-2 and joint seeds 0-1 (seed 2 missing), two exits, linear budgeted curves."""

    def run(variant, seed, top1, accuracy_at_2):
        return RunResult(variant, seed, [1e6, 2e6], top1, [1e6, 3e6], [top1[0], accuracy_at_2])

    return [
        run("boost", 0, [60.0, 70.0], 80.0),
        run("boost", 1, [62.0, 71.0], 82.0),
        run("boost", 2, [64.0, 75.0], 84.0),
        run("joint", 0, [59.0, 68.0], 70.0),
        run("joint", 1, [60.0, 70.0], 72.0),
    ]


def test_aggregate_matches_a_hand_computation():
    study = aggregate(synthetic_runs(), reference="boost", grid_points=3)
    assert study["variants"] == ["boost", "joint"]
    assert study["seeds"] == {"boost": [0, 1, 2], "joint": [0, 1]}
    exit1 = study["anytime"]["boost"][0]
    assert exit1["exit"] == 1 and exit1["macs"] == 1e6
    assert exit1["top1"]["mean"] == 62.0 and exit1["top1"]["std"] == 2.0
    assert exit1["top1"]["ci95"] == pytest.approx(4.302653 * 2 / math.sqrt(3))
    # paired over seeds 0 and 1 only: exit 1 differences 1, 2; exit 2 differences 2, 1
    paired = study["paired"]["joint"]
    assert paired["seeds"] == [0, 1]
    for row in paired["exits"]:
        assert (row["n"], row["mean"], row["std"]) == (2, 1.5, pytest.approx(math.sqrt(0.5)))
        assert row["ci95"] == pytest.approx(12.706205 * math.sqrt(0.5) / math.sqrt(2))
    # every curve is linear from (1e6, exit-1 top-1) to (3e6, a): grid 1e6, 2e6, 3e6, area = mean of ends
    assert study["budget_grid"] == [1e6, 2e6, 3e6]
    assert study["budgeted"]["boost"][1]["mean"] == pytest.approx((70 + 72 + 74) / 3)
    runs = {(r["variant"], r["seed"]): r["auc"] for r in study["runs"]}
    assert runs == pytest.approx(
        {("boost", 0): 70, ("boost", 1): 72, ("boost", 2): 74, ("joint", 0): 64.5, ("joint", 1): 66}
    )
    assert study["auc"]["boost"]["mean"] == pytest.approx(72.0)
    assert study["auc"]["joint"]["ci95"] == pytest.approx(12.706205 * math.sqrt(1.125) / math.sqrt(2))
    assert paired["auc"]["mean"] == pytest.approx(5.75)  # (70 - 64.5 + 72 - 66) / 2
    assert paired["auc"]["std"] == pytest.approx(math.sqrt(0.125))


def test_one_seed_is_well_defined_and_the_files_hold_the_numbers(tmp_path):
    study = aggregate([r for r in synthetic_runs() if r.seed == 0], grid_points=3)
    assert study["anytime"]["joint"][1]["top1"] == {"n": 1, "mean": 68.0, "std": None, "ci95": None}
    config = {"dataset": "digits", "command": "scripts/study.py --out x"}
    paths = write_study(tmp_path, study, config)

    saved = read_json(paths[0])  # strict JSON: no NaN or Infinity anywhere
    assert saved["config"] == config and saved["paired"]["joint"]["auc"]["ci95"] is None
    rows = list(csv.DictReader(paths[1].open()))
    assert rows == [{key: str(value) for key, value in row.items()} for row in csv_rows(study)]
    difference = next(r for r in rows if r["kind"] == "paired_top1_difference" and r["exit"] == "2")
    assert (difference["variant"], float(difference["mean"]), difference["ci95"]) == (
        "boost-joint",
        2.0,
        "n/a",
    )
    markdown = paths[2].read_text()
    assert markdown == study_markdown(study, config)
    assert "| 2 | 2.00 | 70.00 ± n/a | 68.00 ± n/a |" in markdown
    assert "| AUC | 5.50 ± n/a |" in markdown
    assert paths[3].read_bytes()[:8] == PNG_MAGIC


@pytest.fixture(scope="module")
def study_script():
    """scripts/study.py as a module (registered, as its dataclass needs)."""
    spec = importlib.util.spec_from_file_location("study_script", ROOT / "scripts" / "study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


TINY_RUN = [
    *TINY_MSDNET,
    "--epochs",
    "1",
    "--lr_milestones",
    "1",
    "--max-steps-per-epoch",
    "2",
    "--device",
    "cpu",
    "--eval-batch-size",
    "128",
]


def test_reserved_flags_are_refused_before_any_work(study_script, tmp_path, capsys):
    study = study_script
    with pytest.raises(SystemExit) as stop:
        run_cli(study.main, ["--out", str(tmp_path / "s"), "--", "--seed", "3"])
    assert stop.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("--seed is set by the study for every run; use --seeds / --dataset / --out")
    )
    assert not (tmp_path / "s").exists()


TWO_SEEDS_TWO_VARIANTS = ["--seeds", "0", "1", "--variants", "boost", "joint", "--jobs", "2"]


def test_study_end_to_end_then_reused_refused_and_resumed(study_script, tmp_path, capsys):
    study = study_script
    out = tmp_path / "study"
    argv = ["--out", str(out), *TWO_SEEDS_TWO_VARIANTS, "--dataset", "digits", "--", *TINY_RUN]
    study.main(argv)
    first = capsys.readouterr().out
    assert first.count("trained in") == 4 and "reused" not in first
    saved = json.loads((out / "study.json").read_text())
    assert saved["seeds"] == {"boost": [0, 1], "joint": [0, 1]}
    assert [row["top1"]["n"] for row in saved["anytime"]["joint"]] == [2, 2, 2]
    assert saved["paired"]["joint"]["seeds"] == [0, 1] and len(saved["budget_grid"]) == 50
    assert json.loads((out / "study_config.json").read_text())["argv"] == argv
    assert (out / "study.png").read_bytes()[:8] == PNG_MAGIC
    assert "| 3 |" in (out / "study.md").read_text()
    files = sorted((out / "runs").glob("*/model_latest.pth")) + sorted((out / "runs").glob("*/*.json"))
    stamps = {path: path.stat().st_mtime_ns for path in files}

    study.main(argv)
    second = capsys.readouterr().out
    assert second.count("reused") == 4 and "training" not in second
    assert {path: path.stat().st_mtime_ns for path in files} == stamps
    assert json.loads((out / "study.json").read_text())["runs"] == saved["runs"]

    with pytest.raises(SystemExit) as stop:  # other flags for the same runs: refused, nothing touched
        run_cli(study.main, argv + ["--epochs", "2"])
    assert stop.value.code == 2
    assert "it was trained with epochs=1, the study now gives 2" in capsys.readouterr().err
    assert {path: path.stat().st_mtime_ns for path in files} == stamps

    (out / "runs" / "joint_seed1" / "anytime.json").unlink()  # an evaluation lost: resumed, re-evaluated
    study.main(argv)
    third = capsys.readouterr().out
    assert third.count("reused") == 3 and "joint_seed1: resuming training" in third
    latest = out / "runs" / "joint_seed1" / "model_latest.pth"
    assert latest.stat().st_mtime_ns == stamps[latest]  # its one epoch was done: nothing retrained
    assert json.loads((out / "study.json").read_text())["runs"] == saved["runs"]
