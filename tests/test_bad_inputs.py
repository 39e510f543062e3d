"""Bad input, table-driven: every numeric training flag out of range, and the other inputs users
got wrong. Each is one line on stderr, exit status 2, no traceback, and no file of an earlier run
changes (the flags are checked before any work starts)."""

from __future__ import annotations

import pytest
import torch

import utils.plots as plots
from tests.conftest import TINY_MSDNET, TINY_RANET
from tests.run_fixtures import file_states
from train_cifar100 import main as train_main
from utils.errors import run_cli

DIGITS = ["--dataset", "digits", "--workers", "0", "--device", "cpu"]
BAD_TRAINING_FLAGS = [
    (["--grFactor", "0-0-0", "--bnFactor", "0-0-0"], "--grFactor must be at least 1"),
    (["--bnFactor", "1-0-2"], "--bnFactor must be at least 1"),
    (["--workers", "-1"], "--workers must be at least 0"),
    (["--lr_f", "-0.1"], "--lr must be finite and > 0"),
    (["--lr_f", "0"], "--lr must be finite and > 0"),
    (["--lr", "inf"], "--lr must be finite and > 0"),
    (["--lr_gamma", "nan"], "--lr_gamma must be in (0, 1]"),
    (["--lr_gamma", "0"], "--lr_gamma must be in (0, 1]"),
    (["--momentum", "-0.5"], "--momentum must be in [0, 1)"),
    (["--momentum", "nan"], "--momentum must be in [0, 1)"),
    (["--weight-decay=-1e-4"], "--weight-decay must be finite and >= 0"),
    (["--weight-decay", "nan"], "--weight-decay must be finite and >= 0"),
    (["--seed", "-1"], "--seed must be in [0, 4294967296)"),
    (["--seed", "4294967296"], "--seed must be in [0, 4294967296)"),
    (["--log-interval", "0"], "--log-interval must be at least 1"),
    (["--max-steps-per-epoch", "0"], "--max-steps-per-epoch must be at least 1"),
    (["--eval-batch-size", "0"], "--eval-batch-size must be at least 1"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--nBlocks", "0"], "--nBlocks must be at least 1"),
    (["--step", "0"], "--step must be at least 1"),
    (["--base", "0"], "--base must be at least 1"),
    (["--nChannels", "0"], "--nChannels must be at least 1"),
    (["--growthRate", "0"], "--growthRate must be at least 1"),
    (["--reduction", "2"], "--reduction must be in [0, 1]"),
    (["--ensemble_reweight", "-1"], "--ensemble_reweight must be finite and >= 0"),
    (["--ensemble_reweight", "nan"], "--ensemble_reweight must be finite and >= 0"),
    (["--lr_milestones", "500,600", "--epochs", "1"], "--lr_milestones 500,600 lie outside"),
    (["--lr_milestones", "3,2", "--epochs", "4"], "--lr_milestones must rise"),
    (["--lr_milestones", "0", "--epochs", "4"], "--lr_milestones must be at least 1"),
    (["--nChannels", "100000"], "more than the"),
    (["--epoch", "3"], "unrecognized arguments: --epoch 3"),
    (["--budget", "1e6"], "unrecognized arguments: --budget"),
    (["--checkpoint-interval", "0"], "--checkpoint-interval"),
    (["--resume", "yes"], "--resume"),
    (["--num-classes", "3"], "--num-classes describes --dataset folder"),
]
BAD_RANET_FLAGS = [
    (["--block-step", "0"], "--block-step must be at least 1"),
    (["--compress-factor", "1.5"], "--compress-factor must be in (0, 1)"),
    (["--scale-list", "0-1-2"], "--scale-list must be at least 1"),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-epoch run whose files no bad command may change."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("finished") / "run"
    with pytest.raises(SystemExit) as done:
        run_cli(
            train_main,
            [
                *TINY_MSDNET,
                *DIGITS,
                "--epochs",
                "1",
                "--max-steps-per-epoch",
                "2",
                "--batch-size",
                "16",
                "--result_dir",
                str(run),
            ],
        )
    assert done.value.code == 0
    return run


def one_line_refusal(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        run_cli(main, argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    "model, flags, complaint",
    [(TINY_MSDNET, f, c) for f, c in BAD_TRAINING_FLAGS] + [(TINY_RANET, f, c) for f, c in BAD_RANET_FLAGS],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_training_input_is_one_line_and_changes_nothing(finished_run, capsys, model, flags, complaint):
    before = file_states(finished_run)
    message = one_line_refusal(
        train_main, [*model, *DIGITS, "--result_dir", str(finished_run), *flags], capsys
    )
    assert complaint in message
    assert file_states(finished_run) == before


def test_plots_into_a_file_is_one_line(finished_run, tmp_path, capsys):
    target = tmp_path / "plots.png"
    target.write_text("not a folder")
    message = one_line_refusal(plots.main, [str(finished_run), "--out", str(target)], capsys)
    assert "--out" in message and "is a file" in message
    assert target.read_text() == "not a folder"


def test_a_recipe_or_program_schedule_longer_than_the_typed_epochs_is_refused(capsys):
    from args import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--recipe", "msdnet_cifar100_anytime", "--epochs", "20"])
    assert "--lr_milestones 150,225 of msdnet_cifar100_anytime" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(
            ["--epochs", "20"],
            prog="train_imagenet.py",
            dataset="imagenet",
            epochs=90,
            lr_milestones=[30, 60],
        )
    assert "--lr_milestones 30,60 of train_imagenet.py" in capsys.readouterr().err
    assert parse_args(
        ["--recipe", "msdnet_cifar100_anytime", "--epochs", "20", "--lr_milestones", "10,15"]
    ).train.lr_milestones == (10, 15)


def test_ranet_with_two_weight_decays_is_refused_at_parse_time(capsys):
    from args import parse_args

    with pytest.raises(SystemExit):
        parse_args([*TINY_RANET, "--weight-decay", "1e-4,2e-4"])
    assert "RANet trains with a single weight-decay group" in capsys.readouterr().err
