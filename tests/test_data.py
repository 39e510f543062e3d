"""Data splits, transforms and loaders; checkpoint files; one-line user errors."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from args import parse_args
from boostnet.data import datasets as facts
from boostnet.data import loaders as data
from boostnet.data import readers as registry
from utils.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    strip_wrapper_prefixes,
)
from utils.distributed import DistInfo
from utils.errors import UserError, run_cli

DIGITS_COUNT = 1797
CPU = torch.device("cpu")


def digits_job(*extra: str):
    return parse_args(["--dataset", "digits", "--workers", "0", *extra])


def splits_of(job, run_dir):
    """The datasets `job` trains on, with its validation split saved in `run_dir`."""
    return data.build_splits(job.data, job.train.use_valid, job.train.seed, run_dir)


def test_every_loader_is_a_known_dataset_and_folder_datasets_have_none():
    assert set(registry.LOADERS) < set(facts.DATASETS)
    assert registry.in_memory_loader(facts.DATASETS["imagenet"]) is None
    assert registry.in_memory_loader(facts.DATASETS["digits"]) is registry.load_digits


def test_digits_are_32x32_rgb_uint8_with_a_fixed_test_fifth():
    train_images, train_labels, test_images, test_labels = registry.load_digits()
    images, labels = torch.cat([train_images, test_images]), torch.cat([train_labels, test_labels])
    assert images.shape == (DIGITS_COUNT, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images[:, 0], images[:, 2]) and images.max() == 255
    assert set(labels.tolist()) == set(range(10))
    splits = splits_of(digits_job("--seed", "3"), None)
    assert len(splits.test) == 359 and len(splits.train) == DIGITS_COUNT - 359
    assert splits.val is None and splits.num_classes == 10
    test_indices = registry.digits_test_indices(DIGITS_COUNT)
    assert torch.equal(test_indices, registry.digits_test_indices(DIGITS_COUNT))


def test_validation_split_is_saved_disjoint_and_reused(tmp_path):
    splits = splits_of(digits_job("--use-valid", "--seed", "1"), tmp_path)
    saved = json.loads((tmp_path / "split.json").read_text())
    train, val = set(saved["train_indices"]), set(saved["val_indices"])
    assert saved["dataset"] == "digits" and saved["seed"] == 1
    assert not train & val and train | val == set(range(DIGITS_COUNT - 359))
    assert len(val) == len(splits.val) == round(0.1 * (DIGITS_COUNT - 359))
    assert list(splits.train.indices) == saved["train_indices"]
    again = splits_of(digits_job("--use-valid", "--seed", "2"), tmp_path)
    assert list(again.val.indices) == saved["val_indices"]


def test_saved_split_of_another_dataset_is_refused(tmp_path):
    splits_of(digits_job("--use-valid"), tmp_path)
    saved = json.loads((tmp_path / "split.json").read_text())
    (tmp_path / "split.json").write_text(json.dumps({**saved, "dataset": "cifar100"}))
    with pytest.raises(UserError, match="split.json was made for --dataset cifar100"):
        splits_of(digits_job("--use-valid"), tmp_path)


def test_validation_uses_test_time_transforms_and_training_augments():
    splits = splits_of(digits_job("--use-valid"), None)
    raw_image = splits.val.dataset.images[splits.val.indices[5]]
    expected = data.tensor_transforms(facts.DATASETS["digits"], train=False)(raw_image)
    assert torch.equal(splits.val[5][0], expected) and torch.equal(splits.val[5][0], expected)
    torch.manual_seed(0)
    assert any(not torch.equal(splits.train[i][0], splits.train[i][0]) for i in range(10))
    assert splits.train[0][0].dtype == torch.float32


def test_epoch_shuffling_depends_only_on_seed_and_epoch():
    job = digits_job("--batch-size", "8")
    dataset = splits_of(job, None).train

    def first_batch(epoch: int) -> torch.Tensor:
        loader = data.train_loader(
            dataset, job.train.batch_size, job.data.workers, job.train.seed, DistInfo(), CPU
        )
        data.start_epoch(loader, seed=0, epoch=epoch, rank=0)
        return next(iter(loader))[0]

    assert torch.equal(first_batch(4), first_batch(4))
    assert not torch.equal(first_batch(4), first_batch(5))


def test_shards_cover_every_sample_once_without_padding():
    shards = [list(data.ShardSampler(10, DistInfo(rank=r, world_size=3))) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))


def write_fake_cifar100(root: Path, count: int) -> None:
    """A cifar-100-python folder in torchvision's format holding `count` random images per split."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        entry = {
            "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            "fine_labels": rng.integers(0, 100, count).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [str(i) for i in range(100)]}))


