"""Regenerate `boostnet/data/fashion_mnist_mini.npz`, the class-balanced Fashion-MNIST subset the demo uses.

The first 600 training and the first 100 test images of every class, in the files' order, from
the full set in DIR/FashionMNIST/raw (get it with `bash scripts/get_fashion_mnist.sh DIR`).
Fashion-MNIST is (c) Zalando SE, MIT licence.

    python scripts/make_fashion_mnist_mini.py data
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    from torchvision.datasets import FashionMNIST

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also run as a file

from boostnet.data.embedded import FASHION_MNIST_MINI_FILE as MINI_FILE  # noqa: E402
from utils.cli import OneLineParser  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402

TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100


def first_per_class(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of the first `count` images of every class, in file order."""
    picked = [np.flatnonzero(labels == c)[:count] for c in range(int(labels.max()) + 1)]
    return np.sort(np.concatenate(picked))


def read_split(root: Path, train: bool) -> FashionMNIST:
    """One split of the full set in ROOT/FashionMNIST/raw (never downloaded here)."""
    from torchvision.datasets import FashionMNIST  # only once the flags are checked

    try:
        return FashionMNIST(str(root), train=train, download=False)
    except RuntimeError:
        raise UserError(
            f"DIR: Fashion-MNIST is not in {root / 'FashionMNIST' / 'raw'}; get it "
            f"with `bash scripts/get_fashion_mnist.sh {root}`"
        ) from None


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Write the subset of the full set in DIR to MINI_FILE."""
    parser = OneLineParser(
        prog="python scripts/make_fashion_mnist_mini.py",
        description=__doc__.splitlines()[0],
        epilog=f"Writes {MINI_FILE}.",
    )
    parser.add_argument(
        "root",
        metavar="DIR",
        type=Path,
        nargs="?",
        default=Path("data"),
        help="folder holding the full set in FashionMNIST/raw",
    )
    root = parser.parse_args(argv).root
    arrays = {}
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        data = read_split(root, train=split == "train")
        index = first_per_class(data.targets.numpy(), count)
        arrays[f"{split}_images"] = data.data.numpy()[index]
        arrays[f"{split}_labels"] = data.targets.numpy()[index].astype(np.uint8)
        arrays[f"{split}_source_indices"] = index.astype(np.int32)
    np.savez_compressed(MINI_FILE, **arrays)
    print(f"wrote {MINI_FILE} ({MINI_FILE.stat().st_size} bytes)")


if __name__ == "__main__":
    run_cli(main)
