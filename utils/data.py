"""Datasets, splits and loaders: CIFAR-100, ImageNet and the embedded offline `digits` set (SPEC §7).

CIFAR-100 and digits live in memory as uint8 tensors and are augmented per sample with
torchvision v2 tensor transforms (no PIL). `--use-valid` holds out a validation split of the
official training set by a seeded permutation saved to `split.json` in the run directory and
reused when that file exists (resume, evaluation). The validation split always uses the
test-time transforms.

Digits: scikit-learn's 1,797 handwritten digits (8x8, values 0..16, committed as
`utils/digits.npz`), upsampled bilinearly to 32x32 and replicated to 3 channels. They are
normalised with the CIFAR-100 statistics so every CIFAR recipe runs on them unchanged, and
trained without the horizontal flip: digits are not mirror symmetric (a flipped 2 or 7 is not
a digit).
"""
from __future__ import annotations

import argparse
import copy
import json
import signal
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset
from torchvision import datasets
from torchvision.transforms import v2

from models import NUM_CLASSES
from utils.checkpoint import write_text_atomically
from utils.distributed import DistInfo, launch_info
from utils.errors import UserError
from utils.recovery import STOP_SIGNALS

CIFAR_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VALIDATION_SIZE = {"cifar100": 5000, "imagenet": 50000}
DIGITS_VALIDATION_FRACTION = 0.1
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 0
DIGITS_FILE = Path(__file__).with_name("digits.npz")
DIGITS_MAX_VALUE = 16
SPLIT_FILE = "split.json"

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


def tensor_transforms(train: bool, flip: bool) -> Transform:
    """CIFAR transforms of a uint8 image tensor: random crop 32 pad 4 (+ flip) when training."""
    augment = [v2.RandomCrop(32, padding=4)] + ([v2.RandomHorizontalFlip()] if flip else [])
    return v2.Compose((augment if train else []) + [v2.ToDtype(torch.float32, scale=True),
                                                    v2.Normalize(CIFAR_MEAN, CIFAR_STD)])


