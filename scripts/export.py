"""Export a run's exit stages with its exit policy, for early exit without this project's code.

    python scripts/export.py RUN --format onnx --out DIR
    python scripts/export.py RUN --format torch-export --out DIR

RUN is an evaluated run directory (evaluation wrote its exit_policy.json). DIR, which must not
exist yet, receives one graph per exit stage (stage n: features and previous ensemble output of
the samples still running -> next features, exit n's output, confidence, class; dynamic batch
axis), exit_policy.json and manifest.json. scripts/predict.py DIR runs them. With --verify the
export is then run on the run's test images and compared with the network at every setting of
the policy (DIR/agreement.json). See docs/deployment.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cli import OneLineParser, existing_file, existing_folder, int_at_least, output_new_folder  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402

FORMAT_CHOICES = ("onnx", "torch-export")
AGREEMENT_FILE = "agreement.json"
VERIFY_BATCH = 256
DISAGREES = 1


def parse_export_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The request; an existing --out is refused before any work, so nothing is overwritten."""
    parser = OneLineParser(prog="export.py", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=existing_folder, help="evaluated run directory (holds exit_policy.json)")
    parser.add_argument("--format", choices=FORMAT_CHOICES, default="onnx", help="stage file format")
    parser.add_argument(
        "--out", type=output_new_folder, required=True, help="new directory the export is written to"
    )
    parser.add_argument(
        "--policy", type=existing_file, default=None, help="exit policy file (default: RUN/exit_policy.json)"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="then compare the export with the network on the run's test images at every setting of "
        "the policy: DIR/agreement.json, exit status 1 if they disagree",
    )
    parser.add_argument(
        "--verify-images",
        type=int_at_least(1),
        metavar="N",
        help="with --verify: the first N test images (default: all)",
    )
    request = parser.parse_args(argv)
    if request.verify_images is not None and not request.verify:
        raise UserError("--verify-images: give --verify too (it says how many test images to verify on)")
    return request


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Check the run and its policy, rebuild the network on the CPU, write the export."""
    request = parse_export_args(argv)
    from args import parse_evaluation_args
    from boostnet.data.loaders import official_test_set
    from boostnet.deployment.export import export_run
    from boostnet.deployment.source import loading_flags, run_policy
    from boostnet.evaluation.loading import load_run

    policy, checkpoint = run_policy(request.run, request.policy)
    job = parse_evaluation_args(loading_flags(checkpoint, policy))
    run = load_run(job)
    # the test split before the export: a missing dataset stops it
    test = official_test_set(job.data) if request.verify else None
    export_run(run.network, policy, job.model.inputs.channels, request.format, request.out)
    print(
        f"exported {run.network.num_exits} {request.format} stages of {checkpoint} "
        f"with its exit policy to {request.out}"
    )
    if test is not None:
        verify(run.network, test, request)


def verify(network, test, request: argparse.Namespace) -> None:
    """Write DIR/agreement.json and its summary line; exit 1 when the export disagrees."""
    from boostnet.deployment.agreement import measure_agreement
    from boostnet.deployment.export import load_export
    from boostnet.deployment.source import test_batches
    from boostnet.evaluation.policy import offered_settings
    from utils.json_files import write_json

    export = load_export(request.out)
    settings = offered_settings(export.policy)
    batches = test_batches(test, VERIFY_BATCH, request.verify_images)
    agreement = measure_agreement(network, export.backend, settings, batches)
    write_json(request.out / AGREEMENT_FILE, {"format": request.format, **agreement.as_json()})
    print(f"{agreement.summary()}; written to {request.out / AGREEMENT_FILE}")
    if not agreement.agrees:
        sys.exit(DISAGREES)


if __name__ == "__main__":
    run_cli(main)
