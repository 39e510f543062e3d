"""Starts that fail on a wrong file or folder: one whole line naming the flag and the path, exit
status 2, and nothing left behind (no data folders, no run directory)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from args import parse_evaluation_args
from boostnet.evaluation import evaluator
from tests.conftest import ROOT, TINY_MSDNET
from train_cifar100 import main as train_main
from utils.checkpoint import unreadable
from utils.cleanup import outermost_missing, removed_on_failure
from utils.errors import run_cli

OFFLINE = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
}
TORCH_WEIGHTS_ONLY_FAILURE = (  # how PyTorch 2.6+ words a weights-only load that failed
    "Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` "
    "argument in `torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` "
    "set to `False` will likely succeed, but it can result in arbitrary code execution. Do it "
    "only if you got the file from a trusted source.\nPlease file an issue with the following so "
    "that we can make `weights_only=True` compatible with your use case: WeightsUnpickler error: "
    "\n\nUnsupported operand 104\n\nCheck the documentation of torch.load to learn more about "
    "types accepted by default with weights_only https://pytorch.org/docs/stable/generated/"
    "torch.load.html."
)


def one_line_error(main, argv, capsys) -> str:
    """The single stderr line of a command that must stop with exit status 2."""
    with pytest.raises(SystemExit) as stop:
        run_cli(main, argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("text", ["some notes about the run\n", "hello\nworld\n", ""])
def test_evaluating_a_text_file_says_it_is_no_pytorch_file(tmp_path, capsys, text):
    notes = tmp_path / "notes.txt"
    notes.write_text(text)
    message = one_line_error(
        lambda argv: evaluator.evaluate(parse_evaluation_args(argv, prog="eval_cifar100.py")),
        ["--evaluate-from", str(notes)],
        capsys,
    )
    assert message == (
        f"error: --evaluate-from: {notes} is not a readable checkpoint: it is not "
        f"a PyTorch file (torch.save writes a zip archive, or a pickle before "
        f"PyTorch 1.6)"
    )
    assert notes.read_text() == text


def test_a_damaged_checkpoint_gives_the_cause_without_torchs_weights_only_advice():
    message = unreadable(
        "--resume", Path("run/model_latest.pth"), pickle.UnpicklingError(TORCH_WEIGHTS_ONLY_FAILURE)
    )
    assert message == (
        "--resume: run/model_latest.pth is not a readable checkpoint (corrupt or "
        "truncated?): Unsupported operand 104"
    )
    assert unreadable("--resume", Path("x.pth"), EOFError()).endswith("truncated?): EOFError")


def test_fashion_mnist_at_a_wrong_root_is_one_whole_line_and_leaves_nothing(tmp_path):
    root = tmp_path / "wrong" / "path"
    command = [
        sys.executable,
        "train_cifar100.py",
        "--dataset",
        "fashion_mnist",
        "--data-root",
        str(root),
        "--device",
        "cpu",
        "--result_dir",
        str(tmp_path / "runs" / "run"),
        *TINY_MSDNET,
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **OFFLINE}
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: --data-root: Fashion-MNIST is not in {root / 'FashionMNIST' / 'raw'} and "
        f"downloading it failed ("
    )
    assert lines[0].endswith(
        f"; put the set there with `bash scripts/get_fashion_mnist.sh {root}`, which also works offline"
    )
    assert sorted(tmp_path.iterdir()) == []


def test_an_empty_fashion_mnist_folder_is_named_and_kept(tmp_path, capsys):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    message = one_line_error(
        train_main,
        [
            "--dataset",
            "fashion_mnist",
            "--data-root",
            str(tmp_path / "data"),
            "--device",
            "cpu",
            "--result_dir",
            str(tmp_path / "run"),
            *TINY_MSDNET,
        ],
        capsys,
    )
    assert message == (
        f"error: --data-root: {raw} lacks Fashion-MNIST files or holds damaged "
        f"ones; put the set there with `bash scripts/get_fashion_mnist.sh "
        f"{tmp_path / 'data'}`, which also works offline"
    )
    assert raw.is_dir() and not (tmp_path / "run").exists()


def test_a_missing_image_folder_is_named_once(tmp_path, capsys):
    message = one_line_error(
        train_main,
        [
            "--dataset",
            "folder",
            "--num-classes",
            "3",
            "--image-size",
            "32",
            "--data-root",
            str(tmp_path / "images"),
            "--device",
            "cpu",
            "--result_dir",
            str(tmp_path / "run"),
            *TINY_MSDNET,
        ],
        capsys,
    )
    assert message == (
        f"error: --data-root: no folder at {tmp_path / 'images' / 'train'} "
        f"(expected train/ and val/ with one sub-folder per class)"
    )
    assert sorted(tmp_path.iterdir()) == []


def test_a_failed_start_keeps_a_run_directory_that_existed(tmp_path, capsys):
    existing = tmp_path / "existing"
    existing.mkdir()
    one_line_error(
        train_main,
        [
            "--dataset",
            "folder",
            "--num-classes",
            "3",
            "--image-size",
            "32",
            "--data-root",
            str(tmp_path / "images"),
            "--device",
            "cpu",
            "--result_dir",
            str(existing),
            *TINY_MSDNET,
        ],
        capsys,
    )
    assert [path.name for path in existing.iterdir()] == [".lock"]


def test_only_created_folders_holding_no_spared_file_are_removed_on_failure(tmp_path):
    folder = tmp_path / "made" / "here"
    created = outermost_missing(folder)
    assert created == tmp_path / "made" and outermost_missing(tmp_path) is None
    keep = lambda path: path.name == "keep.txt"  # noqa: E731
    with pytest.raises(RuntimeError), removed_on_failure(created, spare=keep):
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("results")
        raise RuntimeError
    assert (folder / "keep.txt").read_text() == "results"
    with removed_on_failure(created):
        (folder / "keep.txt").unlink()  # success: nothing is removed
    assert folder.is_dir()
    with pytest.raises(RuntimeError), removed_on_failure(created, spare=keep):
        (folder / "partial.gz").write_bytes(b"half a download")
        raise RuntimeError
    assert sorted(tmp_path.iterdir()) == []
