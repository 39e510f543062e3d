"""scripts/benchmark.py runs end to end (as `--quick` on one model) and writes complete JSON."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from utils.json_files import read_json
from utils.machine import cpu_name

QUICK_FLAGS = ["--quick", "--models", "msdnet_cifar100", "--steps", "2", "--warmup", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, str]:
    """The JSON and the printed table of one quick benchmark with the exit-overhead timing."""
    out = tmp_path_factory.mktemp("benchmark") / "bench.json"
    proc = subprocess.run(
        [sys.executable, "scripts/benchmark.py", *QUICK_FLAGS, "--out", str(out), "--exit-overhead"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return read_json(out), proc.stdout  # read_json is strict: no NaN / Infinity tokens


def test_quick_benchmark_times_training_and_evaluation_eager_and_compiled(quick):
    result, printed = quick
    assert result["quick"] and result["jobs"] == 2 and result["compile_backend"] == "aot_eager"
    assert result["device"] == cpu_name()
    assert [(row["model"], row["mode"]) for row in result["results"]] == [
        ("msdnet_cifar100", "eager"),
        ("msdnet_cifar100", "compile"),
    ]
    for row in result["results"]:
        for part in ("train", "eval"):
            assert row[part]["ms"] > 0 and row[part]["images_per_s"] > 0
        assert row["projected_recipe_hours"] > 0
    assert result["results"][0]["train_speedup"] == 1.0
    assert result["gpu_data"]["ms_per_batch"] > 0
    assert "| msdnet_cifar100 | compile |" in printed


def test_quick_benchmark_times_early_exit_at_batch_1_and_256(quick):
    result, _ = quick
    assert [row["batch"] for row in result["early_exit"]] == [1, 256]
    for row in result["early_exit"]:
        assert sum(row["exit_counts"]) == row["images"] and row["promised_speedup"] > 1


def test_quick_benchmark_times_the_exits_training_overhead_on_a_timm_resnet(quick):
    result, printed = quick
    overhead = result["exit_overhead"]  # the timm ResNet-18 with four exits against the plain model
    assert (overhead["model"], overhead["exits"], overhead["batch"], overhead["image_size"]) == (
        "timm:resnet18",
        4,
        64,
        32,
    )
    assert overhead["with_exits_ms"] > 0 and overhead["plain_ms"] > 0
    assert overhead["overhead_percent"] == pytest.approx(
        100 * (overhead["with_exits_ms"] / overhead["plain_ms"] - 1)
    )
    assert "exits' training overhead" in printed


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--jobs", "0"], "--jobs"),
        pytest.param(
            ["--device", "cuda"],
            "--device cuda",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's error"),
        ),
    ],
)
def test_bad_benchmark_flags_are_one_line_errors(repo_root, tmp_path, flags, expected):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--quick", *flags, "--out", str(out)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr
