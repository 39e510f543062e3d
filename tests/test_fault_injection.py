"""SIGKILL a training at seeded-random moments (inside and between epochs, right after a
resume) and restart the same `--resume auto` command each time: the end is bit-identical to an
uninterrupted run, and no kill leaves a broken file or loses more than one interval of work."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from tests.test_run_safety import FLAGS, SUBPROCESS_ENV, assert_same_weights, metric_rows, temporary_files
from tests.test_training import load, train

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS = 4
STEPS = 8
INTERVAL_STEPS = 2
SEED = 12
# Where each start is killed: right after its first line ("start": during the first steps of a
# resume), after its n-th recovery checkpoint line (inside an epoch) or right after its next
# epoch line (during the epoch checkpoint, between epochs). Four kills cost under three of the
# four epochs, so every start but the last is really killed.
MOMENTS = ("start", "recovery", "epoch")
KILLS = 4
RECOVERY_LINE = re.compile(r"recovery checkpoint: epoch (\d+) step (\d+) ")
RESUME_LINE = re.compile(r"resuming (?:epoch (\d+) after step (\d+)|after epoch (\d+)) from")
EPOCH_LINE = re.compile(r"epoch \d+/\d+ ")
COMMAND = [*FLAGS, "--epochs", str(EPOCHS), "--max-steps-per-epoch", str(STEPS), "--resume", "auto"]


def kill_plan(chooser: random.Random) -> list[tuple[str, int]]:
    """KILLS (moment, how many such lines to wait for), every moment at least once."""
    moments = [*MOMENTS, *chooser.choices(MOMENTS, k=KILLS - len(MOMENTS))]
    chooser.shuffle(moments)
    return [(moment, chooser.randint(1, 2) if moment == "recovery" else 1) for moment in moments]


def is_moment(line: str, moment: str, index: int) -> bool:
    """Whether `line`, the `index`-th of its start, is a line of the kind `moment` waits for."""
    if moment == "start":
        return index == 0
    return bool((RECOVERY_LINE if moment == "recovery" else EPOCH_LINE).match(line))


def position(checkpoint: dict) -> tuple[int, int]:
    """(whole epochs done, steps done in the next one)."""
    return checkpoint["epoch"], checkpoint.get("step", 0)


def saved_position(run: Path) -> tuple[int, int]:
    """The furthest point a restart can continue from."""
    found = [
        position(load(run / name))
        for name in ("model_latest.pth", "model_recovery.pth")
        if (run / name).exists()
    ]
    return max(found, default=(0, 0))


def announced_position(line: str) -> tuple[int, int] | None:
    """The position a 'recovery checkpoint' log line says was saved (its epoch is 1-based)."""
    match = RECOVERY_LINE.match(line)
    return (int(match[1]) - 1, int(match[2])) if match else None


def resumed_position(line: str) -> tuple[int, int] | None:
    """The position a 'resuming ...' line starts from."""
    match = RESUME_LINE.match(line)
    if not match:
        return None
    return (int(match[1]) - 1, int(match[2])) if match[1] else (int(match[3]), 0)


def assert_nothing_half_written(run: Path, killed_pid: int) -> None:
    """Every checkpoint loads, every JSON parses, and temporary files are the killed process's
    only (the next start removes them)."""
    for path in run.glob("*.pth"):
        assert "model" in load(path), path
    for path in run.glob("*.json"):
        json.loads(path.read_text())
    for path in temporary_files(run):
        assert path.name.endswith(f".{killed_pid}.tmp"), path


def start(run: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train_cifar100.py"),
            *COMMAND,
            "--checkpoint-interval",
            str(INTERVAL_STEPS),
            "--result_dir",
            str(run),
        ],
        cwd=ROOT,
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_sigkill_at_random_moments_then_resume_auto_ends_bit_identical(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert train(*COMMAND, "--result_dir", str(straight)) == 0
    plan = kill_plan(random.Random(SEED))
    saved = (0, 0)
    for moment, count in [*plan, (None, 0)]:
        process = start(killed)
        lines, seen = [], 0
        for line in process.stdout:
            lines.append(line)
            seen += moment is not None and is_moment(line, moment, len(lines) - 1)
            if moment is not None and seen == count:
                process.kill()
                break
        lines += process.stdout.readlines()  # what it wrote before it died
        resumed = next(filter(None, map(resumed_position, lines)), None)
        assert resumed == (saved if saved != (0, 0) else None)  # from the furthest save
        if moment is None:
            assert process.wait() == 0, lines[-1:]
            break
        assert process.wait() == -signal.SIGKILL, f"finished before the {moment} kill"
        assert_nothing_half_written(killed, process.pid)
        announced = [point for point in map(announced_position, lines) if point]
        assert all(step % INTERVAL_STEPS == 0 for _, step in announced)
        saved = saved_position(killed)
        # A kill loses only what came after the last announced save: at most one interval.
        assert saved >= max(announced, default=(0, 0))
    assert_same_weights(straight, killed)
    best, expected_best = load(killed / "model_best.pth"), load(straight / "model_best.pth")
    assert best["epoch"] == expected_best["epoch"]
    for key, value in expected_best["model"].items():
        assert torch.equal(value, best["model"][key]), key
    assert metric_rows(killed) == metric_rows(straight)
    assert not temporary_files(killed) and not (killed / "model_recovery.pth").exists()
    assert json.loads((killed / "config.json").read_text())["provenance"][-1]["command"]
