"""The run an evaluation reads: its checkpoint loaded into the network its flags describe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from boostnet.evaluation.checkpoint_choice import EvaluatedCheckpoint, describe_checkpoint
from boostnet.evaluation.settings import EvaluationJob
from models.boosting import BoostedNetwork
from models.costs import ExitCosts
from utils.checkpoint import file_digest, load_checkpoint, load_weights
from utils.distributed import DistInfo, resolve_device, use_threads
from utils.errors import UserError


@dataclass
class LoadedRun:
    """A run ready to evaluate: what was asked, the checkpoint read, its network and costs."""

    job: EvaluationJob
    checkpoint: EvaluatedCheckpoint
    network: BoostedNetwork
    costs: ExitCosts
    device: torch.device
    weights: str = "live"

    @property
    def name(self) -> str:
        return self.job.run_dir.resolve().name

    def header(self) -> dict:
        """Identification shared by every output file."""
        job = self.job
        return {
            "run": self.name,
            **self.checkpoint.header(),
            "arch": job.model.arch,
            "loss": job.objective.name,
            "dataset": job.data.dataset.name,
            "weights": self.weights,
        }


def load_run(job: EvaluationJob) -> LoadedRun:
    """Rebuild the network the job describes, load the checkpoint's weights, count its costs."""
    use_threads(job.runtime.threads)
    checkpoint = load_checkpoint(job.checkpoint_file, flag="--evaluate-from")
    model = job.model.build()
    weights, state = evaluated_weights(checkpoint, job.evaluation.ema, job.checkpoint_file)
    load_weights(
        model,
        state,
        job.checkpoint_file,
        "--evaluate-from",
        "the run's config (different architecture or flags?)",
    )
    costs = job.model.backbone.cost(model, job.model.inputs)
    device = resolve_device(job.runtime.device, DistInfo())
    network = job.objective.network(model.to(device).eval(), job.model.num_exits)
    described = describe_checkpoint(
        job.checkpoint_file, checkpoint, job.config, file_digest(job.checkpoint_file)
    )
    return LoadedRun(job, described, network, costs, device, weights)


def evaluated_weights(
    checkpoint: dict[str, Any], ema: Optional[bool], path: Path
) -> tuple[str, dict[str, torch.Tensor]]:
    """Which weights of the checkpoint to evaluate ('ema' or 'live', as the results' header
    records it) and their state: `--eval-ema` (True), `--no-eval-ema` (False), or by default the
    --model-ema average when the checkpoint holds one."""
    has_ema = "model_ema" in checkpoint
    if ema and not has_ema:
        raise UserError(f"--eval-ema: {path} holds no EMA weights (its run trained without --model-ema)")
    if has_ema if ema is None else ema:
        return "ema", checkpoint["model_ema"]
    return "live", checkpoint["model"]
