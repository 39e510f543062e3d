"""The inputs every benchmark times on: seeded random images and labels of a model's inputs."""

from __future__ import annotations

import torch

from boostnet.training.settings import TrainingJob


def synthetic_batch(job: TrainingJob, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images of the model's input size and channels and random labels, on `device`."""
    inputs = job.model.inputs
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, inputs.channels, inputs.image_size, inputs.image_size, generator=generator)
    labels = torch.randint(0, inputs.num_classes, (batch,), generator=generator)
    return images.to(device), labels.to(device)
