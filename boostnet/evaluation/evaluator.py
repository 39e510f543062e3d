"""The one evaluator behind eval_cifar100.py and eval_imagenet.py (docs/evaluation.md).

`--evaluate-from` names a run directory (its model_best.pth is evaluated, or with
`--checkpoint latest` its model_latest.pth) or a checkpoint file inside one; the first line
printed and every result file say which checkpoint was read and why. The job arrives with the
model rebuilt from the run's config.json (args.py merges the typed flags over it). Results
go to the run directory (anytime.*, budgeted.*, budget.json, real_exit.json, exit_policy.json, and cache/
holding per-exit logits keyed by the checkpoint's content hash); nothing else there is
touched. `--save-logits FILE.npz` also dumps every exit's outputs (docs/evaluation-outputs.md).

This module sequences the work: results.py computes, tables.py formats, outputs.py writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from boostnet.data.loaders import SPLIT_FILE, DataSplits, build_splits
from boostnet.evaluation import outputs, tables
from boostnet.evaluation.loading import LoadedRun, load_run
from boostnet.evaluation.logits_dump import SplitDump, check_dump_path, source_indices, write_logits_dump
from boostnet.evaluation.policy import POLICY_FILE, build_policy, with_earlier_settings
from boostnet.evaluation.results import (
    SplitOutputs,
    anytime_rows,
    budget_result,
    budgeted_levels,
    real_exit_result,
    split_outputs,
)
from boostnet.evaluation.settings import EvalSettings, EvaluationJob
from models.costs import ExitCosts
from utils.errors import UserError


def has_validation_split(run_dir: Path) -> bool:
    """Whether the run was trained with --use-valid (its split.json names the held-out images)."""
    return (run_dir / SPLIT_FILE).is_file()


def validation_only_flag(evaluation: EvalSettings) -> Optional[str]:
    """The requested evaluation that cannot run without a validation split, if any (`--evalmode
    both` can: it then runs anytime alone)."""
    if evaluation.evalmode == "dynamic":
        return "--evalmode dynamic"
    return "--budget" if evaluation.budget is not None else None


def uses_validation(job: EvaluationJob) -> bool:
    """Whether this evaluation fits thresholds on the run's validation split."""
    wanted = job.evaluation.evalmode != "anytime" or job.evaluation.budget is not None
    return wanted and has_validation_split(job.run_dir)


def check_request(job: EvaluationJob, costs: ExitCosts) -> None:
    """Fail before any work when the request cannot be met by this run (what the flags and the
    exit costs alone decide, so no result file is rewritten before an error)."""
    evaluation = job.evaluation
    if evaluation.save_logits is not None:
        check_dump_path(evaluation.save_logits)
    if evaluation.real_exit and evaluation.budget is None:
        raise UserError("--real-exit needs --budget X (multiply-adds per image) to choose its thresholds")
    flag = validation_only_flag(evaluation)
    if flag is not None and not has_validation_split(job.run_dir):
        raise UserError(
            f"{flag}: {job.run_dir} has no validation split ({SPLIT_FILE}; the run was "
            f"trained without --use-valid) to fit thresholds on; use --evalmode anytime "
            f"or train with --use-valid"
        )
    cheapest = costs.macs[0]
    if evaluation.budget is not None and evaluation.budget < cheapest:
        raise UserError(
            f"--budget {evaluation.budget:g}: below the cheapest setting (every sample "
            f"leaving at exit 1), which costs {cheapest:g} multiply-adds per image"
        )


def budgeted_skipped(run_dir: Path) -> str:
    """Why `--evalmode both` ran anytime alone."""
    return (
        f"budgeted batch skipped: {run_dir} was trained without --use-valid, so it has no "
        f"validation split to fit thresholds on (train with --use-valid)"
    )


def anytime(run: LoadedRun, test: SplitOutputs) -> None:
    rows = anytime_rows(run, test)
    print(tables.anytime_text(run.name, test.samples, rows))
    outputs.write_anytime(run.job.run_dir, run.header(), test.samples, rows)


def budgeted(run: LoadedRun, val: SplitOutputs, test: SplitOutputs) -> list[dict[str, Any]]:
    """The budget-level sweep (returned), printed and written to budgeted.json/csv."""
    flat_curve = run.job.evaluation.flat_curve
    levels = budgeted_levels(run, val, test)
    print(tables.budgeted_text(run.name, val.samples, test.samples, flat_curve, levels))
    outputs.write_budgeted(
        run.job.run_dir, run.header(), flat_curve, run.costs.macs, (val.samples, test.samples), levels
    )
    return levels


def budget(run: LoadedRun, val: SplitOutputs, test: SplitOutputs, budget: float) -> dict[str, Any]:
    """`--budget`: its thresholds and their test result (returned), printed and budget.json."""
    result = budget_result(run, val, test, budget)
    if budget >= run.costs.macs[-1]:
        print(tables.budget_above_full_text(budget, run.costs.macs[-1]))
    print(tables.budget_text(run.name, result))
    outputs.write_budget(run.job.run_dir, run.header(), result)
    return result


def exit_policy(
    run: LoadedRun, levels: Optional[list[dict[str, Any]]], chosen: Optional[dict[str, Any]]
) -> None:
    """exit_policy.json, when thresholds were fitted (the sweep's levels and/or `--budget`)."""
    if levels is None and chosen is None:
        return
    path = run.job.run_dir / POLICY_FILE
    document, note = with_earlier_settings(build_policy(run, levels, chosen), path)
    outputs.write_policy(run.job.run_dir, document)
    print(f"exit policy written to {path} {note}".rstrip())


def real_exit(run: LoadedRun, splits: DataSplits, test: SplitOutputs, thresholds: list[float]) -> None:
    result = real_exit_result(run, splits.test, test, thresholds)
    print(tables.real_exit_text(run.name, result))
    outputs.write_real_exit(run.job.run_dir, run.header(), result)


def save_logits(run: LoadedRun, splits: DataSplits, test: SplitOutputs, val: Optional[SplitOutputs]) -> None:
    """`--save-logits`: the test split's outputs and, when it was evaluated, the validation split's."""
    path = run.job.evaluation.save_logits
    write_logits_dump(
        path,
        SplitDump(test.outputs, test.targets, source_indices(splits.test)),
        None if val is None else SplitDump(val.outputs, val.targets, source_indices(splits.val)),
        run.costs.macs,
        run.header(),
    )
    print(
        f"outputs of every exit ({'test and validation' if val is not None else 'test'} split) "
        f"written to {path}"
    )


def evaluate(job: EvaluationJob) -> None:
    """Evaluate the run `job` names in the modes it asks for."""
    run = load_run(job)
    check_request(job, run.costs)
    print(run.checkpoint.summary())
    if run.weights == "ema":
        print("weights: its --model-ema average (--no-eval-ema evaluates the live weights)")
    evaluation = job.evaluation
    with_validation = uses_validation(job)
    splits = build_splits(job.data, with_validation, job.config.get("seed", 0), job.run_dir)
    test = split_outputs(run, splits.test, "test")
    if evaluation.anytime:
        anytime(run, test)
    val = split_outputs(run, splits.val, "val") if with_validation else None
    levels = chosen = None
    if evaluation.budgeted:
        if val is not None:
            levels = budgeted(run, val, test)
        else:
            print(budgeted_skipped(job.run_dir))
    if evaluation.budget is not None:
        chosen = budget(run, val, test, evaluation.budget)
        if evaluation.real_exit:
            real_exit(run, splits, test, chosen["thresholds"])
    exit_policy(run, levels, chosen)
    if evaluation.save_logits is not None:
        save_logits(run, splits, test, val)
