"""Splits, transforms and loaders for every dataset of boostnet/data/datasets.py.

In-memory sets live as uint8 tensors and are augmented per sample with torchvision v2 tensor
transforms (no PIL); folder sets are read by torchvision's ImageFolder, each file by
:func:`boostnet.data.readers.open_image`. `--use-valid` holds
out a validation split of the official training set by a seeded permutation saved to
`split.json` in the run directory and reused when that file exists (resume, evaluation). The
validation split always uses the test-time transforms.
"""

from __future__ import annotations

import copy
import signal
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset
from torchvision import datasets
from torchvision.transforms import v2

from boostnet.data.datasets import DatasetInfo, DataSettings
from boostnet.data.readers import in_memory_loader, open_image
from utils.distributed import DistInfo, launch_info
from utils.errors import UserError
from utils.json_files import read_json, write_json
from utils.signals import STOP_SIGNALS

SPLIT_FILE = "split.json"
CIFAR_PADDING = 4
EVAL_RESIZE_RATIO = 256 / 224  # ImageNet-style evaluation: resize, then centre-crop

Transform = Callable[..., Tensor]


@dataclass
class DataSplits:
    """Training, validation (None without --use-valid) and test datasets of one run."""

    train: Dataset
    val: Optional[Dataset]
    test: Dataset
    num_classes: int


class InMemoryImages(Dataset):
    """uint8 images (N, 3, H, W) and integer labels; `transform` maps one image to a float tensor."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Transform):
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.images[index]), self.labels[index]


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ...: every sample on exactly one rank, no padding."""

    def __init__(self, length: int, info: DistInfo):
        self.indices = range(info.rank, length, info.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def tensor_transforms(info: DatasetInfo, train: bool) -> Transform:
    """Transforms of an in-memory uint8 image: random crop (pad 4) and flip when training."""
    augment = [v2.RandomCrop(info.image_size, padding=CIFAR_PADDING)] + (
        [v2.RandomHorizontalFlip()] if info.flip else []
    )
    return v2.Compose(
        (augment if train else [])
        + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]
    )


