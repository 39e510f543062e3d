"""Device-resident training data for CIFAR-sized sets: the loader is never the bottleneck.

The whole uint8 training set (N, 3, 32, 32) sits on the device. Each epoch visits this rank's
shard in the order DistributedSampler(shuffle=True, drop_last=True) gives for (seed, epoch),
so every sample is on at most one rank and none is duplicated; the last partial batch is
dropped. Each batch gets the CIFAR training augmentation (random crop with zero padding,
optional horizontal flip) as a single gather on the device, drawn from a generator seeded by
(seed, epoch, rank) only, then torchvision's ToDtype + Normalize -- the same numbers the
per-sample DataLoader path produces for the same crop. Nothing synchronises with the host.
Works with CPU tensors too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, Subset

from boostnet.data.datasets import CIFAR_MEAN, CIFAR_STD, DatasetInfo
from boostnet.data.loaders import InMemoryImages, epoch_seed
from boostnet.data.readers import in_memory_loader
from utils.errors import UserError

Batch = tuple[Tensor, Tensor]


def use_gpu_data(requested: bool | None, dataset: DatasetInfo, device: torch.device) -> bool:
    """`--gpu-data` (`requested`), defaulting to on when training an in-memory dataset on a GPU."""
    in_memory = in_memory_loader(dataset) is not None
    if requested and not in_memory:
        raise UserError(
            f"--gpu-data keeps the whole training set on the device, which only "
            f"in-memory datasets allow; drop it for --dataset {dataset.name}"
        )
    if requested is None:
        return device.type == "cuda" and in_memory
    return requested


def nchw_uint8(images: Tensor | np.ndarray) -> Tensor:
    """uint8 images as (N, 3, H, W), accepting (N, H, W, 3) (CIFAR's numpy layout) too."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.dim() != 4 or 3 not in (images.shape[1], images.shape[3]):
        raise ValueError(
            f"expected uint8 images shaped (N, 3, H, W) or (N, H, W, 3), got "
            f"{images.dtype} {tuple(images.shape)}"
        )
    return images if images.shape[1] == 3 else images.permute(0, 3, 1, 2)


def uint8_arrays(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """The raw uint8 images and labels of an in-memory dataset (or a Subset of one)."""
    if isinstance(dataset, Subset):
        images, labels = uint8_arrays(dataset.dataset)
        indices = torch.as_tensor(dataset.indices, dtype=torch.int64)
        return images[indices], labels[indices]
    if isinstance(dataset, InMemoryImages):
        return dataset.images, dataset.labels
    raise UserError(
        f"--gpu-data needs an in-memory uint8 training set (e.g. CIFAR-100), "
        f"not {type(dataset).__name__}; use --no-gpu-data"
    )


def sample_augmentation(
    count: int, padding: int, flip: bool, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Per image: crop offsets (top, left) in [0, 2*padding] and whether to flip it."""
    offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=generator, device=generator.device)
    flips = torch.rand(count, generator=generator, device=generator.device) < 0.5
    return offsets, flips & flip


def crop_and_flip(images: Tensor, offsets: Tensor, flips: Tensor, padding: int) -> Tensor:
    """Crop each zero-padded image at its offsets (original size), mirrored where `flips`."""
    count, channels, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    device = images.device
    rows = offsets[:, :1] + torch.arange(height, device=device)
    columns = offsets[:, 1:] + torch.arange(width, device=device)
    columns = torch.where(flips[:, None], columns.flip(1), columns)
    return padded[
        torch.arange(count, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows[:, None, :, None],
        columns[:, None, None, :],
    ]


@dataclass
class GpuBatches:
    """Shuffled, augmented, normalised training batches of one rank's shard, made on the device."""

    images: Tensor
    labels: Tensor
    batch_size: int
    seed: int
    mean: Sequence[float] = CIFAR_MEAN
    std: Sequence[float] = CIFAR_STD
    rank: int = 0
    world_size: int = 1
    flip: bool = True
    padding: int = 4

    @classmethod
    def from_uint8(
        cls,
        images: Tensor | np.ndarray,
        labels: Tensor | np.ndarray | Sequence[int],
        batch_size: int,
        device: torch.device,
        seed: int,
        **options,
    ) -> "GpuBatches":
        """Move uint8 images ((N, 3, H, W) or (N, H, W, 3)) and labels to `device` once."""
        images = nchw_uint8(images).to(device).contiguous()
        labels = torch.as_tensor(labels, dtype=torch.int64).to(device)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        return cls(images, labels, batch_size, seed, **options)

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, batch_size: int, device: torch.device, seed: int, **options
    ) -> "GpuBatches":
        """The same, from the in-memory training set `boostnet.data.loaders.build_splits` returns."""
        return cls.from_uint8(*uint8_arrays(dataset), batch_size, device, seed, **options)

    def __len__(self) -> int:
        """Full batches per epoch on this rank."""
        return self.shard_size() // self.batch_size

    def shard_size(self) -> int:
        return len(self.sampler(0))

    def sampler(self, epoch: int) -> DistributedSampler:
        sampler = DistributedSampler(
            range(len(self.labels)),
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        return sampler

    def shard(self, epoch: int) -> Tensor:
        """This rank's sample indices for `epoch`, in visiting order, on the device."""
        return torch.tensor(list(self.sampler(epoch)), dtype=torch.int64).to(self.images.device)

    def generator(self, epoch: int) -> torch.Generator:
        """The augmentation generator of (seed, epoch, rank), on the data's device."""
        generator = torch.Generator(device=self.images.device)
        return generator.manual_seed(epoch_seed(self.seed, epoch, self.rank))

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """(float images normalised, int64 labels) batches of `epoch` from `start_batch` on;
        the same for a resumed run (skipped batches still draw their augmentation)."""
        order, generator = self.shard(epoch), self.generator(epoch)
        for _ in range(start_batch):
            sample_augmentation(self.batch_size, self.padding, self.flip, generator)
        for start in range(start_batch * self.batch_size, len(self) * self.batch_size, self.batch_size):
            indices = order[start : start + self.batch_size]
            yield self.augment(self.images[indices], generator), self.labels[indices]

    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Random crop + flip from `generator`, then scale to [0, 1] and normalise."""
        offsets, flips = sample_augmentation(len(images), self.padding, self.flip, generator)
        cropped = crop_and_flip(images, offsets, flips, self.padding)
        return TF.normalize(TF.to_dtype(cropped, torch.float32, scale=True), self.mean, self.std)
