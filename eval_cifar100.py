"""Evaluate a CIFAR-100 (or digits) run: anytime accuracy, budgeted batch, real early exit
(docs/evaluation.md).

    python eval_cifar100.py --evaluate-from runs/msdnet_c100 --evalmode both --budget 40e6
"""
from utils.errors import run_cli
from utils.evaluator import main

if __name__ == "__main__":
    run_cli(lambda argv: main(argv, prog="eval_cifar100.py", dataset="cifar100"))
