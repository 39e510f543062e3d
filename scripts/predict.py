"""Classify image files with real early exit, by a run's (or an export's) exit policy.

    python scripts/predict.py RUN_OR_EXPORT IMAGE... [--budget MACS | --level K | --thresholds T...]

SOURCE is an evaluated run directory (its exit_policy.json names the checkpoint; PyTorch
backend) or a directory written by scripts/export.py (ONNX Runtime or torch.export backend).
IMAGE arguments are files, folders or glob patterns. Per image it prints the class name, the
exit taken, the confidence and the multiply-adds spent; at the end the exit histogram, the
mean MACs per image and the images/s of the network (reading excluded). Without a choice of
thresholds it uses the policy's --budget setting, else its level most accurate on validation.
An image that cannot be read is one line naming it; the others are still classified and the
exit status is 1. See docs/deployment.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import OneLineParser, existing_file, existing_folder, int_at_least, positive_float  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402

BACKENDS = ("pytorch", "onnxruntime", "torch-export")
EXPORT_BACKENDS = {"onnx": "onnxruntime", "torch-export": "torch-export"}
PARTIAL_FAILURE = 1


def parse_predict_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The request, its numbers and source checked before anything is loaded."""
    parser = OneLineParser(prog="predict.py", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=existing_folder, help="evaluated run directory or export directory")
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--budget", type=positive_float, help="MACs per image: the policy's most accurate setting within it"
    )
    choice.add_argument("--level", type=int, help="budget level K of the policy's sweep")
    choice.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        metavar="T",
        help="confidence threshold per exit (the last exit takes every sample left, so its threshold "
        "may be left out; above 1 an exit never fires)",
    )
    choice.add_argument(
        "--latency-budget",
        type=positive_float,
        metavar="MS",
        help="milliseconds per image: the most accurate setting whose measured latency meets it",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="(default: pytorch for a run, the export's own format for an export directory)",
    )
    parser.add_argument(
        "--policy", type=existing_file, help="exit policy file (default: the source's exit_policy.json)"
    )
    parser.add_argument(
        "--batch-size", type=int_at_least(1), default=32, help="images per batch (1 for latency)"
    )
    parser.add_argument("--threads", type=int_at_least(1), default=1, help="CPU threads of the backend")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser.parse_args(argv)


def load_backend(request: argparse.Namespace) -> tuple[Any, Any, str]:
    """(stage backend, exit policy, backend name) of the source, every digest checked."""
    from boostnet.deployment.export import eager_backend, is_export, load_export

    if is_export(request.source):
        export = load_export(request.source, request.threads, request.policy)
        name = EXPORT_BACKENDS[export.format]
        if request.backend not in (None, name):
            raise UserError(
                f"--backend {request.backend}: {request.source} is an export to {export.format}; use {name}"
            )
        return export.backend, export.policy, name
    if request.backend not in (None, "pytorch"):
        raise UserError(f"--backend {request.backend}: give an export directory (scripts/export.py) for it")
    from args import parse_evaluation_args
    from boostnet.deployment.source import loading_flags, run_policy
    from boostnet.evaluation.loading import load_run

    policy, checkpoint = run_policy(request.source, request.policy)
    job = parse_evaluation_args(loading_flags(checkpoint, policy))
    run = load_run(job)
    return eager_backend(run.network, policy, job.model.inputs.channels), policy, "pytorch"


def chosen_setting(request: argparse.Namespace, policy: Any, backend: Any) -> tuple[Any, Any]:
    """The threshold setting the flags ask for (see the module docstring for the default), and
    the LatencyChoice behind it under --latency-budget (else None)."""
    from boostnet.deployment.latency import setting_for_latency

    if request.latency_budget is not None:
        choice = setting_for_latency(policy, backend, request.latency_budget, request.batch_size)
        return choice.setting, choice
    return fixed_setting(request, policy), None


def fixed_setting(request: argparse.Namespace, policy: Any) -> Any:
    """The setting --budget, --level or --thresholds ask for, else the policy's default."""
    from boostnet.evaluation.policy import explicit_setting, setting_for_budget, setting_for_level

    if request.budget is not None:
        return setting_for_budget(policy, request.budget)
    if request.level is not None:
        return setting_for_level(policy, request.level)
    if request.thresholds is not None:
        return explicit_setting(policy, request.thresholds)
    if policy.budget is not None:
        return policy.budget
    if not policy.levels:
        raise UserError(f"{request.source}: the exit policy has no settings; give --thresholds")
    return max(policy.levels, key=lambda entry: entry.val_accuracy)


