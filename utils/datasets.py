"""Every dataset the project knows, one entry each: the facts that models, data and costs read.

A dataset is a :class:`DatasetInfo`: its classes, input size, validation size, normalisation,
augmentation, how its images are read, and whether distributed training syncs batch norm. A
new dataset is one loader and one entry in :data:`DATASETS`; a user's own images need no
code at all: ``--dataset folder --num-classes K --image-size S`` reads class folders
(:func:`folder_dataset`). Inputs of 96 pixels and more get the ImageNet-style stem and exit
heads, smaller ones the CIFAR-style ones (docs/architectures.md).

In-memory sets (CIFAR-100, Fashion-MNIST, digits) are loaded as uint8 tensors
(N, 3, H, W); folder sets (ImageNet, `folder`) are read image by image.
"""
from __future__ import annotations

import argparse
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import datasets as tv_datasets

from utils.cleanup import outermost_missing, removed_on_failure
from utils.errors import UserError

Arrays = tuple[Tensor, Tensor, Tensor, Tensor]  # train images, train labels, test images, labels
IMAGENET_STYLE_MIN_SIZE = 96
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR_STD = (0.2675, 0.2565, 0.2761)
FOLDER_VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class DatasetInfo:
    """The facts of one dataset (see the module docstring)."""

    name: str
    label: str  # for people: titles, messages
    num_classes: int
    image_size: int
    val_size: int | float  # held out by --use-valid: a count, or a fraction of the training set
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool  # random horizontal flips in training
    train_size: int  # images in the official training set
    load: Optional[Callable[[Path], Arrays]] = None  # in-memory sets; None: train/ and val/ folders
    sync_bn: bool = False  # SyncBatchNorm under torchrun
    channels: int = 3  # what the network reads (grayscale sets are replicated)

    @property
    def in_memory(self) -> bool:
        return self.load is not None

    @property
    def imagenet_style(self) -> bool:
        """ImageNet-style stem (7x7 stride-2 conv, max-pool) and heads, for large inputs."""
        return self.image_size >= IMAGENET_STYLE_MIN_SIZE

    @property
    def stem_size(self) -> int:
        """Side of the map the stem gives the finest scale (the ImageNet stem divides by 4)."""
        return math.ceil(math.ceil(self.image_size / 2) / 2) if self.imagenet_style else self.image_size

    def held_out(self, train_count: int) -> int:
        """How many training images `--use-valid` holds out."""
        return round(self.val_size * train_count) if isinstance(self.val_size, float) else self.val_size


