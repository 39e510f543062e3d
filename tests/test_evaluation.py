"""The shared evaluator: outputs equal a direct computation, the cache follows the checkpoint,
flags override the run's config, the checkpoint read is named, and bad input is one line with
exit status 2."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import boostnet.evaluation.evaluator as evaluator
import boostnet.evaluation.results as results
import utils.plots as plots
from adaptive_inference import apply_thresholds, budgeted_sweep
from args import build_parser, parse_evaluation_args, parse_typed
from boostnet.data.datasets import DataSettings, dataset_info
from boostnet.data.loaders import build_splits
from boostnet.runs.records import locate_checkpoint, write_config
from models.boosting import reweight_factors
from models.costs import ExitCosts
from models.registry import ModelSpec, backbone
from tests.reference_metrics import reference_ece, reference_made, reference_nll
from tests.run_fixtures import boosted_recurrence, file_states, make_trained_run, tiny_job
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import run_cli
from utils.flags import values_of
from utils.json_files import json_floats, read_json
from utils.metrics import expected_calibration_error, negative_log_likelihood

EVAL_FLAGS = ["--workers", "0", "--device", "cpu", "--eval-batch-size", "64"]
OUTPUTS = {
    "anytime.csv",
    "anytime.json",
    "budgeted.csv",
    "budgeted.json",
    "budget.json",
    "real_exit.json",
    "exit_policy.json",
}
LEVELS = 39


def evaluator_main(argv) -> None:
    """What eval_cifar100.py runs (without its CIFAR-100 default): parse, then evaluate."""
    evaluator.evaluate(parse_evaluation_args(argv, prog="eval_cifar100.py"))


def evaluate(run_dir: Path, *flags: str) -> None:
    evaluator_main(["--evaluate-from", str(run_dir), *EVAL_FLAGS, *flags])


def tiny_costs() -> ExitCosts:
    """Per-exit costs of the tiny digits model, as its backbone counts them."""
    job = tiny_job()
    return job.model.backbone.cost(job.model.build(), job.model.inputs)


def budget_between_exits() -> float:
    costs = tiny_costs().macs
    return (costs[0] + costs[-1]) / 2


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny trained digits run with a validation split; never modified by the tests."""
    return make_trained_run(tmp_path_factory.mktemp("runs") / "tiny_boost")


@pytest.fixture(scope="module")
def evaluated_run(trained_run, tmp_path_factory) -> Path:
    """A copy of the trained run after `--evalmode both --budget` (fills the cache too)."""
    run_dir = tmp_path_factory.mktemp("evaluated") / "tiny_boost"
    shutil.copytree(trained_run, run_dir)
    evaluate(run_dir, "--evalmode", "both", "--budget", str(budget_between_exits()))
    return run_dir


@pytest.fixture(scope="module")
def direct(trained_run) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {split: direct_probs(trained_run, split) for split in ("val", "test")}


@pytest.fixture
def run_copy(evaluated_run, tmp_path) -> Path:
    """A private copy of the evaluated run (cache included) that a test may change."""
    return Path(shutil.copytree(evaluated_run, tmp_path / "tiny_boost"))


