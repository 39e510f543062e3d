"""Training end to end on the offline digits set: run files, learning, resume, torchrun, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models.boosting
from args import parse_args
from boostnet.data.loaders import build_splits
from tests.conftest import ROOT, TINY_MSDNET, TINY_RANET
from tests.run_fixtures import network_of
from train_cifar100 import main
from utils.errors import run_cli

DIGITS = ["--dataset", "digits", "--workers", "0", "--device", "cpu", "--log-interval", "4"]
SHORT = DIGITS + ["--max-steps-per-epoch", "5", "--batch-size", "16"]
RUN_FILES = ("config.json", "log.txt", "model_latest.pth", "model_best.pth", "split.json")
CHECKPOINT_KEYS = {"model", "optimizer", "scheduler", "objective", "epoch", "rng", "config", "best_metric"}
DIGIT_CLASSES = 10


pytestmark = pytest.mark.usefixtures("one_thread")


def train(*argv: str) -> int:
    """Run train_cifar100.py in this process as the command line would; returns the exit status."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, list(argv))
    return exit_info.value.code


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_one_line_error(capsys, *fragments: str) -> None:
    """stderr ends with one `error: ...` line holding every fragment, and shows no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for fragment in fragments:
        assert fragment in last


def last_exit_test_accuracy(run_dir: Path, flags: list[str]) -> float:
    """Top-1 accuracy (%) of model_best.pth's last exit (eval-time output) on the digits test set."""
    job = parse_args(flags)
    model = job.model.build()
    model.load_state_dict(load(run_dir / "model_best.pth")["model"])
    test_set = build_splits(job.data, job.train.use_valid, job.train.seed, None).test
    images, labels = zip(*(test_set[i] for i in range(len(test_set))))
    with torch.no_grad():
        final = network_of(job, model.eval())(torch.stack(images))[-1]
    return 100 * (final.argmax(1) == torch.stack(labels)).float().mean().item()


@pytest.mark.parametrize("arch_flags", [TINY_MSDNET, TINY_RANET], ids=["msdnet_ge", "ranet"])
def test_two_epochs_write_every_run_file(arch_flags, tmp_path):
    run = tmp_path / "run"
    assert train(*arch_flags, *SHORT, "--use-valid", "--epochs", "2", "--result_dir", str(run)) == 0
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    checkpoint = load(run / "model_latest.pth")
    assert CHECKPOINT_KEYS <= set(checkpoint)
    assert checkpoint["epoch"] == 2 and checkpoint["config"]["arch"] == arch_flags[1]
    assert not any(key.startswith(("module.", "_orig_mod.")) for key in checkpoint["model"])
    assert len((run / "log.txt").read_text().splitlines()) >= 3
    assert not list(run.glob(".*.tmp"))