def folder_transforms(info: DatasetInfo, train: bool) -> Transform:
    """Transforms of a PIL image from a class folder.

    ImageNet-style sizes: random-resized crop + flip for training, resize to 256/224 of the
    size + centre crop for evaluation. Small images: resize, then CIFAR-style crop and flip.
    """
    size = info.image_size
    if info.imagenet_style:
        geometry = (
            [v2.RandomResizedCrop(size), v2.RandomHorizontalFlip()]
            if train
            else [v2.Resize(round(size * EVAL_RESIZE_RATIO)), v2.CenterCrop(size)]
        )
    else:
        geometry = [v2.Resize((size, size))] + (
            [v2.RandomCrop(size, padding=size // 8), v2.RandomHorizontalFlip()] if train else []
        )
    return v2.Compose(
        geometry + [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]
    )


def image_folder(path: Path, info: DatasetInfo, train: bool) -> datasets.ImageFolder:
    """One split stored as one sub-folder per class, checked to have the dataset's classes."""
    try:
        folder = datasets.ImageFolder(
            str(path),
            transform=folder_transforms(info, train),
            loader=partial(open_image, mode="RGB" if info.channels == 3 else "L"),
        )
    except FileNotFoundError as error:
        raise UserError(f"--data-root: {path}: {error}") from None
    if len(folder.classes) != info.num_classes:
        hint = (
            "give --num-classes"
            if info.name == "folder"
            else f"use --dataset folder --num-classes {len(folder.classes)}"
        )
        raise UserError(
            f"--data-root: {path} has {len(folder.classes)} class folders but "
            f"--dataset {info.name} has {info.num_classes} classes; {hint}"
        )
    return folder


def split_folder(data: DataSettings, split: str) -> Path:
    """`split`'s folder under --data-root, one line naming it when it is missing."""
    path = data.root / split
    if not path.is_dir():
        # "no ImageNet folder", but "no folder" for --dataset folder (its label is "image folder")
        label = data.dataset.label
        noun = "folder" if label.endswith("folder") else f"{label} folder"
        raise UserError(
            f"--data-root: no {noun} at {path} (expected train/ and val/ with one sub-folder per class)"
        )
    return path


def official_sets(data: DataSettings) -> tuple[Dataset, Dataset, Dataset]:
    """(training set with train transforms, same set with test transforms, test set)."""
    info = data.dataset
    load = in_memory_loader(info)
    if load is None:
        train_path, test_path = split_folder(data, "train"), split_folder(data, "val")  # both, before a scan
        train = image_folder(train_path, info, train=True)
        train_eval = copy.copy(train)
        train_eval.transform = folder_transforms(info, train=False)
        return train, train_eval, image_folder(test_path, info, train=False)
    train_images, train_labels, test_images, test_labels = load(data.root)
    evaluate = tensor_transforms(info, train=False)
    return (
        InMemoryImages(train_images, train_labels, tensor_transforms(info, train=True)),
        InMemoryImages(train_images, train_labels, evaluate),
        InMemoryImages(test_images, test_labels, evaluate),
    )


def official_test_set(data: DataSettings) -> Dataset:
    """The test set alone, as evaluation reads it: deployment checks need no scan of a folder
    dataset's train/ (1.28M files on ImageNet) and no training transforms."""
    info = data.dataset
    load = in_memory_loader(info)
    if load is None:
        return image_folder(split_folder(data, "val"), info, train=False)
    _, _, test_images, test_labels = load(data.root)
    return InMemoryImages(test_images, test_labels, tensor_transforms(info, train=False))


def make_split(dataset: str, seed: int, train_count: int, held_out: int) -> dict:
    """A seeded permutation of the official training set cut into validation and training parts."""
    if not 0 < held_out < train_count:
        raise UserError(
            f"--use-valid: the {dataset} training set has {train_count} images, "
            f"too few to hold out {held_out}"
        )
    permutation = torch.randperm(train_count, generator=torch.Generator().manual_seed(seed))
    return {
        "dataset": dataset,
        "seed": seed,
        "val_indices": permutation[-held_out:].tolist(),
        "train_indices": permutation[:-held_out].tolist(),
    }


def read_split(path: Path, dataset: str, train_count: int) -> dict:
    """A saved split, checked to belong to `dataset` and to hold two disjoint sets of indices."""
    try:
        split = read_json(path)
        train, val = set(split["train_indices"]), set(split["val_indices"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"--use-valid: cannot read the saved split {path} ({error}); "
            f"delete it only if no model was trained with it"
        ) from None
    if split.get("dataset") != dataset:
        raise UserError(f"--use-valid: {path} was made for --dataset {split.get('dataset')}, not {dataset}")
    if train & val or not train | val <= set(range(train_count)):
        raise UserError(
            f"--use-valid: {path} does not split a {train_count}-image training set into disjoint parts"
        )
    return split


def load_or_create_split(run_dir: Optional[Path], info: DatasetInfo, seed: int, train_count: int) -> dict:
    """Reuse `run_dir/split.json` if present, otherwise make it (saved by the main process)."""
    path = Path(run_dir) / SPLIT_FILE if run_dir is not None else None
    if path is not None and path.exists():
        return read_split(path, info.name, train_count)
    split = make_split(info.name, seed, train_count, info.held_out(train_count))
    if path is not None and launch_info().is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, split, indent=None)
    return split


def build_splits(data: DataSettings, use_valid: bool, seed: int, run_dir: Optional[Path]) -> DataSplits:
    """The datasets of a run: train (minus the validation split of `seed` with `use_valid`,
    saved in `run_dir`), val, test."""
    train, train_eval, test = official_sets(data)
    info = data.dataset
    if not use_valid:
        return DataSplits(train=train, val=None, test=test, num_classes=info.num_classes)
    split = load_or_create_split(run_dir, info, seed, len(train))
    return DataSplits(
        train=Subset(train, split["train_indices"]),
        val=Subset(train_eval, split["val_indices"]),
        test=test,
        num_classes=info.num_classes,
    )


def train_loader(
    dataset: Dataset, batch_size: int, workers: int, seed: int, info: DistInfo, device: torch.device
) -> DataLoader:
    """Shuffled training batches of this rank's shard; call :func:`start_epoch` before each epoch.

    Each rank sees a disjoint shard (the few samples that do not divide evenly are dropped, so
    no sample is counted twice); shuffling depends only on (seed, epoch).
    """
    sampler = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed, drop_last=True
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
        worker_init_fn=leave_stop_signals_to_main,
    )


def remaining_batches(loader: DataLoader, done: int) -> DataLoader:
    """The current epoch's batches after the first `done` (call after :func:`start_epoch`):
    the same samples in the same order, the skipped ones never loaded."""
    order = list(loader.sampler)[done * loader.batch_size :]
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=order,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        generator=loader.generator,
        worker_init_fn=loader.worker_init_fn,
    )


def eval_loader(
    dataset: Dataset, batch_size: int, workers: int, info: DistInfo, device: torch.device
) -> DataLoader:
    """Batches of this rank's shard in order, without the padding DistributedSampler adds."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), info),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=leave_stop_signals_to_main,
    )


def leave_stop_signals_to_main(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C, SIGTERM and SIGUSR1: the main process finishes its
    step and saves first, and its workers end with it."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed 63-bit seed for one (run seed, epoch, rank)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(2, np.uint64)[0] >> 1)


def start_epoch(loader: DataLoader, seed: int, epoch: int, rank: int) -> None:
    """Make the epoch's shuffling and augmentation a function of (seed, epoch, rank) only.

    The sampler's permutation follows (seed, epoch); worker processes are seeded from the
    loader's generator and in-process transforms from torch's global generator, both reset
    here, so a resumed run draws exactly what an uninterrupted one would.
    """
    loader.sampler.set_epoch(epoch)
    derived = epoch_seed(seed, epoch, rank)
    loader.generator.manual_seed(derived)
    torch.manual_seed(derived)