def direct_probs(run_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-exit probabilities and targets computed here from the checkpoint, without the evaluator."""
    config = json.loads((run_dir / "config.json").read_text())
    info, entry = dataset_info(config["dataset"]), backbone(config["arch"])
    spec = ModelSpec(
        config["arch"], entry.configure(values_of(entry.flags, config), info.inputs), info.inputs
    )
    model = spec.build().eval()
    model.load_state_dict(torch.load(run_dir / "model_best.pth", weights_only=True)["model"])
    data = DataSettings(info, Path(config["data_root"]), config["workers"], config["eval_batch_size"])
    dataset = getattr(build_splits(data, config["use_valid"], config["seed"], run_dir), split)
    factors = reweight_factors(config["ensemble_reweight"], model.num_exits)
    probs, targets = [], []
    with torch.no_grad():
        for images, labels in DataLoader(dataset, batch_size=64):
            probs.append(torch.softmax(torch.stack(boosted_recurrence(model(images), factors)), dim=2))
            targets.append(labels)
    return torch.cat(probs, dim=1), torch.cat(targets)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def early_exit_reference(probs: torch.Tensor, targets: torch.Tensor, thresholds: list) -> tuple[float, float]:
    """Test ECE and NLL of early exit at `thresholds` (as saved, infinities as strings), by plain loops."""
    made = reference_made(probs, json_floats(thresholds))
    labels = targets.tolist()
    return reference_ece(made, labels), reference_nll(made, labels, torch.finfo(probs.dtype).tiny)


def test_explicit_flags_are_exactly_the_typed_ones():
    _, typed = parse_typed(
        build_parser("evaluate", entry=backbone("msdnet_ge")),
        ["--evaluate-from", "runs/x", "--nBlocks", "10", "--flat_curve", "-j", "0"],
    )
    assert typed == {"evaluate_from": "runs/x", "nBlocks": 10, "flat_curve": True, "workers": 0}


def test_config_gives_training_flags_and_typed_flags_override_it(tmp_path):
    config = {
        **tiny_job("--ensemble_reweight", "0.5").record,
        "evalmode": "anytime",
        "budget": 1.0,
        "num_exits": 3,
    }
    write_config(tmp_path, config)
    (tmp_path / "model_best.pth").write_bytes(b"")  # config.json gives the flags; never read
    argv = ["--evaluate-from", str(tmp_path), "--ensemble_reweight", "1.0", "--nChannels", "4"]
    job = parse_evaluation_args(argv, "eval_cifar100.py", dataset="cifar100")
    model = job.model.config
    assert (model.nBlocks, job.data.dataset.name, model.base, list(model.grFactor)) == (
        3,
        "digits",
        2,
        [1, 2, 2],
    )
    assert (job.data.workers, job.data.eval_batch_size, job.runtime.device) == (0, 64, "cpu")
    assert list(job.objective.reweight) == [1.0]
    assert (job.evaluation.evalmode, job.evaluation.budget) == ("both", None)


def test_anytime_matches_direct_computation(evaluated_run, direct):
    columns, rows = read_csv(evaluated_run / "anytime.csv")
    saved = json.loads((evaluated_run / "anytime.json").read_text())
    probs, targets = direct["test"]
    top1 = ((probs.argmax(dim=2) == targets).sum(dim=1).double() * 100.0 / len(targets)).tolist()
    top5 = (
        (probs.topk(5, dim=2).indices == targets[None, :, None]).any(dim=2).sum(dim=1).double()
        * 100.0
        / len(targets)
    ).tolist()
    costs = tiny_costs()

    assert columns == ["exit", "macs", "params", "top1", "top5", "nll", "ece"]
    assert [float(row["top1"]) for row in rows] == pytest.approx(top1, abs=1e-9)
    for key, metric in (("nll", negative_log_likelihood), ("ece", expected_calibration_error)):
        assert [float(row[key]) for row in rows] == pytest.approx(metric(probs, targets), rel=1e-12)
        assert [exit[key] for exit in saved["exits"]] == pytest.approx(metric(probs, targets), rel=1e-12)
    assert [float(row["top5"]) for row in rows] == pytest.approx(top5, abs=1e-9)
    assert [int(row["macs"]) for row in rows] == costs.macs
    assert [int(row["params"]) for row in rows] == costs.params
    assert [exit["top1"] for exit in saved["exits"]] == pytest.approx(top1, abs=1e-9)
    assert saved["test_samples"] == len(targets) and saved["run"] == "tiny_boost"


def test_budgeted_matches_the_protocol_on_direct_probabilities(evaluated_run, direct):
    columns, rows = read_csv(evaluated_run / "budgeted.csv")
    saved = json.loads((evaluated_run / "budgeted.json").read_text())
    (val_probs, val_targets), (test_probs, test_targets) = direct["val"], direct["test"]
    expected = budgeted_sweep(val_probs, val_targets, test_probs, test_targets, saved["costs"])

    assert columns == [
        "level",
        "q",
        "expected_cost",
        "val_accuracy",
        "test_accuracy",
        "test_ece",
        "test_nll",
        "threshold_1",
        "threshold_2",
        "threshold_3",
        "exit_count_1",
        "exit_count_2",
        "exit_count_3",
    ]
    assert len(rows) == len(saved["levels"]) == LEVELS
    for row, level, point in zip(rows, saved["levels"], expected):
        assert float(row["test_accuracy"]) == level["test_accuracy"] == point.test_accuracy
        assert level["val_accuracy"] == point.val_accuracy
        assert level["exit_counts"] == point.exit_counts
        assert sum(level["exit_counts"]) == len(test_targets)
        assert level["expected_cost"] == pytest.approx(point.expected_cost, rel=1e-12)
        assert json_floats(level["thresholds"]) == point.thresholds
        assert level["thresholds"][-1] == "-inf"
        ece, nll = early_exit_reference(test_probs, test_targets, level["thresholds"])
        assert level["test_ece"] == pytest.approx(ece, rel=1e-9, abs=1e-12)
        assert level["test_nll"] == pytest.approx(nll, rel=1e-9)
        assert (float(row["test_ece"]), float(row["test_nll"])) == (level["test_ece"], level["test_nll"])


def test_budget_choice_is_within_budget_and_reported_on_test(evaluated_run, direct):
    saved = json.loads((evaluated_run / "budget.json").read_text())
    test_probs, test_targets = direct["test"]
    costs = json.loads((evaluated_run / "budgeted.json").read_text())["costs"]
    thresholds = json_floats(saved["thresholds"])
    accuracy, cost, counts = apply_thresholds(test_probs, test_targets, thresholds, costs)

    assert saved["budget"] == budget_between_exits()
    assert saved["val_expected_cost"] <= saved["budget"]
    assert saved["test_accuracy"] == accuracy
    assert saved["test_expected_cost"] == pytest.approx(cost, rel=1e-12)
    assert saved["test_exit_counts"] == counts.tolist()
    ece, nll = early_exit_reference(test_probs, test_targets, saved["thresholds"])
    assert (saved["test_ece"], saved["test_nll"]) == pytest.approx((ece, nll), rel=1e-9)


def test_every_json_file_the_evaluator_writes_is_strict(evaluated_run):
    saved = {path.name: read_json(path) for path in evaluated_run.rglob("*.json")}
    assert {"anytime.json", "budgeted.json", "budget.json", "config.json", "split.json"} <= set(saved)
    assert saved["budgeted.json"]["levels"][0]["thresholds"][-1] == "-inf"
    assert saved["budget.json"]["thresholds"][-1] == "-inf"


def test_flat_curve_keeps_the_best_accuracy_so_far(run_copy):
    plain = {
        level["level"]: level for level in json.loads((run_copy / "budgeted.json").read_text())["levels"]
    }
    evaluate(run_copy, "--evalmode", "dynamic", "--flat_curve")
    levels = json.loads((run_copy / "budgeted.json").read_text())["levels"]
    val = [level["val_accuracy"] for level in levels]
    assert json.loads((run_copy / "budgeted.json").read_text())["flat_curve"] is True
    assert val == sorted(val)
    assert any(level["accuracy_level"] != level["level"] for level in levels)
    for level in levels:
        behind = plain[level["accuracy_level"]]
        assert [level[key] for key in ("test_accuracy", "test_ece", "test_nll")] == [
            behind[key] for key in ("test_accuracy", "test_ece", "test_nll")
        ]


def test_cache_is_keyed_by_checkpoint_content(run_copy, monkeypatch):
    digest = hashlib.sha256((run_copy / "model_best.pth").read_bytes()).hexdigest()[:16]
    assert sorted(p.name for p in (run_copy / "cache").iterdir()) == [
        f"logits_test_{digest}.pt",
        f"logits_val_{digest}.pt",
    ]
    before = (run_copy / "anytime.csv").read_text()
    computed = []
    compute_logits = results.compute_logits
    monkeypatch.setattr(
        results, "compute_logits", lambda *a, **k: computed.append(a[-1]) or compute_logits(*a, **k)
    )

    evaluate(run_copy, "--evalmode", "both")
    assert computed == []
    assert (run_copy / "anytime.csv").read_text() == before

    checkpoint = load_checkpoint(run_copy / "model_latest.pth")
    torch.manual_seed(1)
    checkpoint["model"] = {
        k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v
        for k, v in checkpoint["model"].items()
    }
    save_checkpoint(checkpoint, run_copy / "model_latest.pth")
    evaluate(run_copy / "model_latest.pth", "--evalmode", "both")
    new_digest = hashlib.sha256((run_copy / "model_latest.pth").read_bytes()).hexdigest()[:16]

    assert len(computed) == 2
    assert (run_copy / "cache" / f"logits_test_{new_digest}.pt").is_file()
    assert (run_copy / "anytime.csv").read_text() != before


def test_real_exit_agrees_with_simulation_and_touches_only_outputs(run_copy, monkeypatch):
    monkeypatch.setattr(results, "TIMED_BATCHES", 2)
    monkeypatch.setattr(results, "TIMING_REPEATS", 1)
    before = file_states(run_copy)
    budget = budget_between_exits()

    evaluate(run_copy, "--evalmode", "both", "--budget", str(budget), "--real-exit")

    after = file_states(run_copy)
    changed = {name for name in before if after[name] != before[name]}
    assert changed <= OUTPUTS
    assert set(after) - set(before) == {"real_exit.json"}
    report = read_json(run_copy / "real_exit.json")  # strict: no NaN / Infinity tokens
    assert report["exit_counts"] == report["simulated_exit_counts"]
    assert report["accuracy"] == report["simulated_accuracy"]
    assert report["expected_cost"] == pytest.approx(report["simulated_expected_cost"], rel=1e-12)
    assert report["images_per_second"]["early_exit"] > 0 and report["images_per_second"]["full_network"] > 0
    assert report["samples"] == sum(report["exit_counts"]) == 2 * 64
    rates = report["images_per_second"]
    assert report["speedup"] == pytest.approx(rates["early_exit"] / rates["full_network"], rel=1e-12)
    low, high = report["paired_speedup_range"]
    assert low <= high and report["timing_repeats"] == 1 and report["timed_images"] == report["samples"]
    assert report["cuda_graphs"] == report["device"].startswith("cuda")


def test_init_from_run_dir_takes_latest_else_best(tmp_path):
    (tmp_path / "model_best.pth").write_bytes(b"")
    assert locate_checkpoint(tmp_path) == (tmp_path, tmp_path / "model_best.pth")
    (tmp_path / "model_latest.pth").write_bytes(b"")
    assert locate_checkpoint(tmp_path) == (tmp_path, tmp_path / "model_latest.pth")


def cli_error(argv: list[str], capsys) -> str:
    """Run the evaluator's CLI in-process; assert exit status 2 and return its one stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(evaluator_main, argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_missing_run_dir(tmp_path, capsys):
    message = cli_error(["--evaluate-from", str(tmp_path / "nope"), *EVAL_FLAGS], capsys)
    assert "does not exist" in message and "nope" in message


def test_evaluate_from_is_required(capsys):
    assert "--evaluate-from is required" in cli_error(EVAL_FLAGS, capsys)


def test_unreadable_checkpoint(run_copy, capsys):
    (run_copy / "model_best.pth").write_bytes(b"not a checkpoint")
    message = cli_error(["--evaluate-from", str(run_copy), *EVAL_FLAGS], capsys)
    assert "model_best.pth" in message and "not a readable checkpoint" in message


@pytest.mark.parametrize(
    "override, mismatch",
    [
        (
            ["--nChannels", "8"],
            "layer stem_layer.scales.0.0.weight has shape (4, 3, 3, 3) in the checkpoint but (8, 3, 3, 3) "
            "in the model",
        ),
        (["--nBlocks", "4"], "layer blocks.3."),
    ],
)
def test_checkpoint_of_another_architecture_names_the_first_mismatching_layer(
    run_copy, capsys, override, mismatch
):
    before = file_states(run_copy)
    message = cli_error(["--evaluate-from", str(run_copy), *EVAL_FLAGS, *override], capsys)
    assert mismatch in message and "does not fit the model" in message
    assert file_states(run_copy) == before


def test_dynamic_needs_the_validation_split(run_copy, capsys):
    (run_copy / "split.json").unlink()
    for name in OUTPUTS:
        (run_copy / name).unlink(missing_ok=True)
    message = cli_error(["--evaluate-from", str(run_copy), *EVAL_FLAGS, "--evalmode", "dynamic"], capsys)
    assert "split.json" in message and "--use-valid" in message
    assert not any((run_copy / name).exists() for name in OUTPUTS)


def test_real_exit_needs_a_budget(run_copy, capsys):
    message = cli_error(["--evaluate-from", str(run_copy), *EVAL_FLAGS, "--real-exit"], capsys)
    assert "--budget" in message


def test_budget_below_the_first_exit_fails_before_any_file_is_written(run_copy, capsys):
    before = file_states(run_copy)
    message = cli_error(["--evaluate-from", str(run_copy), *EVAL_FLAGS, "--budget", "1000"], capsys)
    cheapest = tiny_costs().macs[0]
    assert message.startswith("error: --budget 1000:") and f"{cheapest:g}" in message
    assert file_states(run_copy) == before


@pytest.mark.parametrize(
    "flag, value, complaint",
    [
        ("--budget", "-1", "finite number of multiply-adds per image above 0, got -1"),
        ("--budget", "inf", "got inf"),
        ("--budget", "nan", "got nan"),
        ("--eval-batch-size", "0", "at least 1, got 0"),
        ("--workers", "-1", "at least 0, got -1"),
    ],
)
def test_bad_evaluation_flag_fails_before_any_file_is_written(run_copy, capsys, flag, value, complaint):
    before = file_states(run_copy)
    message = cli_error(["--evaluate-from", str(run_copy), *EVAL_FLAGS, flag, value], capsys)
    assert message.startswith(f"error: {flag} must be") and complaint in message
    assert file_states(run_copy) == before


def test_command_line_error_is_one_line_without_traceback(tmp_path, repo_root):
    result = subprocess.run(
        [sys.executable, "eval_cifar100.py", "--evaluate-from", str(tmp_path / "gone")],
        cwd=repo_root,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --evaluate-from: {tmp_path / 'gone'} does not exist"
    ]


def test_plots_read_the_evaluator_outputs(evaluated_run, tmp_path):
    plots.main([str(evaluated_run), "--out", str(tmp_path)])
    assert (tmp_path / "anytime.png").stat().st_size > 0 and (tmp_path / "budgeted.png").stat().st_size > 0
    markdown = (tmp_path / "results.md").read_text()
    assert markdown.count("| tiny_boost |") == 3 + LEVELS


def test_logits_dump_round_trips(run_copy, direct, tmp_path):
    dump_file = tmp_path / "tiny_logits.npz"
    evaluate(run_copy, "--evalmode", "both", "--save-logits", str(dump_file))
    dump = dict(np.load(dump_file, allow_pickle=False))
    config = json.loads((run_copy / "config.json").read_text())
    anytime = json.loads((run_copy / "anytime.json").read_text())
    digest = hashlib.sha256((run_copy / "model_best.pth").read_bytes()).hexdigest()
    factors = reweight_factors(config["ensemble_reweight"], config["num_exits"])

    for prefix, split in (("", "test"), ("val_", "val")):
        probs, targets = direct[split]
        logits = dump[f"{prefix}logits"]
        assert logits.dtype == np.float32 and logits.shape == tuple(probs.shape)
        cached = torch.load(run_copy / "cache" / f"logits_{split}_{digest[:16]}.pt", weights_only=True)
        assert torch.equal(
            torch.from_numpy(logits), torch.stack(boosted_recurrence(list(cached["logits"]), factors))
        )
        assert torch.allclose(torch.from_numpy(logits).softmax(dim=2), probs, rtol=0, atol=1e-6)
        assert dump[f"{prefix}labels"].dtype == np.int64
        assert dump[f"{prefix}labels"].tolist() == targets.tolist()
    assert dump["indices"].dtype == np.int64 and dump["indices"].tolist() == list(
        range(len(direct["test"][1]))
    )
    assert dump["val_indices"].tolist() == json.loads((run_copy / "split.json").read_text())["val_indices"]
    top1 = (torch.from_numpy(dump["logits"]).argmax(dim=2) == direct["test"][1]).double().mean(dim=1) * 100
    assert top1.tolist() == pytest.approx([exit["top1"] for exit in anytime["exits"]], abs=1e-9)
    assert dump["costs"].dtype == np.int64 and dump["costs"].tolist() == tiny_costs().macs
    assert (str(dump["split"]), int(dump["num_classes"]), str(dump["checkpoint_sha256"])) == (
        "test",
        10,
        digest,
    )
    assert (str(dump["arch"]), str(dump["loss"]), str(dump["dataset"])) == ("msdnet_ge", "boost", "digits")

    evaluate(run_copy, "--evalmode", "anytime", "--save-logits", str(dump_file))
    with np.load(dump_file, allow_pickle=False) as anytime_only:
        assert not any(name.startswith("val_") for name in anytime_only.files)
        assert np.array_equal(anytime_only["logits"], dump["logits"])


@pytest.mark.parametrize(
    "name, complaint",
    [
        ("logits.pt", "must end in .npz"),
        ("missing/logits.npz", "does not exist"),
        ("folder.npz", "is a directory"),
    ],
)
def test_bad_save_logits_path_fails_before_any_work(run_copy, tmp_path, capsys, name, complaint):
    (tmp_path / "folder.npz").mkdir()
    before, outside = file_states(run_copy), sorted(tmp_path.iterdir())
    message = cli_error(
        ["--evaluate-from", str(run_copy), *EVAL_FLAGS, "--save-logits", str(tmp_path / name)], capsys
    )
    assert message.startswith("error: --save-logits:") and complaint in message
    assert file_states(run_copy) == before and sorted(tmp_path.iterdir()) == outside


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_results_name_the_best_checkpoint_by_default(evaluated_run):
    for name in ("anytime.json", "budgeted.json", "budget.json"):
        saved = json.loads((evaluated_run / name).read_text())
        assert saved["checkpoint"] == str(evaluated_run / "model_best.pth")
        assert saved["checkpoint_sha256"] == sha256(evaluated_run / "model_best.pth")
        assert (saved["checkpoint_kind"], saved["checkpoint_epoch"]) == ("best", 1)
        assert saved["checkpoint_reason"] == "highest validation top-1 of the last exit"


@pytest.mark.parametrize(
    "flags, kind, epoch, reason",
    [
        ([], "best", 1, "highest validation top-1 of the last exit"),
        (["--checkpoint", "latest"], "latest", 2, "the last epoch written"),
    ],
)
def test_the_checkpoint_read_is_printed_first_and_recorded(run_copy, capsys, flags, kind, epoch, reason):
    latest = load_checkpoint(run_copy / "model_latest.pth")
    save_checkpoint({**latest, "epoch": 2}, run_copy / "model_latest.pth")  # a later, not better, epoch
    file = run_copy / f"model_{kind}.pth"
    epochs = json.loads((run_copy / "config.json").read_text())["epochs"]

    evaluate(run_copy, "--evalmode", "anytime", *flags)

    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line == (
        f"evaluating {file} ({kind}: {reason}, epoch {epoch} of {epochs}, sha256 {sha256(file)[:16]}...)"
    )
    saved = json.loads((run_copy / "anytime.json").read_text())
    assert (saved["checkpoint"], saved["checkpoint_sha256"]) == (str(file), sha256(file))
    assert (saved["checkpoint_kind"], saved["checkpoint_epoch"], saved["checkpoint_reason"]) == (
        kind,
        epoch,
        reason,
    )


def test_checkpoint_flag_with_a_checkpoint_file_is_refused(run_copy, capsys):
    before = file_states(run_copy)
    message = cli_error(
        ["--evaluate-from", str(run_copy / "model_best.pth"), *EVAL_FLAGS, "--checkpoint", "latest"], capsys
    )
    assert message.startswith("error: --checkpoint latest") and str(run_copy / "model_best.pth") in message
    assert file_states(run_copy) == before


@pytest.mark.parametrize(
    "missing, asked, other", [("best", [], "latest"), ("latest", ["--checkpoint", "latest"], "best")]
)
def test_missing_chosen_checkpoint_names_the_other(run_copy, capsys, missing, asked, other):
    (run_copy / f"model_{missing}.pth").unlink()
    message = cli_error(["--evaluate-from", str(run_copy), *EVAL_FLAGS, *asked], capsys)
    assert f"has no model_{missing}.pth" in message and f"pass --checkpoint {other}" in message


def test_evalmode_both_without_validation_split_runs_anytime_and_says_why(run_copy, capsys):
    anytime = json.loads((run_copy / "anytime.json").read_text())
    (run_copy / "split.json").unlink()
    for name in OUTPUTS:
        (run_copy / name).unlink(missing_ok=True)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(evaluator_main, ["--evaluate-from", str(run_copy), *EVAL_FLAGS, "--evalmode", "both"])
    output = capsys.readouterr()

    assert exit_info.value.code == 0 and output.err == ""
    skipped = [line for line in output.out.splitlines() if "budgeted" in line]
    assert skipped == [
        f"budgeted batch skipped: {run_copy} was trained without --use-valid, so it "
        f"has no validation split to fit thresholds on (train with --use-valid)"
    ]
    assert sorted(name for name in OUTPUTS if (run_copy / name).exists()) == ["anytime.csv", "anytime.json"]
    assert json.loads((run_copy / "anytime.json").read_text())["exits"] == anytime["exits"]
    assert not (run_copy / "split.json").exists()
