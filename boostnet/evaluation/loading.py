"""The run an evaluation reads: its checkpoint loaded into the network its flags describe."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from boostnet.evaluation.checkpoint_choice import EvaluatedCheckpoint, describe_checkpoint
from boostnet.evaluation.settings import EvaluationJob
from models.boosting import BoostedNetwork
from models.costs import ExitCosts
from models.objectives import objective
from utils.checkpoint import file_digest, load_checkpoint, load_weights
from utils.distributed import DistInfo, resolve_device, use_threads


@dataclass
class LoadedRun:
    """A run ready to evaluate: what was asked, the checkpoint read, its network and costs."""

    job: EvaluationJob
    checkpoint: EvaluatedCheckpoint
    network: BoostedNetwork
    costs: ExitCosts
    device: torch.device

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
        }


def load_run(job: EvaluationJob) -> LoadedRun:
    """Rebuild the network the job describes, load the checkpoint's weights, count its costs."""
    use_threads(job.runtime.threads)
    checkpoint = load_checkpoint(job.checkpoint_file, flag="--evaluate-from")
    model = job.model.build()
    load_weights(
        model,
        checkpoint["model"],
        job.checkpoint_file,
        "--evaluate-from",
        "the run's config (different architecture or flags?)",
    )
    costs = job.model.backbone.cost(model, job.model.inputs)
    device = resolve_device(job.runtime.device, DistInfo())
    network = objective(job.objective.name).network(
        model.to(device).eval(), job.objective, job.model.num_exits
    )
    described = describe_checkpoint(
        job.checkpoint_file, checkpoint, job.config, file_digest(job.checkpoint_file)
    )
    return LoadedRun(job, described, network, costs, device)