def imagenet_transforms(train: bool) -> Transform:
    """Random-resized crop 224 + flip for training; resize 256 + centre crop 224 for evaluation."""
    geometry = ([v2.RandomResizedCrop(224), v2.RandomHorizontalFlip()] if train
                else [v2.Resize(256), v2.CenterCrop(224)])
    return v2.Compose(geometry + [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                                  v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def load_cifar100(root: Path, train: bool) -> tuple[Tensor, Tensor]:
    """CIFAR-100 uint8 images (N, 3, 32, 32) and labels from `root`, downloaded there if absent."""
    folder = root / "cifar-100-python"
    download = not folder.exists()
    try:
        data = datasets.CIFAR100(str(root), train=train, download=download)
    except (OSError, tarfile.TarError) as error:
        raise UserError(f"--data-root: CIFAR-100 is not in {folder} and downloading it failed "
                        f"({error}); put the extracted cifar-100-python folder there") from None
    except RuntimeError as error:
        raise UserError(f"--data-root: {folder} is incomplete or corrupted ({error}); "
                        f"replace it with the extracted cifar-100-python folder") from None
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(data.targets, dtype=torch.int64)


def load_digits() -> tuple[Tensor, Tensor]:
    """All 1,797 digits as (N, 3, 32, 32) uint8 images (bilinear upsampling of 8x8) and labels."""
    with np.load(DIGITS_FILE) as stored:
        small = torch.from_numpy(stored["images"]).float() * (255 / DIGITS_MAX_VALUE)
        labels = torch.from_numpy(stored["labels"]).long()
    large = F.interpolate(small.unsqueeze(1), size=(32, 32), mode="bilinear", align_corners=False)
    images = large.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return images, labels


def digits_test_indices(count: int) -> Tensor:
    """The fixed 20% of the digits that form their test set (same for every run and seed)."""
    permutation = torch.randperm(count, generator=torch.Generator().manual_seed(DIGITS_TEST_SEED))
    return permutation[:round(DIGITS_TEST_FRACTION * count)].sort().values


def split_digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training images and labels (the digits outside the fixed test fifth), then test ones."""
    images, labels = load_digits()
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[digits_test_indices(len(labels))] = True
    return images[~is_test], labels[~is_test], images[is_test], labels[is_test]


def image_folder(path: Path, transform: Transform) -> datasets.ImageFolder:
    """An ImageNet split stored as one sub-folder per class; a missing folder names the path."""
    if not path.is_dir():
        raise UserError(f"--data-root: no ImageNet folder at {path} "
                        f"(expected train/ and val/ with one sub-folder per class)")
    try:
        return datasets.ImageFolder(str(path), transform=transform)
    except FileNotFoundError as error:
        raise UserError(f"--data-root: {path}: {error}") from None


def official_sets(args: argparse.Namespace) -> tuple[Dataset, Dataset, Dataset]:
    """(training set with train transforms, same set with test transforms, test set)."""
    root = Path(args.data_root)
    if args.dataset == "imagenet":
        train = image_folder(root / "train", imagenet_transforms(train=True))
        train_eval = copy.copy(train)
        train_eval.transform = imagenet_transforms(train=False)
        return train, train_eval, image_folder(root / "val", imagenet_transforms(train=False))
    if args.dataset == "cifar100":
        train_images, train_labels = load_cifar100(root, train=True)
        test_images, test_labels = load_cifar100(root, train=False)
    else:
        train_images, train_labels, test_images, test_labels = split_digits()
    flip = args.dataset == "cifar100"  # digits are not mirror symmetric
    evaluate = tensor_transforms(train=False, flip=flip)
    return (InMemoryImages(train_images, train_labels, tensor_transforms(train=True, flip=flip)),
            InMemoryImages(train_images, train_labels, evaluate),
            InMemoryImages(test_images, test_labels, evaluate))


def validation_size(dataset: str, train_count: int) -> int:
    """Images held out by --use-valid: 5,000 (CIFAR), 50,000 (ImageNet), 10% (digits)."""
    return VALIDATION_SIZE.get(dataset, round(DIGITS_VALIDATION_FRACTION * train_count))


def make_split(dataset: str, seed: int, train_count: int) -> dict:
    """A seeded permutation of the official training set cut into validation and training parts."""
    held_out = validation_size(dataset, train_count)
    if not 0 < held_out < train_count:
        raise UserError(f"--use-valid: the {dataset} training set has {train_count} images, "
                        f"too few to hold out {held_out}")
    permutation = torch.randperm(train_count, generator=torch.Generator().manual_seed(seed))
    return {"dataset": dataset, "seed": seed, "val_indices": permutation[-held_out:].tolist(),
            "train_indices": permutation[:-held_out].tolist()}


def read_split(path: Path, dataset: str, train_count: int) -> dict:
    """A saved split, checked to belong to `dataset` and to hold two disjoint sets of indices."""
    try:
        split = json.loads(path.read_text())
        train, val = set(split["train_indices"]), set(split["val_indices"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"--use-valid: cannot read the saved split {path} ({error}); "
                        f"delete it only if no model was trained with it") from None
    if split.get("dataset") != dataset:
        raise UserError(f"--use-valid: {path} was made for --dataset {split.get('dataset')}, "
                        f"not {dataset}")
    if train & val or not train | val <= set(range(train_count)):
        raise UserError(f"--use-valid: {path} does not split a {train_count}-image training set "
                        f"into disjoint parts")
    return split


def load_or_create_split(run_dir: Optional[Path], dataset: str, seed: int,
                         train_count: int) -> dict:
    """Reuse `run_dir/split.json` if present, otherwise make it (saved by the main process)."""
    path = Path(run_dir) / SPLIT_FILE if run_dir is not None else None
    if path is not None and path.exists():
        return read_split(path, dataset, train_count)
    split = make_split(dataset, seed, train_count)
    if path is not None and launch_info().is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(split))
    return split


def build_splits(args: argparse.Namespace, run_dir: Optional[Path]) -> DataSplits:
    """The datasets of a run: train (minus the validation split with --use-valid), val, test."""
    train, train_eval, test = official_sets(args)
    num_classes = NUM_CLASSES[args.dataset]
    if not args.use_valid:
        return DataSplits(train=train, val=None, test=test, num_classes=num_classes)
    split = load_or_create_split(run_dir, args.dataset, args.seed, len(train))
    return DataSplits(train=Subset(train, split["train_indices"]),
                      val=Subset(train_eval, split["val_indices"]), test=test,
                      num_classes=num_classes)


def train_loader(dataset: Dataset, args: argparse.Namespace, info: DistInfo,
                 device: torch.device) -> DataLoader:
    """Shuffled training batches of this rank's shard; call :func:`start_epoch` before each epoch.

    Each rank sees a disjoint shard (the few samples that do not divide evenly are dropped, so
    no sample is counted twice); shuffling depends only on (seed, epoch).
    """
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=args.seed, drop_last=True)
    return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                      num_workers=args.workers, pin_memory=device.type == "cuda",
                      generator=torch.Generator(), worker_init_fn=leave_stop_signals_to_main)


def remaining_batches(loader: DataLoader, done: int) -> DataLoader:
    """The current epoch's batches after the first `done` (call after :func:`start_epoch`):
    the same samples in the same order, the skipped ones never loaded."""
    order = list(loader.sampler)[done * loader.batch_size:]
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=order,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      generator=loader.generator, worker_init_fn=loader.worker_init_fn)


def eval_loader(dataset: Dataset, batch_size: int, workers: int, info: DistInfo,
                device: torch.device) -> DataLoader:
    """Batches of this rank's shard in order, without the padding DistributedSampler adds."""
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), info),
                      num_workers=workers, pin_memory=device.type == "cuda",
                      worker_init_fn=leave_stop_signals_to_main)


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
