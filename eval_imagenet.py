"""Evaluate an ImageNet run: anytime accuracy, budgeted batch, real early exit (docs/evaluation.md).

    python eval_imagenet.py --evaluate-from runs/msdnet_imagenet --data-root /data/imagenet
"""
from utils.errors import run_cli
from utils.evaluator import main

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, prog="eval_imagenet.py", dataset="imagenet"))
