"""The run directory: no clobbering of finished runs; config.json (flags and provenance),
log.txt, summary.csv, TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import platform
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence, Union

import torch
import torchvision
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from boostnet.runs.layout import (
    BEST_CHECKPOINT,
    CHECKPOINT_NAMES,
    CONFIG_FILE,
    LATEST_CHECKPOINT,
    LOG_FILE,
    RESUMABLE_CHECKPOINTS,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
)
from utils.checkpoint import write_text_atomically
from utils.errors import UserError
from utils.json_files import write_json
from utils.machine import device_name

REPOSITORY = Path(__file__).resolve().parents[2]
GIT_TIMEOUT_S = 10


def check_run_dir(run_dir: Path, resume: Union[bool, str]) -> None:
    """A directory holding a checkpoint is only reused with --resume; bare --resume needs one.

    Files without any checkpoint (config.json, log.txt, split.json of a run stopped before its
    first save) hold no training, so a fresh start may reuse the directory.
    """
    existing = [name for name in (*RESUMABLE_CHECKPOINTS, BEST_CHECKPOINT) if (run_dir / name).exists()]
    if existing and not resume:
        raise UserError(
            f"--result_dir {run_dir} already holds a run ({existing[0]}); pass "
            f"--resume to continue it or choose a new --result_dir"
        )
    if resume is True and not any((run_dir / name).is_file() for name in RESUMABLE_CHECKPOINTS):
        raise UserError(
            f"--resume: no checkpoint at {run_dir / LATEST_CHECKPOINT} (use "
            f"'--resume auto' to start afresh when there is none)"
        )


def locate_checkpoint(path: Path, flag: str = "--evaluate-from") -> tuple[Path, Path]:
    """(run directory, checkpoint file) for a flag naming either: a run directory's
    model_latest.pth, or its model_best.pth when there is no latest."""
    if path.is_file():
        return path.parent, path
    if not path.is_dir():
        raise UserError(f"{flag}: {path} does not exist")
    for name in CHECKPOINT_NAMES:
        if (path / name).is_file():
            return path, path / name
    raise UserError(f"{flag}: {path} holds no checkpoint ({' or '.join(CHECKPOINT_NAMES)})")


def write_config(run_dir: Path, config: Mapping) -> None:
    """Save config.json (atomically, human-readable)."""
    write_json(run_dir / CONFIG_FILE, config, sort_keys=True)


def write_summary(run_dir: Path, rows: Sequence[Mapping[str, float]]) -> None:
    """Rewrite summary.csv (one row per finished epoch) from the rows the checkpoint carries, so
    a resumed run never duplicates or loses a row."""
    if not rows:
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(run_dir / SUMMARY_FILE, text.getvalue())


def provenance(device: torch.device, world_size: int) -> dict:
    """Where and with what one start of a run executed: command, code version, library versions,
    device and thread count (bit-exact resume needs the same thread count)."""
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv),
        "host": socket.gethostname(),
        **code_version(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_name": device_name(device),
        "world_size": world_size,
        "torch_threads": torch.get_num_threads(),
    }


def code_version() -> dict:
    """The repository's git commit and whether tracked or new files differ from it (None
    without git or outside a checkout)."""

    def git(*arguments: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(REPOSITORY), *arguments],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def duration_text(seconds: float) -> str:
    """A duration for the log: 1h02m, 3m05s or 12s."""
    left = round(seconds)
    hours, minutes, seconds = left // 3600, left // 60 % 60, left % 60
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def local_timestamp() -> str:
    """Now, to the second, in local time with its UTC offset (log.txt's line prefix)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


class RunLog:
    """Console lines, log.txt and TensorBoard scalars of the main process; other ranks are silent."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.file = open(run_dir / LOG_FILE, "a") if enabled else None
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR)) if enabled else None

    def line(self, text: str) -> None:
        """Print one line (without breaking a progress bar) and append it, timestamped, to log.txt."""
        if self.enabled:
            tqdm.write(text)
            self.file.write(f"{local_timestamp()} {text}\n")
            self.file.flush()

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Record TensorBoard scalars at `step` (the epoch)."""
        if self.enabled:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()

    def close(self) -> None:
        """Flush and close log.txt and the TensorBoard writer."""
        if self.enabled:
            self.writer.close()
            self.file.close()