def pad_and_replicate(images: Tensor, size: int) -> Tensor:
    """uint8 (N, H, W) grayscale images zero-padded to size x size, as 3 identical channels."""
    pad = size - images.shape[-1]
    padded = F.pad(images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    return padded.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def load_cifar100(root: Path) -> Arrays:
    """CIFAR-100 from `root/cifar-100-python`, downloaded there if absent (a failed download
    leaves no folder behind)."""
    folder = root / "cifar-100-python"
    try:
        with removed_on_failure(outermost_missing(root)):
            train, test = (tv_datasets.CIFAR100(str(root), train=split,
                                                download=not folder.exists())
                           for split in (True, False))
    except (OSError, tarfile.TarError) as error:
        raise UserError(f"--data-root: CIFAR-100 is not in {folder} and downloading it failed "
                        f"({error}); put the extracted cifar-100-python folder there") from None
    except RuntimeError as error:
        raise UserError(f"--data-root: {folder} is incomplete or corrupted ({error}); "
                        f"replace it with the extracted cifar-100-python folder") from None

    def arrays(data) -> tuple[Tensor, Tensor]:
        return (torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous(),
                torch.tensor(data.targets, dtype=torch.int64))
    return (*arrays(train), *arrays(test))


def load_fashion_mnist(root: Path) -> Arrays:
    """Fashion-MNIST from `root/FashionMNIST/raw` (torchvision's layout), padded to 32x32 RGB;
    downloaded there if absent (a failed download leaves no folder behind)."""
    folder = root / "FashionMNIST" / "raw"
    download = not folder.is_dir()
    try:
        with removed_on_failure(outermost_missing(folder)):
            train, test = (tv_datasets.FashionMNIST(str(root), train=split, download=download)
                           for split in (True, False))
    except (OSError, RuntimeError) as error:
        cause = (str(error).strip() or type(error).__name__).splitlines()[-1]
        problem = (f"Fashion-MNIST is not in {folder} and downloading it failed ({cause})"
                   if download else f"{folder} lacks Fashion-MNIST files or holds damaged ones")
        raise UserError(f"--data-root: {problem}; put the set there with `bash "
                        f"scripts/get_fashion_mnist.sh {root}`, which also works offline") from None
    return (pad_and_replicate(train.data, 32), train.targets.long(),
            pad_and_replicate(test.data, 32), test.targets.long())


FASHION_MNIST_MINI_FILE = Path(__file__).with_name("fashion_mnist_mini.npz")


def load_fashion_mnist_mini(root: Optional[Path] = None) -> Arrays:
    """The embedded class-balanced Fashion-MNIST subset (600 training and 100 test images per
    class, utils/make_fashion_mnist_mini.py), padded to 32x32 RGB like the full set."""
    with np.load(FASHION_MNIST_MINI_FILE) as stored:
        return tuple(pad_and_replicate(torch.from_numpy(stored[f"{split}_images"]), 32)
                     if kind == "images" else torch.from_numpy(stored[f"{split}_labels"]).long()
                     for split in ("train", "test") for kind in ("images", "labels"))


DIGITS_FILE = Path(__file__).with_name("digits.npz")
DIGITS_MAX_VALUE = 16
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 0
DIGITS_COUNT = 1797


def load_digits(root: Optional[Path] = None) -> Arrays:
    """scikit-learn's 1,797 digits (8x8, committed as utils/digits.npz) upsampled to 32x32 RGB.

    A fixed, seed-independent fifth is the test set; the rest is for training.
    """
    with np.load(DIGITS_FILE) as stored:
        small = torch.from_numpy(stored["images"]).float() * (255 / DIGITS_MAX_VALUE)
        labels = torch.from_numpy(stored["labels"]).long()
    large = F.interpolate(small.unsqueeze(1), size=(32, 32), mode="bilinear", align_corners=False)
    images = large.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[digits_test_indices(len(labels))] = True
    return images[~is_test], labels[~is_test], images[is_test], labels[is_test]


def digits_test_indices(count: int) -> Tensor:
    """The fixed 20% of the digits that form their test set (same for every run and seed)."""
    permutation = torch.randperm(count, generator=torch.Generator().manual_seed(DIGITS_TEST_SEED))
    return permutation[:round(DIGITS_TEST_FRACTION * count)].sort().values


DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("cifar100", "CIFAR-100", num_classes=100, image_size=32, val_size=5000, mean=CIFAR_MEAN,
                std=CIFAR_STD, flip=True, train_size=50_000, load=load_cifar100),
    DatasetInfo("imagenet", "ImageNet", num_classes=1000, image_size=224, val_size=50_000, mean=IMAGENET_MEAN,
                std=IMAGENET_STD, flip=True, train_size=1_281_167, sync_bn=True),
    # Statistics of the zero-padded 32x32 training images, the network's actual input.
    DatasetInfo("fashion_mnist", "Fashion-MNIST", num_classes=10, image_size=32, val_size=5000,
                mean=(0.2190,) * 3, std=(0.3318,) * 3, flip=True, train_size=60_000,
                load=load_fashion_mnist),
    DatasetInfo("fashion_mnist_mini", "Fashion-MNIST mini", num_classes=10, image_size=32,
                val_size=600, mean=(0.2190,) * 3, std=(0.3318,) * 3, flip=True, train_size=6000,
                load=load_fashion_mnist_mini),
    # Normalised like CIFAR-100 so every CIFAR recipe runs unchanged; digits are not mirror
    # symmetric (a flipped 2 is no digit), so no flips.
    DatasetInfo("digits", "digits", num_classes=10, image_size=32, val_size=0.1, mean=CIFAR_MEAN,
                std=CIFAR_STD, flip=False,
                train_size=DIGITS_COUNT - round(DIGITS_TEST_FRACTION * DIGITS_COUNT),
                load=load_digits),
)}
FOLDER = "folder"
DATASET_NAMES = (*DATASETS, FOLDER)
FOLDER_FLAGS = {"num_classes": "--num-classes", "image_size": "--image-size", "val_size": "--val-size"}


def folder_dataset(num_classes: int, image_size: int, val_size: int | float | None) -> DatasetInfo:
    """A user's own images in `train/` and `val/` class folders, normalised like ImageNet."""
    return DatasetInfo(FOLDER, "image folder", num_classes=num_classes, image_size=image_size,
                       val_size=FOLDER_VALIDATION_FRACTION if val_size is None else val_size,
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, flip=True, train_size=0)


def dataset_info(args: argparse.Namespace) -> DatasetInfo:
    """The entry `--dataset` names (for `folder`, built from --num-classes/--image-size/--val-size)."""
    if args.dataset == FOLDER:
        return folder_dataset(args.num_classes, args.image_size, getattr(args, "val_size", None))
    return DATASETS[args.dataset]

