"""Train K seeds of several variants of one recipe, evaluate each and aggregate over seeds.

    python scripts/study.py --out results/study --seeds 0 1 2 --variants boost joint r1 msdnet \\
        --dataset digits [--jobs 2] [-- extra training flags for every run]

Each run is `train_cifar100.py` then `eval_cifar100.py --evalmode both --checkpoint latest`
in OUT/runs/<variant>_seed<k>/; a run whose evaluation exists and whose config matches is
reused, an unfinished one resumed.
The aggregate goes to OUT/study.json, study.csv, study.md and study.png (docs/study.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from args import parse_args  # noqa: E402
from boostnet.reporting.plots import ANYTIME_FILE, BUDGETED_FILE  # noqa: E402
from boostnet.reporting.study_stats import DEFAULT_GRID_POINTS, aggregate, run_result  # noqa: E402
from boostnet.runs.layout import CONFIG_FILE, LATEST_CHECKPOINT  # noqa: E402
from utils.cli import OneLineParser, output_folder  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.json_files import json_text, read_json, write_json  # noqa: E402

REFERENCE = "boost"
VARIANTS = {  # name -> (flags after the base flags, what it is)
    "boost": (["--loss", "boost"], "BoostNet: the boosted objective, r from the base flags (0.5)"),
    "joint": (["--loss", "joint"], "the joint (original MSDNet) objective, independent exits"),
    "r1": (["--loss", "boost", "--ensemble_reweight", "1.0"], "BoostNet with r = 1.0"),
    "msdnet": (["--loss", "boost", "--arch", "msdnet"], "BoostNet on MSDNet without gradient rescaling"),
}
DEFAULT_BASE_FLAGS = (
    "--arch msdnet_ge --nBlocks 4 --base 2 --step 2 --nChannels 8 --growthRate 4 "
    "--grFactor 1-2-4 --bnFactor 1-2-4 --epochs 4 --lr_milestones 2,3 "
    "--batch-size 64 --workers 0"
)
STUDY_FLAGS = (
    "--seed",
    "--result_dir",
    "--save",
    "--resume",
    "--dataset",
    "--data",
    "--use-valid",
    "--evaluate-from",
)
IGNORED_CONFIG_KEYS = ("resume", "result_dir")
TRAIN_LOG, EVAL_LOG = "study_train.log", "study_eval.log"


@dataclass
class Run:
    """One (variant, seed) of the study: its directory and training flags."""

    variant: str
    seed: int
    run_dir: Path
    train_flags: list[str]

    @property
    def name(self) -> str:
        return f"{self.variant}_seed{self.seed}"

    def train_command(self, resume: bool) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "train_cifar100.py"),
            *self.train_flags,
            *(["--resume"] if resume else []),
        ]

    def eval_command(self) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "eval_cifar100.py"),
            "--evaluate-from",
            str(self.run_dir),
            "--evalmode",
            "both",
            "--checkpoint",
            "latest",
        ]  # the file is_finished checks


def split_extra(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The study's own flags and the training flags after the first `--`."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def study_parser() -> OneLineParser:
    """The study's own flags, every one with its help; the variants are listed below them."""
    parser = OneLineParser(
        prog="scripts/study.py",
        description=__doc__.splitlines()[0],
        epilog="variants: "
        + "; ".join(f"{name} = {flags[1]} ({' '.join(flags[0])})" for name, flags in VARIANTS.items()),
    )
    parser.add_argument(
        "--out", type=output_folder, required=True, help="study folder (runs/ and the results)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="training seeds; every variant is trained once per seed",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help=f"variants to train (listed below); each is compared with "
        f"{REFERENCE}, seed by seed, when {REFERENCE} is among them",
    )
    parser.add_argument("--dataset", default="digits", help="passed to every run's --dataset")
    parser.add_argument("--base-flags", default=DEFAULT_BASE_FLAGS, help="training flags of the recipe")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time; with more than 1 each gets OMP_NUM_THREADS=1"
    )
    parser.add_argument(
        "--grid-points",
        type=int,
        default=DEFAULT_GRID_POINTS,
        help="costs on the common grid of the budgeted curves",
    )
    return parser


