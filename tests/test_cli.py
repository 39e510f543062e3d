"""The command lines: --help without torch, the default schedule that follows --epochs, "did you
mean", --threads, op_counter's --recipe and --run-dir, and what config.json and summary.csv
record."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from args import PAPER_SCHEDULE, parse_args, parse_costs_args, parse_evaluation_args
from boostnet.evaluation.evaluator import evaluate
from boostnet.recipes import RECIPES
from boostnet.runs.records import write_config
from tests.conftest import TINY_MSDNET
from tests.run_fixtures import make_trained_run
from train_cifar100 import main as train_main
from train_imagenet import IMAGENET_SCHEDULE
from utils.cli import (
    KINDS,
    OneLineParser,
    existing_file,
    existing_folder,
    output_file,
    output_folder,
    output_new_folder,
    output_stem,
)
from utils.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "scripts").glob("*.py"))
PROGRAMS = [
    ["train_cifar100.py"],
    ["train_imagenet.py"],
    ["eval_cifar100.py"],
    ["eval_imagenet.py"],
    ["op_counter.py"],
    ["adaptive_inference.py"],
    *([script] for script in SCRIPTS),  # every script, present and future
    ["-m", "utils.plots"],
    ["-m", "boostnet.recipes"],
]
HELP_PROBE = """
import runpy, sys
program = sys.argv[1:]
sys.argv = [program[-1], "--help"]
try:
    if program[0] == "-m":
        runpy.run_module(program[1], run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(program[0], run_name="__main__")
except SystemExit as done:
    code = done.code
heavy = [name for name in ("torch", "torchvision") if name in sys.modules]
print("PROBE", code, *heavy)
"""
DIGITS = ["--dataset", "digits", "--workers", "0", "--device", "cpu"]


@pytest.mark.parametrize("program", PROGRAMS, ids=" ".join)
def test_help_imports_neither_torch_nor_torchvision(repo_root, program):
    done = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *program],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.splitlines()[-1] == "PROBE 0", done.stderr[-2000:]
    assert "usage:" in done.stdout


@pytest.mark.parametrize(
    "epochs, milestones", [(300, [150, 225]), (30, [15, 22]), (4, [2, 3]), (3, [1, 2]), (2, [1]), (1, [])]
)
def test_the_default_schedule_decays_at_half_and_three_quarters_of_the_epochs(epochs, milestones):
    train = parse_args(["--epochs", str(epochs)]).train
    assert train.lr_milestones == tuple(milestones)
    assert train.schedule_note == f"50%, 75% of --epochs {epochs}"


@pytest.mark.parametrize("epochs, milestones", [(90, [30, 60]), (9, [3, 6]), (2, [1]), (1, [])])
def test_train_imagenet_decays_at_a_third_and_two_thirds_of_the_epochs(epochs, milestones):
    job = parse_args(
        ["--epochs", str(epochs)],
        prog="train_imagenet.py",
        dataset="imagenet",
        epochs=90,
        lr_milestones=IMAGENET_SCHEDULE,
    )
    assert job.train.lr_milestones == tuple(milestones)
    assert parse_args(
        [], dataset="imagenet", epochs=90, lr_milestones=IMAGENET_SCHEDULE
    ).train.lr_milestones == (30, 60)


@pytest.mark.parametrize("schedule", [PAPER_SCHEDULE, IMAGENET_SCHEDULE])
def test_default_milestones_always_rise_from_1_and_end_before_the_last_epoch(schedule):
    for epochs in range(1, 401):
        milestones = schedule.milestones(epochs)
        assert all(1 <= m < epochs for m in milestones)
        assert milestones == sorted(set(milestones))


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_keeps_its_own_milestones(name):
    train = parse_args(["--recipe", name]).train
    written = RECIPES[name].flags[RECIPES[name].flags.index("--lr_milestones") + 1]
    assert train.lr_milestones == tuple(int(m) for m in written.split(","))
    assert train.schedule_note is None


def test_typed_milestones_are_kept_and_no_help_key_is_recorded():
    job = parse_args(["--epochs", "30", "--lr_milestones", "10,20"])
    assert (job.train.lr_milestones, job.train.schedule_note) == ((10, 20), None)
    assert "help" not in job.record


def test_a_short_run_decays_logs_its_schedule_and_records_lr_and_threads(tmp_path, one_thread):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as done:
        run_cli(
            train_main,
            [
                *TINY_MSDNET,
                *DIGITS,
                "--epochs",
                "2",
                "--max-steps-per-epoch",
                "2",
                "--batch-size",
                "16",
                "--threads",
                "2",
                "--result_dir",
                str(run),
            ],
        )
    assert done.value.code == 0
    assert (
        "lr 0.1, x0.1 after epoch 1 (default schedule: 50%, 75% of --epochs 2)"
        in (run / "log.txt").read_text()
    )
    with open(run / "summary.csv") as handle:
        assert [row["lr"] for row in csv.DictReader(handle)] == ["0.1", "0.01"]
    config = json.loads((run / "config.json").read_text())
    assert "help" not in config and config["lr_milestones"] == [1]
    assert config["threads"] == 2 and config["provenance"][-1]["torch_threads"] == 2
    resumed = parse_args(["--resume", "--result_dir", str(run), "--epochs", "4"])
    assert resumed.train.lr_milestones == (1,)  # the run's own schedule, not 2,3 of the new --epochs
    assert resumed.train.schedule_note == "50%, 75% of --epochs 2"


def test_threads_below_1_is_one_line_and_evaluation_uses_the_count(tmp_path, one_thread, capsys):
    import torch

    run = make_trained_run(tmp_path / "run")
    with pytest.raises(SystemExit) as refused:
        parse_args(["--threads", "0"])
    assert refused.value.code == 2
    assert capsys.readouterr().err == "error: --threads must be at least 1, got 0\n"
    evaluate(parse_evaluation_args(["--evaluate-from", str(run), "--evalmode", "anytime", "--threads", "2"]))
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--epoch", "5"], "unrecognized arguments: --epoch 5; did you mean --epochs?"),
        (["--nblocks", "5"], "unrecognized arguments: --nblocks 5; did you mean --nBlocks?"),
        (["--lr-milestone", "3"], "unrecognized arguments: --lr-milestone 3; did you mean --lr-milestones?"),
        (
            ["--Seed=3", "--nblock", "2"],
            "unrecognized arguments: --Seed=3 --nblock 2; did you mean "
            "--seed for --Seed, --nBlocks for --nblock?",
        ),
        (
            ["--budget", "1e6"],
            "unrecognized arguments: --budget 1e6 (train_cifar100.py --help lists the flags)",
        ),
    ],
)
def test_a_near_miss_flag_gets_did_you_mean(argv, line, capsys):
    with pytest.raises(SystemExit) as refused:
        parse_args(argv, prog="train_cifar100.py")
    assert refused.value.code == 2
    assert capsys.readouterr().err == f"error: {line}\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--val-size", "0.2"],
            "--val-size describes --dataset folder; the built-in dataset cifar100 "
            "has its own validation size (5,000 images)",
        ),
        (
            ["--dataset", "digits", "--val-size", "10"],
            "the built-in dataset digits has its own validation size (144 images)",
        ),
        (
            ["--dataset", "imagenet", "--image-size", "64"],
            "--image-size describes --dataset folder; the "
            "built-in dataset imagenet has its own input "
            "size (224x224)",
        ),
        (["--num-classes", "5"], "the built-in dataset cifar100 has its own 100 classes"),
    ],
)
def test_folder_flags_on_a_built_in_dataset_name_what_it_has(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("name", ["msdnet_cifar100_anytime", "ranet_imagenet_budgeted_c32"])
def test_op_counter_takes_a_recipes_model(name):
    # the model: its arch, every backbone setting (typed config) and the dataset's inputs
    assert parse_costs_args(["--recipe", name]).model == parse_args(["--recipe", name]).model
    assert parse_costs_args(["--recipe", name, "--nBlocks", "1"]).model.config.nBlocks == 1


def test_op_counter_counts_the_model_of_a_run_directory(repo_root, tmp_path):
    flags = [*TINY_MSDNET, "--dataset", "digits", "--nBlocks", "2"]
    run = tmp_path / "run"
    run.mkdir()
    job = parse_args(flags)
    write_config(run, job.record)
    assert parse_costs_args(["--run-dir", str(run)]).model == job.model
    done = subprocess.run(
        [sys.executable, "op_counter.py", "--run-dir", str(run), "--json"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    spec = job.model
    assert json.loads(done.stdout)["macs"] == spec.backbone.cost(spec.build(), spec.inputs).macs


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--run-dir", "no/such/run"], "--run-dir: no no/such/run/config.json"),
        (["--run-dir", "x", "--recipe", "msdnet_cifar100_anytime"], "--recipe and --run-dir"),
    ],
)
def test_op_counter_refuses_a_missing_run_or_two_sources(argv, message, capsys):
    with pytest.raises(SystemExit) as refused:
        parse_costs_args(argv)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    "text, line",
    [
        ("0", "error: argument --count: must be at least 1, got 0\n"),
        ("two", "error: argument --count: invalid int value: 'two'\n"),
    ],
)
def test_a_count_below_its_minimum_or_not_an_integer_is_one_line(text, line, capsys):
    from utils.cli import OneLineParser, int_at_least

    parser = OneLineParser(prog="counting")
    parser.add_argument("--count", type=int_at_least(1))
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--count", text])
    assert (stop.value.code, capsys.readouterr().err) == (2, line)


def child(program: str, root: Path) -> subprocess.Popen:
    """`program` in a Python of its own (output block-buffered, as without PYTHONUNBUFFERED),
    stdin, stdout and stderr piped."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    return subprocess.Popen(
        [sys.executable, "-c", "from utils.errors import run_cli\n" + program],
        cwd=root,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_reader_that_goes_away_ends_a_command_quietly(repo_root):
    """`predict.py ... | head`: output to a closed pipe stops the command with status 141, as
    SIGPIPE ends Unix tools, and no traceback: while it prints (the output fills the pipe first,
    so it must block) and when only the last buffered lines are left to flush (the child waits
    on stdin until its reader has gone)."""
    printing = child("run_cli(lambda argv: [print('x' * 99, flush=True) for _ in range(100_000)])", repo_root)
    assert printing.stdout.readline() == b"x" * 99 + b"\n"
    printing.stdout.close()
    assert (printing.wait(), printing.stderr.read()) == (141, b"")
    finishing = child("import sys\nrun_cli(lambda argv: (print('last line'), sys.stdin.read()))", repo_root)
    finishing.stdout.close()
    finishing.stdin.close()
    assert (finishing.wait(), finishing.stderr.read()) == (141, b"")


def test_a_broken_pipe_that_is_not_stdout_is_a_failure(repo_root):
    """A pipe to a worker that died is no reader going away: traceback and status 1, also when
    stdout is no real file."""
    programs = (
        "import os\ndef main(argv):\n    r, w = os.pipe()\n    os.close(r)\n    os.write(w, b'x')\n"
        "run_cli(main)",
        "import contextlib, io\ndef main(argv):\n    raise BrokenPipeError(32, 'Broken pipe')\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    run_cli(main)",
    )
    for program in programs:
        process = child(program, repo_root)
        _, err = process.communicate()
        assert process.returncode == 1 and err.splitlines()[-1].startswith(b"BrokenPipeError"), err


def test_help_shows_each_default_once_and_none_for_a_required_flag():
    parser = OneLineParser(prog="p")
    parser.add_argument("--out", required=True, help="where")
    parser.add_argument("--policy", help="a file (default: RUN/policy.json)")
    parser.add_argument("--count", type=int, default=3, help="how many")
    text = " ".join(parser.format_help().split())
    assert "where (default" not in text and "how many (default: 3)" in text and text.count("(default") == 2


def test_an_output_path_under_a_file_is_refused_when_parsed(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    parser = OneLineParser(prog="p")
    parser.add_argument("--out", type=output_file)
    assert parser.parse_args(["--out", str(tmp_path / "new" / "x.json")]).out == tmp_path / "new" / "x.json"
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--out", str(tmp_path / "file" / "x.json")])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: argument --out: {tmp_path / 'file'} is a file, not a folder\n"


def test_an_output_path_of_the_wrong_kind_or_through_a_broken_link_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    (tmp_path / "folder").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert output_folder(str(tmp_path / "folder")) == tmp_path / "folder"
    assert output_new_folder(str(tmp_path / "new" / "folder")) == tmp_path / "new" / "folder"
    assert output_file(str(tmp_path / "file")) == tmp_path / "file"
    assert output_stem(str(tmp_path / "folder")) == tmp_path / "folder"  # writes folder.json beside it
    for check, path, words in (
        (output_file, tmp_path / "folder", "exists and is not a file"),
        (output_folder, tmp_path / "file", "exists and is not a folder"),
        (output_file, tmp_path / "dangling" / "x.json", f"{tmp_path / 'dangling'} is a broken link"),
        (output_folder, tmp_path / "dangling", "exists and is not a folder"),
        (output_new_folder, tmp_path / "folder", "folder already exists; give a new folder"),
        (output_new_folder, tmp_path / "dangling", "dangling already exists"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            check(str(path))


def test_existing_paths_are_told_apart_from_missing_ones(tmp_path):
    (tmp_path / "file").write_text("")
    assert (
        existing_folder(str(tmp_path)) == tmp_path
        and existing_file(str(tmp_path / "file")) == tmp_path / "file"
    )
    for check, text, words in (
        (existing_folder, tmp_path / "none", "no such folder"),
        (existing_folder, tmp_path / "file", "not a folder"),
        (existing_file, tmp_path / "none", "no such file"),
        (existing_file, tmp_path, "not a file"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            check(str(text))


def test_a_path_that_cannot_be_inspected_is_refused_with_the_reason(tmp_path, monkeypatch):
    """A folder on the way that may not be read (a root-run test cannot make one, so the check
    raises the error Python raises there)."""

    def denied(self: Path) -> bool:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "is_symlink", denied)
    with pytest.raises(argparse.ArgumentTypeError, match="x.json: Permission denied"):
        output_file(str(tmp_path / "x.json"))
    monkeypatch.setitem(KINDS, "folder", denied)
    with pytest.raises(argparse.ArgumentTypeError, match="Permission denied"):
        existing_folder(str(tmp_path))
