"""What every benchmark times: the seeded network of a training job, its SGD over the recipe's
weight-decay groups, and seeded random inputs."""

from __future__ import annotations

import torch

from boostnet.training.optim import parameter_groups
from boostnet.training.settings import TrainingJob
from boostnet.training.step import make_sgd
from models.boosting import BoostedNetwork


def build(job: TrainingJob, device: torch.device) -> tuple[BoostedNetwork, torch.nn.Module]:
    """The recipe's network (seeded) and its losses on `device`."""
    torch.manual_seed(0)
    exits = job.model.num_exits
    network = job.objective.network(job.model.build().to(device), exits)
    return network, job.objective.loss(exits).to(device)


def sgd_for(job: TrainingJob, network: BoostedNetwork, device: torch.device) -> torch.optim.SGD:
    """The recipe's SGD over the network's weight-decay groups (per exit where the backbone has them)."""
    groups = parameter_groups(
        network.network, job.train.weight_decay, job.model.backbone.per_exit_weight_decay
    )
    return make_sgd(groups, job.train.lr, job.train.momentum, device)


def synthetic_batch(job: TrainingJob, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images of the model's input size and channels and random labels, on `device`."""
    inputs = job.model.inputs
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, inputs.channels, inputs.image_size, inputs.image_size, generator=generator)
    labels = torch.randint(0, inputs.num_classes, (batch,), generator=generator)
    return images.to(device), labels.to(device)
