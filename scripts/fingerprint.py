"""Fingerprint what training and evaluation compute, so a restructuring can show it changed nothing.

Through the public commands only (train_cifar100.py, eval_cifar100.py), on the CPU with one
thread, three tiny runs on the embedded `digits` set are trained 2 epochs, resumed to 3, and
evaluated anytime, in budgeted batch (all 39 levels) and at a `--budget`:

- boost with non-constant factors (r 0.3 -> 0.9) and `--loss_equal`,
- joint,
- RANet (boost).

The fingerprint keeps a SHA-256 of every weight and objective buffer of the final checkpoint,
the anytime rows, the budgeted levels and the budget's thresholds; file digests, paths and
times are left out (they change with any change of the checkpoint's metadata). It also records
the machine (CPU, the vector instructions torch dispatches to, library versions): the digests
are bit-exact only there, so a fingerprint recorded on another machine may differ everywhere
without any change of the code. `--against COMMIT` avoids that: it fingerprints COMMIT (in a
temporary git worktree) and the working tree on this machine and compares the two.

    python scripts/fingerprint.py --against main                   # this change vs. main, here
    python scripts/fingerprint.py --out fingerprint.json            # record
    python scripts/fingerprint.py --check fingerprint.json          # compare, exit 1 if different
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import OneLineParser, output_file  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.machine import cpu_name  # noqa: E402

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


def run(root: Path, *command: str) -> None:
    """Run a command of the checkout at `root` with one thread; stop with its output if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, *command], cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{root}: {' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


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


def fingerprint_run(root: Path, name: str, flags: list[str], folder: Path) -> dict[str, Any]:
    """Train 2 epochs, resume to 3, evaluate both modes and a budget halfway up the cost range,
    with the programs of the checkout at `root`."""
    run_dir = folder / name
    run(root, "train_cifar100.py", *COMMON, *flags, "--epochs", "2", "--result_dir", str(run_dir))
    run(root, "train_cifar100.py", "--result_dir", str(run_dir), "--resume", "--epochs", "3")
    run(root, "eval_cifar100.py", "--evaluate-from", str(run_dir), "--checkpoint", "latest", "--workers", "0")
    costs = [row["macs"] for row in json.loads((run_dir / "anytime.json").read_text())["exits"]]
    run(
        root,
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


def environment() -> dict[str, str]:
    """What the digests depend on besides the code: the CPU, the vector instructions torch's
    kernels dispatch to (AVX2 and AVX-512 kernels round differently) and the library versions."""
    import numpy
    import torch

    return {
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": numpy.__version__,
    }


def fingerprint(root: Path, label: str) -> dict[str, Any]:
    """The fingerprint of the checkout at `root`: this machine's environment and every run's results."""
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, flags in RUNS.items():
            start = time.monotonic()
            runs[name] = fingerprint_run(root, name, flags, Path(folder))
            seconds = time.monotonic() - start
            print(f"{label}: {name} trained, resumed and evaluated ({seconds:.0f} s)", flush=True)
    return json.loads(json.dumps({"environment": environment(), "runs": runs}))


def recorded_parts(document: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(environment, runs) of a fingerprint file; files written before the environment was
    recorded hold the runs alone, and their environment is unknown (None)."""
    if "runs" in document:
        return document.get("environment"), document["runs"]
    return None, document


def comparison(recorded: dict[str, Any], found: dict[str, Any], name: str) -> list[str]:
    """Lines reporting how `found` differs from the fingerprint `recorded` (none when identical);
    the first says so when the two were not computed in the same environment."""
    recorded_environment, recorded_runs = recorded_parts(recorded)
    lines = differences(recorded_runs, found["runs"])
    if lines and recorded_environment != found["environment"]:
        where = "an unrecorded machine" if recorded_environment is None else describe(recorded_environment)
        lines.insert(
            0,
            f"note: {name} was computed on {where}, this is {describe(found['environment'])}; the "
            f"digests are bit-exact only on the same CPU and libraries, so compare with "
            f"--against COMMIT (the commit the change started from) on one machine",
        )
    return lines


def describe(environment: dict[str, str]) -> str:
    """One phrase for an environment: 'AMD EPYC (AVX2), Python 3.11.2, torch 2.4.1, numpy 2.1.0'."""
    return (
        f"{environment['cpu']} ({environment['cpu_capability']}), Python {environment['python']}, "
        f"torch {environment['torch']}, numpy {environment['numpy']}"
    )


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A temporary detached git worktree of `commit` of this repository, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="fingerprint-"))
    added = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder / "tree"), commit],
        capture_output=True,
        text=True,
    )
    if added.returncode != 0:
        folder.rmdir()
        reason = (added.stderr.strip().splitlines() or ["git failed"])[-1]
        raise UserError(f"--against {commit}: no worktree of it can be made ({reason})")
    try:
        yield folder / "tree"
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder / "tree")])
        folder.rmdir()


def parse_fingerprint_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """One action: record, check against a file, or compare with a commit."""
    parser = OneLineParser(prog="fingerprint.py", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--out", type=output_file, help="write the working tree's fingerprint to this JSON file"
    )
    action.add_argument("--check", type=Path, help="compare the working tree with this recorded fingerprint")
    action.add_argument(
        "--against", metavar="COMMIT", help="compare the working tree with COMMIT, both fingerprinted here"
    )
    options = parser.parse_args(argv)
    if options.check is not None and not options.check.is_file():
        parser.error(f"--check: no fingerprint file at {options.check}")
    return options


def main(argv: Sequence[str] | None = None) -> None:
    """Record, check or compare; exit 1 when a comparison finds differences."""
    options = parse_fingerprint_args(argv)
    if options.check is not None:
        recorded, name = json.loads(options.check.read_text()), str(options.check)
    elif options.against is not None:
        with worktree(options.against) as tree:
            recorded, name = fingerprint(tree, options.against), options.against
    found = fingerprint(ROOT, "working tree")
    if options.out is not None:
        options.out.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"fingerprint of {len(found['runs'])} runs written to {options.out}")
        return
    lines = comparison(recorded, found, name)
    print("\n".join(lines[:21]) if lines else f"identical to {name}")
    if lines:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
