"""The recipe shell scripts: the commands they run parse, give the paper models (docs/recipes.md), and
train + eval agree."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from args import parse_args
from tests.conftest import ROOT, TINY_MSDNET

STUB = """#!/usr/bin/env bash
if [ "$1 $2" = "-m boostnet.recipes" ]; then exec "$REAL_PYTHON" "$@"; fi
printf '%s\\t' "$(basename "$0")" "$@" >> "$COMMAND_LOG"
echo >> "$COMMAND_LOG"
"""

# script arguments -> (dataset, arch, exits, --use-valid, evalmode, run directory under runs/)
RECIPES = {
    ("msdnet_cifar100_anytime.sh",): (
        "cifar100",
        "msdnet_ge",
        10,
        False,
        "anytime",
        "msdnet_cifar100_anytime",
    ),
    ("msdnet_cifar100_budgeted.sh",): ("cifar100", "msdnet_ge", 6, True, "both", "msdnet_cifar100_budgeted"),
    ("ranet_cifar100_anytime.sh",): ("cifar100", "ranet", 8, False, "anytime", "ranet_cifar100_anytime"),
    ("ranet_cifar100_budgeted.sh", "2"): (
        "cifar100",
        "ranet",
        8,
        True,
        "both",
        "ranet_cifar100_budgeted_model2",
    ),
    ("msdnet_imagenet_anytime.sh",): (
        "imagenet",
        "msdnet_ge",
        5,
        False,
        "anytime",
        "msdnet_imagenet_anytime",
    ),
    ("msdnet_imagenet_budgeted.sh",): ("imagenet", "msdnet_ge", 5, True, "both", "msdnet_imagenet_budgeted"),
    ("ranet_imagenet_anytime.sh",): ("imagenet", "ranet", 8, False, "anytime", "ranet_imagenet_anytime"),
    ("ranet_imagenet_budgeted.sh", "32"): (
        "imagenet",
        "ranet",
        8,
        True,
        "both",
        "ranet_imagenet_budgeted_c32",
    ),
}


def stub_venv(path: Path) -> Path:
    """A fake virtual environment whose python and torchrun only record their arguments."""
    (path / "bin").mkdir(parents=True)
    for name in ("python", "torchrun"):
        (path / "bin" / name).write_text(STUB)
        (path / "bin" / name).chmod(0o755)
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()
    (path / ".requirements.sha").write_text(digest + "\n")
    return path


def recorded_commands(script_args: tuple[str, ...], tmp_path: Path) -> list[list[str]]:
    """Run a recipe script from another directory with the stub environment; its commands."""
    log = tmp_path / "commands.tsv"
    env = {
        **os.environ,
        "BOOSTNET_VENV": str(stub_venv(tmp_path / "venv")),
        "COMMAND_LOG": str(log),
        "REAL_PYTHON": sys.executable,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("RESULT_DIR", None)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / script_args[0]), *script_args[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [line.rstrip("\t").split("\t") for line in log.read_text().splitlines()]


@pytest.mark.parametrize("script_args", list(RECIPES), ids=lambda a: " ".join(a))
def test_recipe_trains_the_spec_model_then_evaluates_its_run(script_args, tmp_path):
    dataset, arch, exits, use_valid, evalmode, run_name = RECIPES[script_args]
    train, evaluate = recorded_commands(script_args, tmp_path)
    suffix = "imagenet" if dataset == "imagenet" else "cifar100"
    entry = f"train_{suffix}.py"
    assert train[0] == ("torchrun" if dataset == "imagenet" else "python") and entry in train
    flags = train[train.index(entry) + 1 :]
    job = parse_args(flags, dataset=dataset)
    assert (job.data.dataset.name, job.model.arch, job.model.num_exits, job.train.use_valid) == (
        dataset,
        arch,
        exits,
        use_valid,
    )
    assert job.run.result_dir == Path(f"runs/{run_name}")
    assert job.objective.name == "boost" and job.train.batch_size == 64
    flat_curve = ["--flat_curve"] if use_valid else []  # budgeted recipes, as the original evaluates
    assert evaluate == [
        "python",
        f"eval_{suffix}.py",
        "--evaluate-from",
        f"runs/{run_name}",
        "--evalmode",
        evalmode,
        *flat_curve,
    ]


def test_extra_flags_reach_training_and_a_bad_model_number_is_refused(tmp_path):
    train, _ = recorded_commands(("ranet_cifar100_budgeted.sh", "1", "--loss", "joint"), tmp_path)
    job = parse_args(train[2:])
    assert job.objective.name == "joint" and job.model.config.scale_list == (1, 2, 3)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ranet_cifar100_budgeted.sh"), "4"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "usage" in done.stderr


def test_budgeted_recipe_runs_on_digits_end_to_end(tmp_path):
    run = tmp_path / "run"
    tiny = [
        *TINY_MSDNET,
        "--dataset",
        "digits",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--epochs",
        "1",
        "--lr_milestones",
        "1",
        "--max-steps-per-epoch",
        "3",
        "--batch-size",
        "16",
    ]
    env = {**os.environ, "RESULT_DIR": str(run), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "msdnet_cifar100_budgeted.sh"), *tiny],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "model_best.pth").is_file() and (run / "split.json").is_file()
