"""The helper entry points (recipes, library modules, data makers, benchmarks, study, importer,
demo): `--help` exits 0 and describes every flag; the demo shows its runs' epochs on the
console, keeps readable logs and prints its wall time."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import ROOT, TINY_MSDNET
from utils.errors import run_cli

# python arguments that start each helper, and the file whose main() parses its flags
HELPERS = {
    "recipes": (["-m", "boostnet.recipes"], "boostnet/recipes.py"),
    "adaptive_inference": (["adaptive_inference.py"], "adaptive_inference.py"),
    "make_fashion_mnist_mini": (["scripts/make_fashion_mnist_mini.py"], "scripts/make_fashion_mnist_mini.py"),
    "make_digits": (["scripts/make_digits.py"], "scripts/make_digits.py"),
    "study": (["scripts/study.py"], "scripts/study.py"),
    "benchmark": (["scripts/benchmark.py"], "scripts/benchmark.py"),
    "bench_budgeted": (["scripts/bench_budgeted.py"], "scripts/bench_budgeted.py"),
    "bench_early_exit": (["scripts/bench_early_exit.py"], "scripts/bench_early_exit.py"),
    "import_checkpoint": (["scripts/import_checkpoint.py"], "scripts/import_checkpoint.py"),
    "export": (["scripts/export.py"], "scripts/export.py"),
    "predict": (["scripts/predict.py"], "scripts/predict.py"),
    "measure_exit_speed": (["scripts/measure_exit_speed.py"], "scripts/measure_exit_speed.py"),
    "bench_deployment": (["scripts/bench_deployment.py"], "scripts/bench_deployment.py"),
    "fingerprint": (["scripts/fingerprint.py"], "scripts/fingerprint.py"),
}
ISSUE_NUMBER = re.compile(r"\(issue \d+\)")


class Parsed(Exception):
    """Raised instead of parsing: the parser is built, nothing else needs to run."""


def load_main(file: str, monkeypatch: pytest.MonkeyPatch) -> Callable:
    """The main() of a helper file, loaded as a module of its own (for this test only)."""
    spec = importlib.util.spec_from_file_location(f"helper_{Path(file).stem}", ROOT / file)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("name", list(HELPERS))
def test_help_exits_0_and_shows_usage(name):
    command, _ = HELPERS[name]
    done = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and "Traceback" not in done.stderr
    assert not ISSUE_NUMBER.search(done.stdout)


@pytest.mark.parametrize("name", list(HELPERS))
def test_every_flag_and_argument_has_help(name, monkeypatch):
    parsers: list[argparse.ArgumentParser] = []

    def record(parser, *args, **kwargs):
        parsers.append(parser)
        raise Parsed

    main = load_main(HELPERS[name][1], monkeypatch)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", record)
    with pytest.raises(Parsed):
        main([])
    actions = parsers[0]._actions
    assert actions and [a.dest for a in actions if not a.help] == []


def test_recipes_prints_a_recipe_and_refuses_an_unknown_one_in_one_line(capsys):
    from boostnet import recipes

    with pytest.raises(SystemExit) as stop:
        run_cli(recipes.main, ["msdnet_cifar100_budgeted"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == "cifar100 --evalmode both --flat_curve\n"
    with pytest.raises(SystemExit) as stop:
        run_cli(recipes.main, ["nope"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "'nope'" in err


def test_make_digits_without_scikit_learn_names_the_package_in_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now fails
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    digits = (ROOT / "boostnet" / "data" / "digits.npz").read_bytes()
    with pytest.raises(SystemExit) as stop:
        run_cli(load_main("scripts/make_digits.py", monkeypatch), [])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert "scikit-learn" in err and "pip install scikit-learn" in err
    assert (ROOT / "boostnet" / "data" / "digits.npz").read_bytes() == digits


def test_make_fashion_mnist_mini_without_the_full_set_names_the_set_up_script(tmp_path, capsys, monkeypatch):
    mini = (ROOT / "boostnet" / "data" / "fashion_mnist_mini.npz").read_bytes()
    with pytest.raises(SystemExit) as stop:
        run_cli(load_main("scripts/make_fashion_mnist_mini.py", monkeypatch), [str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert f"bash scripts/get_fashion_mnist.sh {tmp_path / 'none'}`" in err
    assert (ROOT / "boostnet" / "data" / "fashion_mnist_mini.npz").read_bytes() == mini
    assert not (tmp_path / "none").exists()


STUB_PYTHON = """#!/usr/bin/env bash
case "$1" in
  train_cifar100.py)
    echo "training: $*"
    for epoch in 1 2; do
      echo "epoch $epoch/2 train loss 1.0 acc 50.0 | 100 img/s, 1.0 s, ETA 1s"
    done
    echo "a warning on stderr" >&2
    exit "${STUB_TRAIN_STATUS:-0}" ;;
  *) echo "ran $*" ;;
