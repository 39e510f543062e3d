"""The run directory: no clobbering of finished runs; config.json, log.txt, TensorBoard scalars."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Mapping

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from args import num_exits
from utils.checkpoint import write_text_atomically
from utils.errors import UserError

CONFIG_FILE = "config.json"
LATEST_CHECKPOINT = "model_latest.pth"
BEST_CHECKPOINT = "model_best.pth"
LOG_FILE = "log.txt"
TENSORBOARD_DIR = "tb"
CHECKPOINT_NAMES = (LATEST_CHECKPOINT, BEST_CHECKPOINT)


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """A directory holding a run is only reused with --resume (which needs its checkpoint)."""
    existing = [name for name in (CONFIG_FILE, LATEST_CHECKPOINT) if (run_dir / name).exists()]
    if existing and not resume:
        raise UserError(f"--result_dir {run_dir} already holds a run ({existing[0]}); pass "
                        f"--resume to continue it or choose a new --result_dir")
    if resume and not (run_dir / LATEST_CHECKPOINT).is_file():
        raise UserError(f"--resume: no checkpoint at {run_dir / LATEST_CHECKPOINT}")


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


def run_config(args: argparse.Namespace) -> dict:
    """The resolved flags plus the number of exits: enough to rebuild the model for evaluation."""
    return {**vars(args), "num_exits": num_exits(args)}


def write_config(run_dir: Path, config: Mapping) -> None:
    """Save config.json (atomically, human-readable)."""
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    write_text_atomically(run_dir / CONFIG_FILE, text)


class RunLog:
    """Console lines, log.txt and TensorBoard scalars of the main process; other ranks are silent."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.file = open(run_dir / LOG_FILE, "a") if enabled else None
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR)) if enabled else None

    def line(self, text: str) -> None:
        """Print one line (without breaking a progress bar) and append it to log.txt."""
        if self.enabled:
            tqdm.write(text)
            self.file.write(text + "\n")
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
