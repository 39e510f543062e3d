"""What a run directory holds: its file names.

Torch-free, so that programs that only look at run directories (scripts/study.py, the
parsers) start at once; writing those files is boostnet/runs/records.py.
"""

from __future__ import annotations

CONFIG_FILE = "config.json"
LATEST_CHECKPOINT = "model_latest.pth"
BEST_CHECKPOINT = "model_best.pth"
RECOVERY_CHECKPOINT = "model_recovery.pth"
RESUMABLE_CHECKPOINTS = (RECOVERY_CHECKPOINT, LATEST_CHECKPOINT)
LOG_FILE = "log.txt"
SUMMARY_FILE = "summary.csv"
TENSORBOARD_DIR = "tb"
CHECKPOINT_NAMES = (LATEST_CHECKPOINT, BEST_CHECKPOINT)