esac
"""


def demo(tmp_path: Path, *args: str, train_status: int = 0) -> subprocess.CompletedProcess:
    """Run scripts/demo.sh with a virtual environment whose python only says what it ran."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(STUB_PYTHON)
    (venv / "bin" / "python").chmod(0o755)
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()
    (venv / ".requirements.sha").write_text(digest + "\n")
    env = {
        **os.environ,
        "BOOSTNET_VENV": str(venv),
        "RESULT_DIR": str(tmp_path / "demo"),
        "STUB_TRAIN_STATUS": str(train_status),
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_help_prints_usage_and_starts_nothing(tmp_path):
    done = demo(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: scripts/demo.sh" in done.stdout and "RESULT_DIR" in done.stdout
    assert not (tmp_path / "demo").exists() and "ran" not in done.stdout + done.stderr


def test_demo_shows_each_runs_epochs_and_its_wall_time(tmp_path):
    done = demo(tmp_path, "--epochs", "2")
    assert done.returncode == 0, done.stderr
    for loss in ("boost", "joint"):
        assert f"{loss}: epoch 1/2 train loss 1.0" in done.stderr
        assert f"{loss}: epoch 2/2 train loss 1.0" in done.stderr
        log = (tmp_path / "demo" / f"train_{loss}.out").read_text().splitlines()
        assert log[0].startswith("training: train_cifar100.py") and f"--loss {loss}" in log[0]
        assert (
            "--epochs 2" in log[0] and "epoch 2/2 train loss 1.0 acc 50.0 | 100 img/s, 1.0 s, ETA 1s" in log
        )
        assert "a warning on stderr" in log
    assert re.search(r"^demo: done in \d+m\d\ds; ", done.stderr, re.MULTILINE)
    assert done.stdout.count("ran eval_cifar100.py") == 2 and "ran -m utils.plots" in done.stdout


def test_demo_stops_with_the_training_status_before_evaluating(tmp_path):
    done = demo(tmp_path, train_status=3)
    assert done.returncode == 3
    assert "boost: a warning on stderr" in done.stderr and "eval_cifar100.py" not in done.stdout
    assert "demo: done" not in done.stderr


def test_training_output_off_a_terminal_has_epoch_lines_and_no_progress_bar(tmp_path):
    command = [
        sys.executable,
        "train_cifar100.py",
        *TINY_MSDNET,
        "--dataset",
        "digits",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--epochs",
        "1",
        "--lr_milestones",
        "1",
        "--max-steps-per-epoch",
        "3",
        "--batch-size",
        "16",
        "--result_dir",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "\r" not in output and "it/s" not in output
    assert re.search(r"^epoch 1/1 lr 0\.1 train loss .* s, ETA 0s", done.stdout, re.MULTILINE)


RECORDING_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$RECORD"
case "$*" in *"$FAIL_ON"*) exit 3 ;; esac
"""


def gpu_check(tmp_path: Path, fail_on: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """scripts/gpu_check.sh run with a python that records each command (and fails one)."""
    fake = tmp_path / "python"
    fake.write_text(RECORDING_PYTHON)
    fake.chmod(0o755)
    record = tmp_path / f"record_{len(fail_on)}"
    env = {**os.environ, "PYTHON": str(fake), "RECORD": str(record), "FAIL_ON": fail_on}
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, record.read_text().splitlines()


def test_gpu_check_runs_every_step_names_real_files_and_reports_a_failure(tmp_path):
    from scripts.benchmark import parse_options

    done, commands = gpu_check(tmp_path, fail_on="never matches")
    assert done.returncode == 0 and done.stdout.count("passed") == 3, done.stdout
    tests, deployment, benchmark = (command.split() for command in commands)
    assert tests[:2] == ["-m", "pytest"] and all((ROOT / path).is_file() for path in tests[3:])
    out = tmp_path / "out"
    assert deployment == [
        "scripts/bench_deployment.py",
        "--device",
        "cuda",
        "--out",
        f"{out}/bench_deployment_gpu.json",
    ]
    assert benchmark[0] == "scripts/benchmark.py" and parse_options(benchmark[1:])[0].steps == 30
    done, commands = gpu_check(tmp_path, fail_on="bench_deployment")
    assert done.returncode == 1 and len(commands) == 3 and "FAILED" in done.stdout  # the next step still ran