@pytest.mark.parametrize("loss", ["boost", "joint"])
def test_a_few_epochs_learn_far_above_chance(loss, tmp_path):
    run = tmp_path / loss
    flags = [
        *TINY_MSDNET,
        *DIGITS,
        "--loss",
        loss,
        "--epochs",
        "2",
        "--lr_milestones",
        "1",
        "--batch-size",
        "32",
    ]
    assert train(*flags, "--result_dir", str(run)) == 0
    assert last_exit_test_accuracy(run, flags) > 5 * 100 / DIGIT_CLASSES


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    flags = [*TINY_MSDNET, *SHORT, "--use-valid", "--lr_milestones", "2", "--loss_equal"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert train(*flags, "--epochs", "3", "--result_dir", str(straight)) == 0
    assert train(*flags, "--epochs", "2", "--result_dir", str(interrupted)) == 0
    split_before = (interrupted / "split.json").read_text()
    assert train(*flags, "--epochs", "3", "--result_dir", str(interrupted), "--resume") == 0
    assert (interrupted / "split.json").read_text() == split_before
    expected, resumed = load(straight / "model_latest.pth"), load(interrupted / "model_latest.pth")
    assert resumed["epoch"] == 3
    for part in ("model", "objective"):
        for key, value in expected[part].items():
            assert torch.equal(value, resumed[part][key]), f"{part} {key}"
    for state, resumed_state in zip(
        expected["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()
    ):
        assert torch.equal(state["momentum_buffer"], resumed_state["momentum_buffer"])


def test_device_resident_data_trains_and_resumes_exactly(tmp_path):
    flags = [*TINY_MSDNET, *SHORT, "--gpu-data", "--lr_milestones", "1"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert train(*flags, "--epochs", "2", "--result_dir", str(straight)) == 0
    assert train(*flags, "--epochs", "1", "--result_dir", str(interrupted)) == 0
    assert train(*flags, "--epochs", "2", "--result_dir", str(interrupted), "--resume") == 0
    expected, resumed = load(straight / "model_latest.pth"), load(interrupted / "model_latest.pth")
    for key, value in expected["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert "train" in (straight / "log.txt").read_text()


def test_torchrun_two_ranks_end_with_identical_weights(tmp_path):
    run, rank_dir = tmp_path / "run", tmp_path / "ranks"
    rank_dir.mkdir()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "tests" / "distributed_worker.py"),
        str(rank_dir),
        *TINY_MSDNET,
        *SHORT,
        "--use-valid",
        "--epochs",
        "1",
        "--result_dir",
        str(run),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = load(rank_dir / "rank0.pt"), load(rank_dir / "rank1.pt")
    saved = load(run / "model_latest.pth")["model"]
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key
        assert torch.equal(value, saved[key]), key
    assert "2 process(es)" in (run / "log.txt").read_text()


def test_finished_run_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(*TINY_MSDNET, *SHORT, "--epochs", "1", "--result_dir", str(run)) == 0
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    assert train(*TINY_MSDNET, *SHORT, "--epochs", "1", "--result_dir", str(run)) == 2
    assert_one_line_error(capsys, "--result_dir", str(run), "--resume")
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before


def test_resume_without_checkpoint_is_one_line_error(tmp_path, capsys):
    assert train(*TINY_MSDNET, *SHORT, "--result_dir", str(tmp_path / "empty"), "--resume") == 2
    assert_one_line_error(capsys, "--resume", "model_latest.pth")


def test_resume_from_corrupt_checkpoint_is_one_line_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_latest.pth").write_bytes(b"not a checkpoint at all")
    assert train(*TINY_MSDNET, *SHORT, "--result_dir", str(run), "--resume") == 2
    assert_one_line_error(capsys, "--resume", str(run / "model_latest.pth"))
    assert (run / "model_latest.pth").read_bytes() == b"not a checkpoint at all"


def test_resume_with_other_model_flags_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(*TINY_MSDNET, *SHORT, "--epochs", "1", "--result_dir", str(run)) == 0
    assert (
        train(*TINY_MSDNET, *SHORT, "--epochs", "2", "--nChannels", "8", "--result_dir", str(run), "--resume")
        == 2
    )
    assert_one_line_error(capsys, "--resume", "nChannels")


def test_huge_learning_rate_stops_with_epoch_and_step(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(*TINY_MSDNET, *SHORT, "--lr", "1e30", "--result_dir", str(run)) == 2
    assert_one_line_error(capsys, "non-finite loss at epoch 1, step")
    assert not (run / "model_latest.pth").exists()


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert train(*TINY_MSDNET, *SHORT, "--epochs", "1", "--result_dir", str(run)) == 0
    good = (run / "model_latest.pth").read_bytes()
    cross_entropy = models.boosting.F.cross_entropy
    monkeypatch.setattr(
        models.boosting.F,
        "cross_entropy",
        lambda *args, **kwargs: cross_entropy(*args, **kwargs) * float("nan"),
    )
    assert train(*TINY_MSDNET, *SHORT, "--epochs", "2", "--result_dir", str(run), "--resume") == 2
    assert_one_line_error(capsys, "non-finite loss at epoch 2, step 1", "model_latest.pth")
    assert (run / "model_latest.pth").read_bytes() == good


def test_missing_data_path_exits_2_without_traceback(tmp_path):
    missing = tmp_path / "no_imagenet"
    command = [
        sys.executable,
        str(ROOT / "train_imagenet.py"),
        "--data-root",
        str(missing),
        "--device",
        "cpu",
        "--result_dir",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: --data-root: no ImageNet folder at {missing / 'train'} "
        f"(expected train/ and val/ with one sub-folder per class)"
    ]


def test_resume_with_only_the_run_directory_continues_with_the_saved_flags(tmp_path):
    run = tmp_path / "run"
    assert train(*TINY_MSDNET, *SHORT, "--epochs", "1", "--lr", "0.05", "--result_dir", str(run)) == 0
    config = json.loads((run / "config.json").read_text())
    assert train("--result_dir", str(run), "--resume", "--epochs", "2") == 0
    resumed = json.loads((run / "config.json").read_text())
    assert resumed["epochs"] == 2 and resumed["lr_f"] == 0.05 and resumed["dataset"] == "digits"
    ignored = ("epochs", "provenance", "resume")  # the new length, this start, how it started
    assert {k: v for k, v in resumed.items() if k not in ignored} == {
        k: v for k, v in config.items() if k not in ignored
    }
    assert load(run / "model_latest.pth")["epoch"] == 2
    assert train("--result_dir", str(run), "--resume") == 0  # finished: nothing more to train
    assert load(run / "model_latest.pth")["epoch"] == 2


def test_resume_refuses_every_changed_flag_at_once_and_a_shorter_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(*TINY_MSDNET, *SHORT, "--epochs", "2", "--result_dir", str(run)) == 0
    before = (run / "config.json").read_bytes()
    assert train("--result_dir", str(run), "--resume", "--lr", "0.05", "--batch-size", "32") == 2
    assert_one_line_error(capsys, "lr_f=0.1 (typed 0.05)", "batch_size=16 (typed 32)")
    assert train("--result_dir", str(run), "--resume", "--epochs", "1") == 2
    assert_one_line_error(capsys, "epochs=2 (typed 1)")
    assert (run / "config.json").read_bytes() == before


def test_resume_auto_continues_a_populated_directory(tmp_path):
    run = tmp_path / "run"
    flags = [*TINY_MSDNET, *SHORT, "--result_dir", str(run), "--resume", "auto"]
    assert train(*flags, "--epochs", "1") == 0
    assert train(*flags, "--epochs", "2") == 0
    assert load(run / "model_latest.pth")["epoch"] == 2
    assert "resuming after epoch 1" in (run / "log.txt").read_text()