def test_cifar100_loads_from_data_root_without_pil(tmp_path, monkeypatch):
    write_fake_cifar100(tmp_path, count=6)
    monkeypatch.setattr(datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    splits = splits_of(parse_args(["--data-root", str(tmp_path)]), None)
    image, label = splits.train[0]
    assert len(splits.train) == len(splits.test) == 6 and splits.num_classes == 100
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= int(label) < 100


def test_cifar100_absent_and_offline_names_where_to_put_it(tmp_path, monkeypatch):
    def offline(self):
        raise URLError("no network")

    monkeypatch.setattr(datasets.CIFAR100, "download", offline)
    with pytest.raises(UserError, match=f"{tmp_path / 'cifar-100-python'}.*put the extracted"):
        splits_of(parse_args(["--data-root", str(tmp_path)]), None)


def write_image_folder(path: Path) -> None:
    """Two classes of one 300x260 image each."""
    for label in ("a", "b"):
        (path / label).mkdir(parents=True)
        Image.new("RGB", (300, 260), (200, 10, 10)).save(path / label / "x.png")


def test_imagenet_folders_give_224_crops_and_a_missing_split_names_its_path(tmp_path):
    job = parse_args(["--dataset", "imagenet", "--data-root", str(tmp_path)])
    write_image_folder(tmp_path / "train")
    with pytest.raises(UserError, match=f"no ImageNet folder at {tmp_path / 'val'}"):
        splits_of(job, None)
    write_image_folder(tmp_path / "val")
    with pytest.raises(
        UserError,
        match="has 2 class folders but --dataset imagenet has 1000 "
        "classes; use --dataset folder --num-classes 2",
    ):
        splits_of(job, None)
    folder = parse_args(
        ["--dataset", "folder", "--num-classes", "2", "--image-size", "224", "--data-root", str(tmp_path)]
    )
    splits = splits_of(folder, None)
    assert splits.train[0][0].shape == splits.test[0][0].shape == (3, 224, 224)
    assert job.data.dataset.image_size == 224 and splits.num_classes == 2


def test_the_test_set_alone_reads_only_val_and_equals_the_splits_test_set(tmp_path):
    folder = parse_args(
        ["--dataset", "folder", "--num-classes", "2", "--image-size", "32", "--data-root", str(tmp_path)]
    )
    with pytest.raises(UserError, match=f"no folder at {tmp_path / 'val'}"):
        data.official_test_set(folder.data)
    write_image_folder(tmp_path / "val")
    alone = data.official_test_set(folder.data)  # no train/ folder exists: it is never scanned
    write_image_folder(tmp_path / "train")
    assert torch.equal(alone[1][0], splits_of(folder, None).test[1][0]) and alone[1][1] == 1
    digits = digits_job().data
    assert torch.equal(data.official_test_set(digits)[7][0], data.official_sets(digits)[2][7][0])


def test_checkpoint_round_trip_is_atomic_and_strips_wrapper_prefixes(tmp_path):
    weights = {"module._orig_mod.conv.weight": torch.ones(2), "module._orig_mod.fc.bias": torch.zeros(1)}
    save_checkpoint({"model": weights, "epoch": 3}, tmp_path / "model_latest.pth")
    assert [p.name for p in tmp_path.iterdir()] == ["model_latest.pth"]
    loaded = load_checkpoint(tmp_path / "model_latest.pth")
    assert set(loaded["model"]) == {"conv.weight", "fc.bias"} and loaded["epoch"] == 3
    assert set(strip_wrapper_prefixes({"module.x": 1, "y": 2})) == {"module.x", "y"}


def test_missing_or_corrupt_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "broken.pth").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="broken.pth is not a readable checkpoint"):
        load_checkpoint(tmp_path / "broken.pth")


def test_rng_state_survives_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    save_checkpoint({"model": {}, "rng": capture_rng_state()}, tmp_path / "c.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng_state(load_checkpoint(tmp_path / "c.pth")["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


def test_run_cli_reports_user_errors_on_one_line(capsys):
    def main(argv):
        raise UserError("--data-root: no folder\n at /x")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --data-root: no folder at /x\n"


def test_folder_datasets_read_16_bit_grey_as_its_8_bit_levels(tmp_path):
    """Training, evaluation and predict.py read files with one function (readers.open_image):
    16-bit grey (PNG: mode I;16, PGM: mode I) scales to 8 bits instead of clipping to white."""
    grey = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    for split in ("train", "val"):
        for label, suffix in (("a", ".png"), ("b", ".pgm")):
            (tmp_path / split / label).mkdir(parents=True)
            Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / split / label / f"x{suffix}")
    job = parse_args(
        ["--dataset", "folder", "--num-classes", "2", "--image-size", "32", "--data-root", str(tmp_path)]
    )
    test = splits_of(job, None).test
    Image.fromarray(grey).convert("RGB").save(tmp_path / "grey8.png")
    expected = test.transform(Image.open(tmp_path / "grey8.png").convert("RGB"))
    assert torch.equal(test[0][0], expected) and torch.equal(test[1][0], expected)
