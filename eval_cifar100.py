"""Evaluate a CIFAR-100 (or digits) run: anytime accuracy, budgeted batch, real early exit
(docs/evaluation.md).

    python eval_cifar100.py --evaluate-from runs/msdnet_c100 --evalmode both --budget 40e6
"""

from typing import Optional, Sequence

from args import parse_evaluation_args
from utils.errors import run_cli


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse the flags (CIFAR-100 unless the run says otherwise) and evaluate."""
    flags = parse_evaluation_args(argv, prog="eval_cifar100.py", dataset="cifar100")
    from boostnet.evaluation.evaluator import evaluate  # torch: only once the flags are parsed

    evaluate(flags)


if __name__ == "__main__":
    run_cli(main)