def parse_study_args(argv: Sequence[str]) -> argparse.Namespace:
    """The study's flags (checked) with the training flags after `--` as `extra_flags`."""
    parser = study_parser()
    own, extra = split_extra(argv)
    options = parser.parse_args(own)
    options.extra_flags = extra
    for flag, values in (("--seeds", options.seeds), ("--variants", options.variants)):
        repeated = next((v for v in values if values.count(v) > 1), None)
        if repeated is not None:
            parser.error(f"{flag}: {repeated} is given twice")
    if options.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {options.jobs}")
    if options.grid_points < 2:
        parser.error(f"--grid-points must be at least 2, got {options.grid_points}")
    reserved = next(
        (f for f in shlex.split(options.base_flags) + extra if f.split("=")[0] in STUDY_FLAGS), None
    )
    if reserved is not None:
        parser.error(f"{reserved} is set by the study for every run; use --seeds / --dataset / --out")
    return options


def plan_runs(options: argparse.Namespace) -> list[Run]:
    """Every (variant, seed) with its flags: base, extra, the variant's, then the study's own."""
    base = shlex.split(options.base_flags) + options.extra_flags
    runs = []
    for variant in options.variants:
        for seed in options.seeds:
            run_dir = (options.out / "runs" / f"{variant}_seed{seed}").resolve()
            flags = (
                base
                + VARIANTS[variant][0]
                + [
                    "--dataset",
                    options.dataset,
                    "--seed",
                    str(seed),
                    "--use-valid",
                    "--result_dir",
                    str(run_dir),
                ]
            )
            runs.append(Run(variant, seed, run_dir, flags))
    return runs


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A run config as JSON sees it, without the keys that do not define the run."""
    plain = json.loads(json_text(config))
    return {key: value for key, value in plain.items() if key not in IGNORED_CONFIG_KEYS}


def config_mismatch(run: Run, wanted: dict[str, Any]) -> Optional[str]:
    """Why the run's saved config.json differs from `wanted` (the study's flags), if it does.

    Keys present on one side only (flags added to or removed from the code since) are skipped.
    """
    config_file = run.run_dir / CONFIG_FILE
    if not config_file.is_file():
        return None
    try:
        saved = comparable(read_json(config_file))
    except (OSError, ValueError) as error:
        return f"cannot read {config_file} ({error})"
    wanted = comparable(wanted)
    for key in sorted(saved.keys() & wanted.keys()):
        if saved[key] != wanted[key]:
            return f"it was trained with {key}={saved[key]!r}, the study now gives {wanted[key]!r}"
    return None


def check_runs(runs: Sequence[Run]) -> None:
    """Before any work: every run's flags parse, and no existing run was made with other flags."""
    for run in runs:
        wanted = parse_args(run.train_flags, prog=f"study run {run.name}").record
        reason = config_mismatch(run, wanted)
        if reason is not None:
            raise UserError(
                f"{run.run_dir} holds another run: {reason}; use another --out or remove that directory"
            )


def read_result(path: Path) -> Optional[dict[str, Any]]:
    """The file's JSON, or None when it is missing or unreadable (an unfinished run)."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def is_finished(run: Run) -> bool:
    """Both evaluations exist and were made from the run's current latest checkpoint."""
    checkpoint = run.run_dir / LATEST_CHECKPOINT
    results = [read_result(run.run_dir / name) for name in (ANYTIME_FILE, BUDGETED_FILE)]
    if not checkpoint.is_file() or any(result is None for result in results):
        return False
    from utils.checkpoint import file_digest  # torch: not needed for --help

    digest = file_digest(checkpoint)
    return all(result.get("checkpoint_sha256") == digest for result in results)


def run_step(run: Run, step: str, command: list[str], log_name: str, env: dict[str, str]) -> Optional[str]:
    """Run `command` with its output appended to RUN/log_name; returns why it failed, or None."""
    log = run.run_dir / log_name
    with open(log, "a") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        status = subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        ).returncode
    return None if status == 0 else f"{run.name}: {step} failed ({last_line(log)}), see {log}"


