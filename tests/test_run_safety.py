"""Run-directory safety: one owner (lock), restartable after failed first saves, one-line I/O
errors, stop signals with recovery checkpoints, provenance and per-epoch records."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import boostnet.runs.recovery
import boostnet.training.engine
from tests.conftest import ROOT, TINY_MSDNET
from tests.test_training import SHORT, assert_one_line_error, load, train
from utils.errors import EXIT_PREEMPTED
from utils.signals import StopSignals

FLAGS = [*TINY_MSDNET, *SHORT, "--use-valid", "--lr_milestones", "1"]
NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
METRIC_COLUMNS = re.compile(r"(train|val)_(loss|acc)_exit_\d+")
ETA = re.compile(r", ETA (\d+h\d\dm|\d+m\d\ds|\d+s)( \*)?$")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ")
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


def temporary_files(run: Path) -> list[Path]:
    return list(run.glob(".*.tmp"))


def assert_same_weights(expected_run: Path, run: Path) -> None:
    expected, found = load(expected_run / "model_latest.pth"), load(run / "model_latest.pth")
    assert found["epoch"] == expected["epoch"]
    for part in ("model", "objective"):
        for key, value in expected[part].items():
            assert torch.equal(value, found[part][key]), f"{part} {key}"
    for state, found_state in zip(
        expected["optimizer"]["state"].values(), found["optimizer"]["state"].values()
    ):
        assert torch.equal(state["momentum_buffer"], found_state["momentum_buffer"])


def metric_rows(run: Path) -> list[dict]:
    """summary.csv without its timing columns (those differ between runs)."""
    with open(run / "summary.csv", newline="") as file:
        return [
            {
                key: value
                for key, value in row.items()
                if key in ("epoch", "lr") or METRIC_COLUMNS.fullmatch(key)
            }
            for row in csv.DictReader(file)
        ]


def signal_at_step(monkeypatch, number: int, step: int) -> None:
    """Send this process signal `number` right after its `step`-th training step (counted over
    the whole run), through the real handler."""
    poll = boostnet.runs.recovery.RecoveryTrigger.poll
    steps = iter(range(1, 10**6))

    def poll_and_signal(self, at_sync_point: bool):
        if next(steps) == step:
            os.kill(os.getpid(), number)
        return poll(self, at_sync_point)

    monkeypatch.setattr(boostnet.runs.recovery.RecoveryTrigger, "poll", poll_and_signal)


def hold_lock(run: Path) -> subprocess.Popen:
    """Another process holding RUN/.lock (as a training does) until it is killed."""
    code = (
        "import sys; from boostnet.runs.lock import RunLock\n"
        f"with RunLock({str(run)!r}):\n    print('locked', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_training_on_a_directory_is_refused_and_a_dead_holder_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock(run)
    try:
        assert train(*FLAGS, "--epochs", "1", "--result_dir", str(run)) == 2
        assert_one_line_error(capsys, str(run), "in use", f"pid {holder.pid}")
        assert not (run / "model_latest.pth").exists()
    finally:
        holder.kill()
        holder.wait()
    assert f"pid {holder.pid}" in (run / ".lock").read_text()  # the stale lock file stays
    assert train(*FLAGS, "--epochs", "1", "--result_dir", str(run)) == 0
    assert f"pid {os.getpid()}" in (run / ".lock").read_text()


def test_a_failed_first_save_leaves_a_directory_the_same_command_restarts(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    command = [*FLAGS, "--epochs", "1", "--result_dir", str(run)]
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", lambda *args, **kwargs: (_ for _ in ()).throw(NO_SPACE))
        assert train(*command) == 2
    assert_one_line_error(capsys, str(run / "model_latest.pth"), "No space left on device")
    assert not temporary_files(run) and not (run / "model_latest.pth").exists()
    assert train(*command) == 0
    assert load(run / "model_latest.pth")["epoch"] == 1


def test_leftovers_of_a_run_that_never_saved_do_not_block_a_fresh_start(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "log.txt").write_text("a start that died before its first checkpoint\n")
    assert train(*FLAGS, "--epochs", "1", "--result_dir", str(run)) == 0
    assert json.loads((run / "config.json").read_text())["epochs"] == 1


def test_disk_full_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert train(*FLAGS, "--epochs", "1", "--result_dir", str(run)) == 0
    kept = {name: (run / name).read_bytes() for name in ("model_latest.pth", "model_best.pth")}
    monkeypatch.setattr(torch, "save", lambda *args, **kwargs: (_ for _ in ()).throw(NO_SPACE))
    assert train(*FLAGS, "--epochs", "2", "--result_dir", str(run), "--resume") == 2
    assert_one_line_error(capsys, f"cannot write {run / 'model_latest.pth'}", "No space left on device")
    assert {name: (run / name).read_bytes() for name in kept} == kept
    assert not temporary_files(run)


@pytest.mark.parametrize("where, cause", [("file", "is a file"), ("file/run", "Not a directory")])
def test_a_result_dir_that_cannot_be_a_directory_is_one_line(where, cause, tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    assert train(*FLAGS, "--result_dir", str(tmp_path / where)) == 2
    assert_one_line_error(capsys, str(tmp_path / where), cause)
    assert (tmp_path / "file").read_text() == "not a directory"


def test_orphaned_temporary_files_of_dead_writers_are_removed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    orphan = run / f".model_best.pth.{finished.stdout.strip()}.tmp"
    in_progress = run / f".anytime.csv.{os.getpid()}.tmp"  # a live writer's: not ours to delete
    orphan.write_bytes(b"half a copy")
    in_progress.write_bytes(b"being written")
    assert train(*FLAGS, "--epochs", "1", "--result_dir", str(run)) == 0
    assert not orphan.exists() and in_progress.exists()


@pytest.mark.parametrize("data", ["--no-gpu-data", "--gpu-data"])
def test_sigterm_mid_epoch_saves_a_recovery_checkpoint_and_resumes_bit_exactly(
    data, tmp_path, capsys, monkeypatch
):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    command = [*FLAGS, data, "--epochs", "3"]
    assert train(*command, "--result_dir", str(straight)) == 0
    with monkeypatch.context() as patch:
        signal_at_step(patch, signal.SIGTERM, 5 + 3)  # epoch 2 (5 steps each), step 3
        assert train(*command, "--result_dir", str(stopped)) == EXIT_PREEMPTED
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("stopped: SIGTERM: stopped in epoch 2 after step 3")
    recovery = load(stopped / "model_recovery.pth")
    assert (recovery["epoch"], recovery["step"]) == (1, 3)
    assert load(stopped / "model_latest.pth")["epoch"] == 1
    assert train(*command, "--result_dir", str(stopped), "--resume") == 0
    assert "resuming epoch 2 after step 3" in capsys.readouterr().out
    assert_same_weights(straight, stopped)
    assert metric_rows(stopped) == metric_rows(straight)
    assert not (stopped / "model_recovery.pth").exists()


def test_mid_epoch_resume_with_another_batch_size_is_refused(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        signal_at_step(patch, signal.SIGUSR1, 2)
        assert train(*FLAGS, "--epochs", "2", "--result_dir", str(run)) == EXIT_PREEMPTED
    before = (run / "model_recovery.pth").read_bytes()
    assert (
        train(*FLAGS, "--epochs", "2", "--batch-size", "8", "--result_dir", str(run), "--resume", "auto") == 2
    )
    assert_one_line_error(capsys, "--resume", "model_recovery.pth", "batch_size=16")
    assert (run / "model_recovery.pth").read_bytes() == before


def test_a_signal_during_validation_stops_after_the_epoch_checkpoint(tmp_path, capsys, monkeypatch):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert train(*FLAGS, "--epochs", "2", "--result_dir", str(straight)) == 0
    evaluate = boostnet.training.engine.Trainer.evaluate

    def evaluate_after_a_signal(self, loader):
        os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(self, loader)

    with monkeypatch.context() as patch:
        patch.setattr(boostnet.training.engine.Trainer, "evaluate", evaluate_after_a_signal)
        assert train(*FLAGS, "--epochs", "2", "--result_dir", str(stopped)) == EXIT_PREEMPTED
    assert "stopped: SIGTERM: stopped after epoch 1 and saved" in capsys.readouterr().err
    assert not (stopped / "model_recovery.pth").exists()
    assert load(stopped / "model_latest.pth")["epoch"] == 1
    assert train(*FLAGS, "--epochs", "2", "--result_dir", str(stopped), "--resume", "auto") == 0
    assert_same_weights(straight, stopped)


def test_sigusr1_stops_a_real_process_with_the_preempted_status(tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable,
        str(ROOT / "train_cifar100.py"),
        *FLAGS,
        "--epochs",
        "1000",
        "--result_dir",
        str(run),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().startswith("training:")
    process.send_signal(signal.SIGUSR1)
    _, err = process.communicate(timeout=300)
    assert process.returncode == EXIT_PREEMPTED
    assert err.strip().splitlines()[-1].startswith("stopped: SIGUSR1: stopped")
    recovery = load(run / "model_recovery.pth")
    assert recovery["step"] >= 1 and not temporary_files(run)


def test_first_ctrl_c_asks_to_stop_and_the_second_interrupts_at_once():
    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.requested == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.requested == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("interval", ["0", "-5", "2.5", "m", "30s", "infm"])
def test_bad_checkpoint_interval_is_one_line(interval, tmp_path, capsys):
    assert train(*FLAGS, "--checkpoint-interval", interval, "--result_dir", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--checkpoint-interval" in err[0]
    assert not (tmp_path / "run").exists()


def test_resume_takes_only_auto_as_a_value(tmp_path, capsys):
    assert train(*FLAGS, "--resume", "yes", "--result_dir", str(tmp_path / "run")) == 2
    assert "--resume" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_resume_auto_starts_afresh_in_an_empty_directory(tmp_path):
    run = tmp_path / "run"
    assert train(*FLAGS, "--epochs", "1", "--result_dir", str(run), "--resume", "auto") == 0
    assert load(run / "model_latest.pth")["epoch"] == 1


def test_records_carry_provenance_timestamps_eta_and_one_summary_row_per_epoch(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["train_cifar100.py", "--as-typed"])
    assert train(*FLAGS, "--epochs", "1", "--deterministic", "--result_dir", str(run)) == 0
    assert train(*FLAGS, "--epochs", "2", "--deterministic", "--result_dir", str(run), "--resume") == 0
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    config = json.loads((run / "config.json").read_text())
    assert config["deterministic"] is True and len(config["provenance"]) == 2
    start = config["provenance"][-1]
    assert start["command"] == "train_cifar100.py --as-typed"
    assert start["torch"] == torch.__version__ and start["torch_threads"] == 1
    assert start["device"] == "cpu" and start["world_size"] == 1
    if start["git_commit"] is None:  # not a git checkout
        assert start["git_dirty"] is None
    else:
        assert re.fullmatch("[0-9a-f]{40}", start["git_commit"])
        assert isinstance(start["git_dirty"], bool)
    assert [row["epoch"] for row in metric_rows(run)] == ["1", "2"]
    log = (run / "log.txt").read_text().splitlines()
    assert all(TIMESTAMP.match(line) for line in log)
    epoch_lines = [line for line in log if re.search(r" epoch \d/\d ", line)]
    assert len(epoch_lines) == 2 and all(ETA.search(line) for line in epoch_lines)
    assert "loss (sum of 3 exits)" in capsys.readouterr().out


def test_deterministic_mode_is_on_while_training(tmp_path, monkeypatch):
    seen = []
    fit = boostnet.training.engine.Trainer.fit

    def fit_noting_the_mode(self):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return fit(self)

    monkeypatch.setattr(boostnet.training.engine.Trainer, "fit", fit_noting_the_mode)
    assert train(*FLAGS, "--epochs", "1", "--deterministic", "--result_dir", str(tmp_path / "run")) == 0
    assert seen == [True]
