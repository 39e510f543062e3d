"""What a run directory holds: its file names and what config.json records.

Torch-free, so that programs that only look at run directories (scripts/study.py, the
parsers) start at once; writing those files is boostnet/runs/records.py.
"""
from __future__ import annotations

import argparse
from typing import Any

from args import num_exits

CONFIG_FILE = "config.json"
LATEST_CHECKPOINT = "model_latest.pth"
BEST_CHECKPOINT = "model_best.pth"
RECOVERY_CHECKPOINT = "model_recovery.pth"
RESUMABLE_CHECKPOINTS = (RECOVERY_CHECKPOINT, LATEST_CHECKPOINT)
LOG_FILE = "log.txt"
SUMMARY_FILE = "summary.csv"
TENSORBOARD_DIR = "tb"
CHECKPOINT_NAMES = (LATEST_CHECKPOINT, BEST_CHECKPOINT)


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved flags plus the number of exits: enough to rebuild the model for evaluation."""
    return {**vars(args), "num_exits": num_exits(args)}
