"""Recovery inside an epoch: when to write a recovery checkpoint (every --checkpoint-interval,
or on a stop signal), the signals that ask for it, and which checkpoint a resume starts from."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch.distributed import ReduceOp

from boostnet.runs.layout import LATEST_CHECKPOINT, RESUMABLE_CHECKPOINTS
from boostnet.runs.settings import interval_parts
from utils import distributed
from utils.checkpoint import load_checkpoint, restore_rng_state
from utils.errors import EXIT_PREEMPTED, Preempted, UserError
from utils.signals import StopSignals


class RecoveryTrigger:
    """Decides after each training step whether to write a recovery checkpoint: the
    --checkpoint-interval (steps or minutes since the last checkpoint) has passed, or a stop
    signal arrived. Under torchrun the ranks decide together, and only at --log-interval
    boundaries, where they synchronise anyway."""

    def __init__(self, interval: Optional[str], device: torch.device, is_distributed: bool):
        self.steps, self.seconds = interval_parts(interval) if interval else (None, None)
        self.device, self.is_distributed = device, is_distributed
        self.signals = StopSignals()
        self.restart()

    def restart(self) -> None:
        """Count the interval from now (call after every checkpoint)."""
        self.steps_done, self.started = 0, time.monotonic()

    def poll(self, at_sync_point: bool) -> tuple[bool, Optional[str]]:
        """After one step: (save a recovery checkpoint now?, the stop signal's name or None)."""
        self.steps_done += 1
        if self.is_distributed and not at_sync_point:
            return False, None
        due = (self.steps is not None and self.steps_done >= self.steps) or (
            self.seconds is not None and time.monotonic() - self.started >= self.seconds
        )
        due, stop = self._agree(due, self.signals.requested)
        return due or stop is not None, stop

    def stop_requested(self) -> Optional[str]:
        """The stop signal's name, or None (between epochs, where every rank checks it)."""
        return self._agree(False, self.signals.requested)[1]

    def _agree(self, due: bool, stop: Optional[str]) -> tuple[bool, Optional[str]]:
        """Under torchrun: due or stopping if any rank is (one small all-reduce)."""
        if not self.is_distributed:
            return due, stop
        flags = torch.tensor([float(due), float(stop is not None)], device=self.device)
        due, anyone_stops = (bool(flag) for flag in distributed.all_reduce_(flags, ReduceOp.MAX).tolist())
        return due, stop or ("a stop signal on another rank" if anyone_stops else None)


@dataclass
class PartialEpoch:
    """How far a recovery checkpoint got into its epoch: steps done, every rank's RNG state and
    metric sums at that point (one entry per rank), and the seconds the epoch had taken."""

    step: int
    ranks: list[dict]
    seconds: float

    @classmethod
    def from_checkpoint(cls, path: Path, checkpoint: dict, world_size: int) -> "PartialEpoch":
        """The position a recovery checkpoint holds, if this many processes shard the epoch as
        its did (the batch size and epoch length are flags a resume may not change); else a
        UserError."""
        if checkpoint["world_size"] != world_size:
            raise UserError(
                f"--resume: {path} stopped inside epoch {checkpoint['epoch'] + 1} with "
                f"{checkpoint['world_size']} process(es), now {world_size}; resume with "
                f"the former, or delete {path} to redo that epoch from "
                f"{LATEST_CHECKPOINT}"
            )
        return cls(checkpoint["step"], checkpoint["ranks"], checkpoint["epoch_seconds"])

    def restore_rng(self, rank: int) -> None:
        """Continue this rank's random streams (per-sample augmentation) where they stopped."""
        restore_rng_state(self.ranks[rank]["rng"])


def newest_checkpoint(run_dir: Path, resume: Union[bool, str]) -> Optional[tuple[Path, dict]]:
    """The checkpoint a resume starts from: the furthest of model_recovery.pth (epoch, step)
    and model_latest.pth (epoch, step 0); None when not resuming or (--resume auto) none exists."""
    if not resume:
        return None
    found = [
        (path, load_checkpoint(path))
        for path in (Path(run_dir) / name for name in RESUMABLE_CHECKPOINTS)
        if path.is_file()
    ]
    if not found:
        return None
    return max(found, key=lambda item: (item[1]["epoch"], item[1].get("step", 0)))


def preempted(signal_name: str, where: str, saved: Path) -> Preempted:
    """The stop a signal caused, saying what was saved and how to continue."""
    return Preempted(
        f"{signal_name}: stopped {where} and saved {saved}; the same command with "
        f"--resume auto continues it (exit status {EXIT_PREEMPTED})"
    )
