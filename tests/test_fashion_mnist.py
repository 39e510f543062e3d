"""Fashion-MNIST, the project's real benchmark: the reader on the real files, a short run that learns,
the validation split, the offline set-up's content check, and the embedded subset the demo trains on.

The full set comes from `scripts/get_fashion_mnist.sh` (run by scripts/run_tests.sh) into
BOOSTNET_FASHION_MNIST_ROOT (default: the repository's data/). Without it the tests that need it
are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from args import parse_args
from boostnet.data.datasets import DATASETS
from boostnet.data.loaders import build_splits
from boostnet.data.readers import load_fashion_mnist, load_fashion_mnist_mini
from tests.conftest import ROOT, TINY_MSDNET

FASHION_ROOT = Path(os.environ.get("BOOSTNET_FASHION_MNIST_ROOT", ROOT / "data"))
RAW = FASHION_ROOT / "FashionMNIST" / "raw"
FIRST_TRAIN_LABELS = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
FIRST_TEST_LABELS = [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
CLASSES = 10


def require_full_set() -> None:
    if not (RAW / "t10k-labels-idx1-ubyte").is_file():
        message = f"Fashion-MNIST is not in {RAW}; run scripts/get_fashion_mnist.sh {FASHION_ROOT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def full_set():
    require_full_set()
    return load_fashion_mnist(FASHION_ROOT)


def test_reader_gives_the_full_set_padded_to_32x32_rgb(full_set):
    train_images, train_labels, test_images, test_labels = full_set
    assert train_images.shape == (60_000, 3, 32, 32) and test_images.shape == (10_000, 3, 32, 32)
    assert train_images.dtype == torch.uint8
    assert train_labels[:10].tolist() == FIRST_TRAIN_LABELS
    assert test_labels[:10].tolist() == FIRST_TEST_LABELS
    assert torch.bincount(train_labels).tolist() == [6000] * CLASSES
    assert torch.bincount(test_labels).tolist() == [1000] * CLASSES
    assert torch.equal(train_images[:, 0], train_images[:, 2])  # grayscale replicated
    assert train_images[:, :, :2].max() == 0 and train_images[:, :, -2:].max() == 0  # the padding


def test_use_valid_holds_out_5000_training_images_by_a_saved_split(full_set, tmp_path):
    job = parse_args(
        [
            "--dataset",
            "fashion_mnist",
            "--data-root",
            str(FASHION_ROOT),
            "--use-valid",
            "--seed",
            "4",
            "--workers",
            "0",
        ]
    )
    splits = build_splits(job.data, job.train.use_valid, job.train.seed, tmp_path)
    saved = json.loads((tmp_path / "split.json").read_text())
    assert len(splits.val) == len(saved["val_indices"]) == DATASETS["fashion_mnist"].val_size == 5000
    assert len(splits.train) == 55_000 and len(splits.test) == 10_000
    assert not set(saved["val_indices"]) & set(saved["train_indices"])
    assert saved["dataset"] == "fashion_mnist" and saved["seed"] == 4


def test_a_short_epoch_learns_well_above_chance(full_set, tmp_path):
    run = tmp_path / "run"
    flags = [
        *TINY_MSDNET,
        "--dataset",
        "fashion_mnist",
        "--data-root",
        str(FASHION_ROOT),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "80",
        "--batch-size",
        "64",
        "--lr",
        "0.05",
        "--result_dir",
        str(run),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "train_cifar100.py", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    done = subprocess.run(
        [sys.executable, "eval_cifar100.py", "--evaluate-from", str(run), "--evalmode", "anytime"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    exits = json.loads((run / "anytime.json").read_text())["exits"]
    assert json.loads((run / "anytime.json").read_text())["test_samples"] == 10_000
    assert exits[-1]["top1"] > 50  # chance is 10%


def test_offline_set_up_replaces_a_file_whose_content_is_wrong(full_set, tmp_path):
    copy = tmp_path / "FashionMNIST" / "raw"
    shutil.copytree(RAW, copy)
    (copy / "t10k-labels-idx1-ubyte").write_bytes(b"not the labels")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "get_fashion_mnist.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert (copy / "t10k-labels-idx1-ubyte").read_bytes() == (RAW / "t10k-labels-idx1-ubyte").read_bytes()
    again = subprocess.run(
        ["bash", str(ROOT / "scripts" / "get_fashion_mnist.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "already holds the checked files" in again.stderr


def test_missing_files_offline_name_the_set_up_script(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "torchvision.datasets.utils.download_url",
        lambda *a, **k: (_ for _ in ()).throw(OSError("network is unreachable")),
    )
    done = subprocess.run(
        [
            sys.executable,
            "train_cifar100.py",
            "--dataset",
            "fashion_mnist",
            "--data-root",
            str(tmp_path / "none"),
            "--device",
            "cpu",
            "--result_dir",
            str(tmp_path / "run"),
            *TINY_MSDNET,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"},
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "scripts/get_fashion_mnist.sh" in done.stderr


def test_embedded_subset_is_class_balanced_and_matches_the_full_set(full_set):
    train_images, train_labels, test_images, test_labels = load_fashion_mnist_mini()
    assert torch.bincount(train_labels).tolist() == [600] * CLASSES
    assert torch.bincount(test_labels).tolist() == [100] * CLASSES
    full_train, full_train_labels, full_test, _ = full_set
    first_shirts = torch.nonzero(full_train_labels == 6).squeeze(1)[:600]
    assert torch.equal(train_images[train_labels == 6], full_train[first_shirts])
    assert torch.equal(test_images[:3], full_test[:3])  # classes 9, 2, 1 each start the test set