def image_line(path: Path, label: int, exit_index: int, confidence: float, policy: Any, as_json: bool) -> str:
    """One image's result: class name, exit (1-based), confidence, MACs spent."""
    record = {
        "image": str(path),
        "class": policy.classes[label],
        "label": label,
        "exit": exit_index + 1,
        "confidence": confidence,
        "macs": policy.macs[exit_index],
    }
    if as_json:
        return json.dumps(record)
    return (
        f"{path}: {record['class']} (exit {record['exit']} of {policy.num_exits}, "
        f"confidence {confidence:.4f}, {record['macs'] / 1e6:.3f}M MACs)"
    )


def classify_batch(
    paths: list[Path], backend: Any, policy: Any, thresholds: list[float], request: argparse.Namespace
) -> tuple[list[int], float, int]:
    """Read and classify one batch: (exit indices, seconds in the network, failed count)."""
    import torch

    from boostnet.deployment.images import image_transform, read_image
    from boostnet.deployment.runner import classify

    transform = image_transform(policy)
    tensors, kept, failed = [], [], 0
    for path in paths:
        tensor, why = read_image(path, policy, transform)
        if tensor is None:
            print(f"error: {path}: cannot read this image ({why})", file=sys.stderr, flush=True)
            failed += 1
        else:
            tensors.append(tensor)
            kept.append(path)
    if not tensors:
        return [], 0.0, failed
    start = time.perf_counter()
    decisions = classify(backend, torch.stack(tensors), thresholds)
    seconds = time.perf_counter() - start
    for path, label, exit_index, confidence in zip(
        kept, decisions.classes.tolist(), decisions.exits.tolist(), decisions.confidences.tolist()
    ):
        print(image_line(path, label, exit_index, confidence, policy, request.json), flush=True)
    return decisions.exits.tolist(), seconds, failed


def summary(
    exits: list[int], seconds: float, failed: int, policy: Any, setting: Any, latency: Any, as_json: bool
) -> str:
    """The closing line(s): setting, exit histogram, mean MACs per image, images/s; under
    --latency-budget (`latency`, a LatencyChoice) the budget, the promise and what was achieved."""
    histogram = [exits.count(n) for n in range(policy.num_exits)]
    mean_macs = sum(policy.macs[n] for n in exits) / len(exits) if exits else 0.0
    rate = len(exits) / seconds if seconds > 0 else 0.0
    achieved_ms = 1000 / rate if rate else None
    record = {
        "summary": {
            "setting": setting.name,
            "thresholds": setting.thresholds,
            "images": len(exits),
            "unreadable": failed,
            "exit_histogram": histogram,
            "mean_macs": mean_macs,
            "images_per_second": rate,
            "ms_per_image": achieved_ms,
            **(latency.fields(achieved_ms) if latency is not None else {}),
        }
    }
    if as_json:
        from utils.json_files import json_text

        return json_text(record, indent=None)
    from boostnet.evaluation.policy import describe_setting

    line = (
        f"{describe_setting(setting)}: {len(exits)} image{'' if len(exits) == 1 else 's'} "
        f"({failed} unreadable), exits {'/'.join(map(str, histogram))}, "
        f"mean {mean_macs / 1e6:.3f}M MACs per image, {rate:.1f} images/s "
        f"({achieved_ms or 0:.3f} ms per image, network only)"
    )
    if latency is None:
        return line
    verdict = "within" if achieved_ms is not None and achieved_ms <= latency.budget_ms else "OVER"
    return (
        f"{line}\nlatency budget {latency.budget_ms:g} ms per image: expected {latency.expected_ms:.3g} ms "
        f"from the stages' latencies here, achieved {achieved_ms or 0:.3g} ms ({verdict} the budget)"
    )


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Check everything, then classify the images batch by batch; exit 1 if some were unreadable."""
    request = parse_predict_args(argv)
    from boostnet.deployment.images import image_paths

    paths = image_paths(request.images)
    backend, policy, _ = load_backend(request)
    import torch

    torch.set_num_threads(request.threads)  # after loading: a run's evaluation settings set their own
    setting, latency = chosen_setting(request, policy, backend)
    exits, seconds, failed = [], 0.0, 0
    for start in range(0, len(paths), request.batch_size):
        batch_exits, batch_seconds, batch_failed = classify_batch(
            paths[start : start + request.batch_size], backend, policy, setting.thresholds, request
        )
        exits += batch_exits
        seconds += batch_seconds
        failed += batch_failed
    print(summary(exits, seconds, failed, policy, setting, latency, request.json))
    if failed:
        sys.exit(PARTIAL_FAILURE)


if __name__ == "__main__":
    run_cli(main)
