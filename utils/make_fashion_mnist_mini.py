"""Regenerate `utils/fashion_mnist_mini.npz`, the class-balanced Fashion-MNIST subset the demo uses.

The first 600 training and the first 100 test images of every class, in the files' order, from
the full set in DIR/FashionMNIST/raw (get it with `bash scripts/get_fashion_mnist.sh DIR`).
Fashion-MNIST is (c) Zalando SE, MIT licence.

    python -m utils.make_fashion_mnist_mini data
"""
import sys
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import FashionMNIST

MINI_FILE = Path(__file__).with_name("fashion_mnist_mini.npz")
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100


def first_per_class(images: torch.Tensor, labels: torch.Tensor, count: int) -> np.ndarray:
    """Indices of the first `count` images of every class, in file order."""
    picked = [np.flatnonzero(labels.numpy() == c)[:count] for c in range(int(labels.max()) + 1)]
    return np.sort(np.concatenate(picked))


def main(root: str) -> None:
    arrays = {}
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        data = FashionMNIST(root, train=split == "train", download=False)
        index = first_per_class(data.data, data.targets, count)
        arrays[f"{split}_images"] = data.data.numpy()[index]
        arrays[f"{split}_labels"] = data.targets.numpy()[index].astype(np.uint8)
        arrays[f"{split}_source_indices"] = index.astype(np.int32)
    np.savez_compressed(MINI_FILE, **arrays)
    print(f"wrote {MINI_FILE} ({MINI_FILE.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data")
