"""Every dataset the project knows, one entry each: the facts that parsers, models and costs read.

A dataset is a :class:`DatasetInfo`: its classes, input size, validation size, normalisation,
augmentation, and whether distributed training syncs batch norm. A user's own images need no
code at all: ``--dataset folder --num-classes K --image-size S`` reads class folders
(:func:`folder_dataset`). Inputs of 96 pixels and more get the ImageNet-style stem and exit
heads, smaller ones the CIFAR-style ones (docs/architectures.md).

This module imports neither torch nor torchvision, so that every program's parser (and its
``--help``) starts in a fraction of a second; how each dataset's images are read is in
:mod:`boostnet.data.readers`. A new dataset is one entry here and, for an in-memory one, one loader
there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from models.registry import IMAGENET_STYLE_MIN_SIZE, InputSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR_STD = (0.2675, 0.2565, 0.2761)
FOLDER_VALIDATION_FRACTION = 0.1
DIGITS_COUNT = 1797
DIGITS_TEST_FRACTION = 0.2


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
    sync_bn: bool = False  # SyncBatchNorm under torchrun
    channels: int = 3  # what the network reads (grayscale sets are replicated)

    @property
    def imagenet_style(self) -> bool:
        """Large inputs: ImageNet-style augmentation (and, in the models, stem and heads)."""
        return self.image_size >= IMAGENET_STYLE_MIN_SIZE

    @property
    def inputs(self) -> InputSpec:
        """What a network trained on this dataset reads and predicts."""
        return InputSpec(self.image_size, self.num_classes, self.channels)

    def held_out(self, train_count: int) -> int:
        """How many training images `--use-valid` holds out."""
        return round(self.val_size * train_count) if isinstance(self.val_size, float) else self.val_size


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "cifar100",
            "CIFAR-100",
            num_classes=100,
            image_size=32,
            val_size=5000,
            mean=CIFAR_MEAN,
            std=CIFAR_STD,
            flip=True,
            train_size=50_000,
        ),
        DatasetInfo(
            "imagenet",
            "ImageNet",
            num_classes=1000,
            image_size=224,
            val_size=50_000,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            flip=True,
            train_size=1_281_167,
            sync_bn=True,
        ),
        # Statistics of the zero-padded 32x32 training images, the network's actual input.
        DatasetInfo(
            "fashion_mnist",
            "Fashion-MNIST",
            num_classes=10,
            image_size=32,
            val_size=5000,
            mean=(0.2190,) * 3,
            std=(0.3318,) * 3,
            flip=True,
            train_size=60_000,
        ),
        DatasetInfo(
            "fashion_mnist_mini",
            "Fashion-MNIST mini",
            num_classes=10,
            image_size=32,
            val_size=600,
            mean=(0.2190,) * 3,
            std=(0.3318,) * 3,
            flip=True,
            train_size=6000,
        ),
        # Normalised like CIFAR-100 so every CIFAR recipe runs unchanged; digits are not mirror
        # symmetric (a flipped 2 is no digit), so no flips.
        DatasetInfo(
            "digits",
            "digits",
            num_classes=10,
            image_size=32,
            val_size=0.1,
            mean=CIFAR_MEAN,
            std=CIFAR_STD,
            flip=False,
            train_size=DIGITS_COUNT - round(DIGITS_TEST_FRACTION * DIGITS_COUNT),
        ),
    )
}
FOLDER = "folder"
DATASET_NAMES = (*DATASETS, FOLDER)
FOLDER_FLAGS = {"num_classes": "--num-classes", "image_size": "--image-size", "val_size": "--val-size"}


def folder_dataset(num_classes: int, image_size: int, val_size: int | float | None) -> DatasetInfo:
    """A user's own images in `train/` and `val/` class folders, normalised like ImageNet."""
    return DatasetInfo(
        FOLDER,
        "image folder",
        num_classes=num_classes,
        image_size=image_size,
        val_size=FOLDER_VALIDATION_FRACTION if val_size is None else val_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        flip=True,
        train_size=0,
    )


def dataset_info(
    name: str,
    num_classes: Optional[int] = None,
    image_size: Optional[int] = None,
    val_size: int | float | None = None,
) -> DatasetInfo:
    """The entry `--dataset name` selects (`folder`: built from the three folder values)."""
    if name == FOLDER:
        return folder_dataset(num_classes, image_size, val_size)
    return DATASETS[name]


@dataclass(frozen=True)
class DataSettings:
    """Where a dataset is read from and how: what the data layer needs besides the batch size."""

    dataset: DatasetInfo
    root: Path
    workers: int = 4
    eval_batch_size: int = 256
