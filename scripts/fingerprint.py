"""Fingerprint what training and evaluation compute, so a restructuring can show it changed nothing.

Through the public commands only (train_cifar100.py, eval_cifar100.py), on the CPU with one
thread, three tiny runs on the embedded `digits` set are trained 2 epochs, resumed to 3, and
evaluated anytime, in budgeted batch (all 39 levels) and at a `--budget`:

- boost with non-constant factors (r 0.3 -> 0.9) and `--loss_equal`,
- joint,
- RANet (boost).

The fingerprint keeps a SHA-256 of every weight and objective buffer of the final checkpoint,
the anytime rows, the budgeted levels and the budget's thresholds; file digests, paths and
times are left out (they change with any change of the checkpoint's metadata).

    python scripts/fingerprint.py --out fingerprint.json            # record
    python scripts/fingerprint.py --check fingerprint.json          # compare, exit 1 if different
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Copies of tests/conftest.py's tiny models, frozen with the recorded fingerprints: the tests may
# change their models, the fingerprint must keep measuring the ones it recorded.
TINY_MSDNET = [
    "--arch",
    "msdnet_ge",
    "--nBlocks",
    "3",
    "--base",
    "2",
    "--step",
    "1",
    "--nChannels",
    "4",
    "--growthRate",
    "2",
    "--grFactor",
    "1-2-2",
    "--bnFactor",
    "1-2-2",
]
TINY_RANET = [
    "--arch",
    "ranet",
    "--nBlocks",
    "2",
    "--block-step",
    "1",
    "--step",
    "2",
    "--nChannels",
    "4",
    "--growthRate",
    "4",
    "--scale-list",
    "1-2-3",
    "--grFactor",
    "2-1-1",
    "--bnFactor",
    "2-1-1",
]
COMMON = [
    "--dataset",
    "digits",
    "--device",
    "cpu",
    "--workers",
    "0",
    "--batch-size",
    "32",
    "--lr",
    "0.05",
    "--lr_milestones",
    "2",
    "--use-valid",
    "--seed",
    "3",
]
RUNS = {
    "boost_equal": [*TINY_MSDNET, "--loss", "boost", "--ensemble_reweight", "0.3,0.9", "--loss_equal"],
    "joint": [*TINY_MSDNET, "--loss", "joint"],
    "ranet": [*TINY_RANET, "--loss", "boost"],
}


def run(*command: str) -> None:
    """Run a repository command with one thread; stop with its output if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def tensor_digests(state: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of each tensor's dtype, shape and bytes."""
    import torch

    digests = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(
                tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
                if tensor.dtype != torch.bool
                else tensor.numpy().tobytes()
            )
            digests[key] = digest.hexdigest()
    return digests


def results(run_dir: Path) -> dict[str, Any]:
    """The parts of a run's checkpoint and evaluation files that the computation determines."""
    import torch

    checkpoint = torch.load(run_dir / "model_latest.pth", map_location="cpu", weights_only=True)
    anytime = json.loads((run_dir / "anytime.json").read_text())
    budgeted = json.loads((run_dir / "budgeted.json").read_text())
    budget = json.loads((run_dir / "budget.json").read_text())
    return {
        "model": tensor_digests(checkpoint["model"]),
        "objective": tensor_digests(checkpoint["objective"]),
        "epoch": checkpoint["epoch"],
        "anytime": anytime["exits"],
        "budgeted": budgeted["levels"],
        "budget_thresholds": budget["thresholds"],
        "budget_test_accuracy": budget["test_accuracy"],
    }


def fingerprint_run(name: str, flags: list[str], folder: Path) -> dict[str, Any]:
    """Train 2 epochs, resume to 3, evaluate both modes and a budget halfway up the cost range."""
    run_dir = folder / name
    run("train_cifar100.py", *COMMON, *flags, "--epochs", "2", "--result_dir", str(run_dir))
    run("train_cifar100.py", "--result_dir", str(run_dir), "--resume", "--epochs", "3")
    run("eval_cifar100.py", "--evaluate-from", str(run_dir), "--checkpoint", "latest", "--workers", "0")
    costs = [row["macs"] for row in json.loads((run_dir / "anytime.json").read_text())["exits"]]
    run(
        "eval_cifar100.py",
        "--evaluate-from",
        str(run_dir),
        "--checkpoint",
        "latest",
        "--workers",
        "0",
        "--evalmode",
        "anytime",
        "--budget",
        f"{(costs[0] + costs[-1]) / 2:.0f}",
    )
    return results(run_dir)


def differences(recorded: Any, found: Any, where: str = "") -> list[str]:
    """Paths at which two JSON values differ."""
    if isinstance(recorded, dict) and isinstance(found, dict):
        return [
            line
            for key in sorted(set(recorded) | set(found))
            for line in differences(recorded.get(key), found.get(key), f"{where}/{key}")
        ]
    if isinstance(recorded, list) and isinstance(found, list) and len(recorded) == len(found):
        return [
            line
            for i, (a, b) in enumerate(zip(recorded, found))
            for line in differences(a, b, f"{where}[{i}]")
        ]
    return [] if recorded == found else [f"{where}: recorded {recorded!r}, found {found!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--out", type=Path, help="write the fingerprint to this JSON file")
    action.add_argument("--check", type=Path, help="compare with this recorded fingerprint")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        found = {name: fingerprint_run(name, flags, Path(folder)) for name, flags in RUNS.items()}
    if options.out is not None:
        options.out.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"fingerprint of {len(found)} runs written to {options.out}")
        return
    lines = differences(json.loads(options.check.read_text()), json.loads(json.dumps(found)))
    print("\n".join(lines[:20]) if lines else f"identical to {options.check}")
    sys.exit(1 if lines else 0)


if __name__ == "__main__":
    main()
