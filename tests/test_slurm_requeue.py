"""scripts/slurm_requeue.sh with stand-ins for the training and for scontrol: a stop signal is
passed on to the training, and the job is requeued exactly when the training was preempted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from utils.errors import EXIT_PREEMPTED

SCRIPT = ROOT / "scripts" / "slurm_requeue.sh"
# Prints its arguments, then waits; SIGTERM makes it exit with `status`.
FAKE_TRAINING = """import signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit({status}))
print(" ".join(sys.argv[1:]), flush=True)
signal.pause()
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def run_job(tmp_path: Path, stop_status: int, job_signal: signal.Signals) -> tuple[int, str, str]:
    """Run the script as SLURM would, signal it once the training runs; returns (exit status,
    the training's arguments, what scontrol was asked)."""
    training = executable(tmp_path / "train.py", FAKE_TRAINING.format(status=stop_status))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    executable(bin_dir / "scontrol", f'#!/bin/sh\necho "$@" >> {calls}\n')
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_ID": "4242",
        "SLURM_SUBMIT_DIR": str(ROOT),
        "TRAIN": f"{sys.executable} {training}",
    }
    job = subprocess.Popen(
        ["bash", str(SCRIPT), "--epochs", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    arguments = job.stdout.readline().strip()
    job.send_signal(job_signal)
    job.communicate(timeout=60)
    return job.returncode, arguments, calls.read_text() if calls.exists() else ""


@pytest.mark.parametrize("job_signal", [signal.SIGUSR1, signal.SIGTERM])
def test_a_preempted_training_is_requeued(job_signal, tmp_path):
    status, arguments, scontrol = run_job(tmp_path, EXIT_PREEMPTED, job_signal)
    assert arguments == "--epochs 3 --resume auto"
    assert scontrol == "requeue 4242\n" and status == 0


@pytest.mark.parametrize("stop_status", [0, 2], ids=["finished", "failed"])
def test_a_training_that_ends_otherwise_is_not_requeued(stop_status, tmp_path):
    status, _, scontrol = run_job(tmp_path, stop_status, signal.SIGUSR1)
    assert scontrol == "" and status == stop_status
