"""How the images of each dataset of :mod:`boostnet.data.datasets` are read.

In-memory sets (CIFAR-100, Fashion-MNIST, digits) are loaded as uint8 tensors (N, 3, H, W) by
the loader :data:`LOADERS` names for them; every other dataset (ImageNet, `folder`) is read
image by image from `train/` and `val/` class folders (boostnet/data/loaders.py), each file by
:func:`open_image`, which scripts/predict.py also reads new images with. The facts of each
dataset (classes, sizes, normalisation) are in :mod:`boostnet.data.datasets`, which parsers read
without importing torch.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision import datasets as tv_datasets

from boostnet.data.datasets import DIGITS_TEST_FRACTION, DatasetInfo
from boostnet.data.embedded import DIGITS_FILE, FASHION_MNIST_MINI_FILE
from utils.cleanup import outermost_missing, removed_on_failure
from utils.errors import UserError

Arrays = tuple[Tensor, Tensor, Tensor, Tensor]  # train images, train labels, test images, labels
Loader = Callable[[Path], Arrays]
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I"}  # Pillow opens 16-bit PNG as I;16, 16-bit PGM as I


def open_image(path: Path, mode: str = "RGB") -> Image.Image:
    """The image file at `path` decoded and converted to `mode` ("RGB" or "L"). 16-bit grey levels
    are scaled to 8 bits (0..65535 -> 0..255), as every network here reads 8-bit images; Pillow's
    own conversion would clip everything above 255 to white."""
    with Image.open(path) as image:
        if image.mode in SIXTEEN_BIT_MODES:
            levels = np.clip(np.asarray(image, dtype=np.float64) * (255 / 65535), 0, 255)
            return Image.fromarray(np.rint(levels).astype(np.uint8), mode="L").convert(mode)
        return image.convert(mode)


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
            train, test = (
                tv_datasets.CIFAR100(str(root), train=split, download=not folder.exists())
                for split in (True, False)
            )
    except (OSError, tarfile.TarError) as error:
        raise UserError(
            f"--data-root: CIFAR-100 is not in {folder} and downloading it failed "
            f"({error}); put the extracted cifar-100-python folder there"
        ) from None
    except RuntimeError as error:
        raise UserError(
            f"--data-root: {folder} is incomplete or corrupted ({error}); "
            f"replace it with the extracted cifar-100-python folder"
        ) from None

    def arrays(data) -> tuple[Tensor, Tensor]:
        return (
            torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous(),
            torch.tensor(data.targets, dtype=torch.int64),
        )

    return (*arrays(train), *arrays(test))


def load_fashion_mnist(root: Path) -> Arrays:
    """Fashion-MNIST from `root/FashionMNIST/raw` (torchvision's layout), padded to 32x32 RGB;
    downloaded there if absent (a failed download leaves no folder behind)."""
    folder = root / "FashionMNIST" / "raw"
    download = not folder.is_dir()
    try:
        with removed_on_failure(outermost_missing(folder)):
            train, test = (
                tv_datasets.FashionMNIST(str(root), train=split, download=download) for split in (True, False)
            )
    except (OSError, RuntimeError) as error:
        cause = (str(error).strip() or type(error).__name__).splitlines()[-1]
        problem = (
            f"Fashion-MNIST is not in {folder} and downloading it failed ({cause})"
            if download
            else f"{folder} lacks Fashion-MNIST files or holds damaged ones"
        )
        raise UserError(
            f"--data-root: {problem}; put the set there with `bash "
            f"scripts/get_fashion_mnist.sh {root}`, which also works offline"
        ) from None
    return (
        pad_and_replicate(train.data, 32),
        train.targets.long(),
        pad_and_replicate(test.data, 32),
        test.targets.long(),
    )


def load_fashion_mnist_mini(root: Optional[Path] = None) -> Arrays:
    """The embedded class-balanced Fashion-MNIST subset (600 training and 100 test images per
    class, scripts/make_fashion_mnist_mini.py), padded to 32x32 RGB like the full set."""
    with np.load(FASHION_MNIST_MINI_FILE) as stored:
        return tuple(
            pad_and_replicate(torch.from_numpy(stored[f"{split}_images"]), 32)
            if kind == "images"
            else torch.from_numpy(stored[f"{split}_labels"]).long()
            for split in ("train", "test")
            for kind in ("images", "labels")
        )


DIGITS_MAX_VALUE = 16
DIGITS_TEST_SEED = 0


def load_digits(root: Optional[Path] = None) -> Arrays:
    """scikit-learn's 1,797 digits (8x8, committed as boostnet/data/digits.npz) upsampled to 32x32 RGB.

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
    return permutation[: round(DIGITS_TEST_FRACTION * count)].sort().values


LOADERS: dict[str, Loader] = {
    "cifar100": load_cifar100,
    "fashion_mnist": load_fashion_mnist,
    "fashion_mnist_mini": load_fashion_mnist_mini,
    "digits": load_digits,
}


def in_memory_loader(info: DatasetInfo) -> Optional[Loader]:
    """The loader of an in-memory dataset; None for one read from class folders."""
    return LOADERS.get(info.name)
