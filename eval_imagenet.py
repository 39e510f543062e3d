"""Evaluate an ImageNet run: anytime accuracy, budgeted batch, real early exit (docs/evaluation.md).

python eval_imagenet.py --evaluate-from runs/msdnet_imagenet --data-root /data/imagenet
"""

from typing import Optional, Sequence

from args import parse_evaluation_args
from utils.errors import run_cli


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse the flags (ImageNet unless the run says otherwise) and evaluate."""
    flags = parse_evaluation_args(argv, prog="eval_imagenet.py", dataset="imagenet")
    from boostnet.evaluation.evaluator import evaluate  # torch: only once the flags are parsed

    evaluate(flags)


if __name__ == "__main__":
    run_cli(main)