def last_line(log: Path) -> str:
    """The last line a command wrote to its log (after any progress-bar redraws), for errors."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].split("\r")[-1].strip() if lines else ""


class Progress:
    """One line per step of a run: [i/N] name: what, elapsed time of the study."""

    def __init__(self, total: int):
        self.total, self.started = total, time.perf_counter()

    def report(self, index: int, run: Run, text: str) -> None:
        minutes, seconds = divmod(time.perf_counter() - self.started, 60)
        print(
            f"[{index}/{self.total}] {run.name}: {text} (elapsed {minutes:.0f}m{seconds:04.1f}s)", flush=True
        )


def execute(run: Run, index: int, progress: Progress, env: dict[str, str]) -> Optional[str]:
    """Train (or resume) and evaluate one run unless it is finished; returns an error or None."""
    if is_finished(run):
        progress.report(index, run, "reused (trained and evaluated earlier)")
        return None
    run.run_dir.mkdir(parents=True, exist_ok=True)
    resume = (run.run_dir / LATEST_CHECKPOINT).is_file()
    progress.report(index, run, "resuming training" if resume else "training")
    started = time.perf_counter()
    failure = run_step(run, "training", run.train_command(resume), TRAIN_LOG, env)
    trained = time.perf_counter()
    failure = failure or run_step(run, "evaluation", run.eval_command(), EVAL_LOG, env)
    if failure is None:
        progress.report(
            index,
            run,
            f"trained in {trained - started:.1f} s, evaluated in {time.perf_counter() - trained:.1f} s",
        )
    return failure


def execute_all(runs: Sequence[Run], jobs: int) -> None:
    """Every run, `jobs` at a time; failures are reported together once all have ended."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": "1"} if jobs > 1 else {}))
    progress = Progress(len(runs))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        errors = [
            error
            for error in pool.map(lambda item: execute(item[1], item[0] + 1, progress, env), enumerate(runs))
            if error
        ]
    if errors:
        raise UserError(f"{len(errors)} of {len(runs)} runs failed: " + "; ".join(errors))


def study_config(argv: Sequence[str], options: argparse.Namespace, runs: Sequence[Run]) -> dict[str, Any]:
    """What was asked, exactly: the command line, the flags and every run's commands."""
    return {
        "command": shlex.join([sys.executable, str(Path(__file__).resolve()), *argv]),
        "argv": list(argv),
        "dataset": options.dataset,
        "seeds": options.seeds,
        "variants": {name: VARIANTS[name][0] for name in options.variants},
        "base_flags": shlex.split(options.base_flags),
        "extra_flags": options.extra_flags,
        "jobs": options.jobs,
        "grid_points": options.grid_points,
        "reference": REFERENCE,
        "runs": {
            run.name: {
                "dir": str(run.run_dir),
                "train": shlex.join(run.train_command(False)),
                "eval": shlex.join(run.eval_command()),
            }
            for run in runs
        },
    }


def collect(runs: Sequence[Run], grid_points: int) -> dict[str, Any]:
    """The aggregate of the runs' saved evaluations."""
    results = [
        run_result(
            run.variant,
            run.seed,
            read_result(run.run_dir / ANYTIME_FILE),
            read_result(run.run_dir / BUDGETED_FILE),
        )
        for run in runs
    ]
    try:
        return aggregate(results, reference=REFERENCE, grid_points=grid_points)
    except ValueError as error:
        raise UserError(f"cannot aggregate the study: {error}") from None


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Check, train and evaluate what is missing, then write the study's files."""
    argv = list(sys.argv[1:] if argv is None else argv)
    options = parse_study_args(argv)
    runs = plan_runs(options)
    check_runs(runs)
    options.out.mkdir(parents=True, exist_ok=True)
    config = study_config(argv, options, runs)
    write_json(options.out / "study_config.json", config)
    print(
        f"study: {len(options.variants)} variant(s) x {len(options.seeds)} seed(s) on "
        f"{options.dataset} in {options.out}",
        flush=True,
    )
    execute_all(runs, options.jobs)
    from boostnet.reporting.study_report import write_study  # torch and matplotlib: not needed for --help

    paths = write_study(options.out, collect(runs, options.grid_points), config)
    print("wrote " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
