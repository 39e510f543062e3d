"""Device-resident batches: the CIFAR augmentation exactly, seeded per (seed, epoch, rank), sharded."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torch.utils.data import Subset

from args import parse_args
from boostnet.data.datasets import CIFAR_MEAN, CIFAR_STD
from boostnet.data.gpu_batches import GpuBatches, sample_augmentation, uint8_arrays, use_gpu_data
from boostnet.data.loaders import InMemoryImages
from utils.errors import UserError

COUNT = 103
SIZE = 8
BATCH = 16
PADDING = 4
SEED = 7


def uint8_images(count: int = COUNT) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (count, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    return images, torch.arange(count) % 10


def batches(**options) -> GpuBatches:
    images, labels = uint8_images()
    return GpuBatches.from_uint8(images, labels, BATCH, torch.device("cpu"), SEED, **options)


def reference_batch(images: Tensor, offsets: Tensor, flips: Tensor) -> Tensor:
    """torchvision's pad (zeros), crop and flip image by image, then ToDtype + Normalize."""
    out = []
    for image, (top, left), flip in zip(images, offsets.tolist(), flips.tolist()):
        crop = TF.crop(TF.pad(image, [PADDING]), top, left, SIZE, SIZE)
        out.append(TF.horizontal_flip(crop) if flip else crop)
    return TF.normalize(TF.to_dtype(torch.stack(out), torch.float32, scale=True), CIFAR_MEAN, CIFAR_STD)


def gpu_data_of(job, device: torch.device) -> bool:
    """Whether `job` (its --gpu-data and dataset) trains from device-resident batches on `device`."""
    return use_gpu_data(job.speed.gpu_data, job.data.dataset, device)


def epoch_batches(data: GpuBatches, epoch: int) -> list[tuple[Tensor, Tensor]]:
    return list(data.epoch(epoch))


@pytest.mark.parametrize("flip", [True, False])
def test_batches_are_the_reference_crop_and_flip_of_the_shuffled_images(flip):
    data = batches(flip=flip)
    images, labels = uint8_images()
    order, generator = data.shard(3), data.generator(3)
    produced = epoch_batches(data, 3)
    assert len(produced) == len(data) == COUNT // BATCH
    all_offsets, all_flips = [], []
    for n, (batch_images, batch_labels) in enumerate(produced):
        indices = order[n * BATCH : (n + 1) * BATCH]
        offsets, flips = sample_augmentation(BATCH, PADDING, flip, generator)
        assert batch_images.shape == (BATCH, 3, SIZE, SIZE) and batch_images.dtype == torch.float32
        assert torch.equal(batch_labels, labels[indices])
        assert torch.equal(batch_images, reference_batch(images[indices], offsets, flips))
        all_offsets.append(offsets)
        all_flips.append(flips)
    offsets, flips = torch.cat(all_offsets), torch.cat(all_flips)
    assert offsets.min() == 0 and offsets.max() == 2 * PADDING
    assert flips.any() == flip and not flips.all()


def test_the_same_seed_and_epoch_give_the_same_batches_and_other_epochs_differ():
    first, again = epoch_batches(batches(), 2), epoch_batches(batches(), 2)
    other = epoch_batches(batches(), 3)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])
    assert not torch.equal(batches().shard(2), batches().shard(3))


def test_channel_last_numpy_layout_gives_the_same_batches():
    images, labels = uint8_images()
    nhwc = GpuBatches.from_uint8(
        images.permute(0, 2, 3, 1).numpy(), labels.numpy(), BATCH, torch.device("cpu"), SEED
    )
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch_batches(nhwc, 0), epoch_batches(batches(), 0)))


def test_ranks_get_disjoint_equal_shards_with_their_own_augmentation():
    world = 3
    shards = [batches(rank=rank, world_size=world) for rank in range(world)]
    indices = [set(shard.shard(5).tolist()) for shard in shards]
    assert all(len(s) == COUNT // world for s in indices)
    assert set.union(*indices) <= set(range(COUNT))
    assert sum(map(len, indices)) == len(set.union(*indices))
    assert len(shards[0]) == (COUNT // world) // BATCH
    first_images = [next(shard.epoch(5))[0] for shard in shards]
    assert not torch.equal(first_images[0], first_images[1])


def test_arrays_come_from_an_in_memory_subset():
    images, labels = uint8_images()
    subset = Subset(InMemoryImages(images, labels, transform=lambda image: image), [5, 2, 9])
    sub_images, sub_labels = uint8_arrays(subset)
    assert torch.equal(sub_images, images[[5, 2, 9]]) and sub_labels.tolist() == [5, 2, 9]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="uint8"):
        GpuBatches.from_uint8(torch.zeros(4, 3, 8, 8), torch.zeros(4), BATCH, torch.device("cpu"), 0)
    with pytest.raises(UserError, match="--gpu-data"):
        uint8_arrays([(torch.zeros(3, 8, 8), 0)])
    with pytest.raises(UserError, match="--gpu-data"):
        gpu_data_of(parse_args(["--dataset", "imagenet", "--gpu-data"]), torch.device("cuda"))


@pytest.mark.parametrize(
    "flags, device, expected",
    [
        ([], "cuda", True),
        ([], "cpu", False),
        (["--dataset", "imagenet"], "cuda", False),
        (["--no-gpu-data"], "cuda", False),
        (["--gpu-data"], "cpu", True),
    ],
)
def test_gpu_data_defaults_to_on_for_cifar_sized_sets_on_a_gpu(flags, device, expected):
    assert gpu_data_of(parse_args(flags), torch.device(device)) is expected
