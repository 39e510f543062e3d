"""A run directory as a deployment source: its exit policy, the checkpoint that policy is for,
and its test images as evaluation reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from boostnet.deployment.export import MANIFEST_FILE, holds_stages, is_export
from boostnet.evaluation.policy import POLICY_FILE, ExitPolicy, check_digest, read_policy
from utils.checkpoint import file_digest
from utils.errors import UserError


def run_policy(run_dir: Path, policy_file: Optional[Path] = None) -> tuple[ExitPolicy, Path]:
    """(the policy, the run's checkpoint file it names), refused in one line when `run_dir` is an
    export (whole or without its manifest), the policy is missing, or its digest is not that
    file's."""
    if is_export(run_dir):
        raise UserError(f"{run_dir}: an export directory; give the run directory it was exported from")
    if holds_stages(run_dir):
        raise UserError(
            f"{run_dir}: exported stages without {MANIFEST_FILE} (a damaged export?); export again"
        )
    path = policy_file or run_dir / POLICY_FILE
    if not path.is_file():
        raise UserError(
            f"{path}: no exit policy; evaluate the run with --evalmode dynamic or --budget X first "
            f"(it writes one)"
        )
    policy = read_policy(path)
    checkpoint = run_dir / Path(str(policy.document.get("checkpoint", ""))).name
    if not checkpoint.is_file():
        raise UserError(f"{path}: names checkpoint {checkpoint.name}, which {run_dir} does not hold")
    check_digest(policy, path, file_digest(checkpoint), f"checkpoint {checkpoint} has")
    return policy, checkpoint


def loading_flags(checkpoint: Path, policy: ExitPolicy) -> list[str]:
    """Evaluation flags that load `checkpoint` on the CPU with the weights the policy was fitted
    on (its --model-ema average or its live weights, as the evaluation's header recorded)."""
    weights = "--no-eval-ema" if policy.document.get("weights", "live") == "live" else "--eval-ema"
    return ["--evaluate-from", str(checkpoint), "--device", "cpu", "--workers", "0", weights]


def test_batches(test: Dataset, batch_size: int, count: Optional[int] = None) -> Iterator[torch.Tensor]:
    """The first `count` (all when None) images of `test` in batches of `batch_size`."""
    chosen = Subset(test, range(min(count or len(test), len(test))))
    for images, _ in DataLoader(chosen, batch_size=batch_size, shuffle=False, num_workers=0):
        yield images
