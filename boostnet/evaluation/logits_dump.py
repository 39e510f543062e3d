"""`--save-logits FILE.npz`: every exit's evaluation-time outputs in a plain NumPy archive.

The archive is for other early-exit tools (threshold fitting, calibration): plain arrays and
unicode strings only, so ``numpy.load`` reads it without pickle. The layout is documented in
docs/evaluation-outputs.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset, Subset

from utils.checkpoint import write_atomically
from utils.errors import UserError

FLAG = "--save-logits"
SUFFIX = ".npz"
TEST_SPLIT = "test"
VALIDATION_PREFIX = "val_"


@dataclass
class SplitDump:
    """One split's evaluation-time outputs (exits x samples x classes), labels and source indices."""

    outputs: Tensor
    labels: Tensor
    indices: np.ndarray


def check_dump_path(path: Path) -> None:
    """Fail before any work unless `path` is a .npz file that can be written."""
    if path.suffix != SUFFIX:
        raise UserError(f"{FLAG}: {path} must end in {SUFFIX}")
    if path.is_dir():
        raise UserError(f"{FLAG}: {path} is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"{FLAG}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{FLAG}: the folder {parent} is not writable")


def source_indices(dataset: Dataset) -> np.ndarray:
    """Each sample's index in the dataset it was drawn from: a Subset's indices, else 0..N-1."""
    if isinstance(dataset, Subset):
        return np.asarray(dataset.indices, dtype=np.int64)
    return np.arange(len(dataset), dtype=np.int64)


def split_arrays(split: SplitDump, prefix: str) -> dict[str, np.ndarray]:
    """The arrays of one split, named `prefix` + logits / labels / indices."""
    return {
        f"{prefix}logits": split.outputs.float().numpy(),
        f"{prefix}labels": split.labels.numpy().astype(np.int64),
        f"{prefix}indices": split.indices.astype(np.int64),
    }


def write_logits_dump(
    path: Path, test: SplitDump, val: Optional[SplitDump], costs: Sequence[int], metadata: dict[str, str]
) -> None:
    """Write the test split (plain names) and, when given, the validation split (val_ names)."""
    arrays = {
        **split_arrays(test, ""),
        "split": np.array(TEST_SPLIT),
        "costs": np.asarray(costs, dtype=np.int64),
        "num_classes": np.array(test.outputs.shape[2], dtype=np.int64),
        **{key: np.array(str(value)) for key, value in metadata.items()},
    }
    if val is not None:
        arrays.update(split_arrays(val, VALIDATION_PREFIX))

    def save(temporary: str) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    write_atomically(path, save)
