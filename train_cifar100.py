"""Train a BoostNet (or baseline) multi-exit network on CIFAR-100 or the offline `digits` set.

python train_cifar100.py --arch msdnet_ge --nBlocks 10 --result_dir runs/msdnet_c100
python train_cifar100.py --dataset digits --epochs 5 --device cpu   # offline, on a laptop
"""

from typing import Optional, Sequence

from args import parse_args
from utils.errors import run_cli


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse the flags (CIFAR-100 by default) and train."""
    job = parse_args(argv, prog="train_cifar100.py", dataset="cifar100")
    from boostnet.training.engine import run_training  # torch: only once the flags are checked

    run_training(job)


if __name__ == "__main__":
    run_cli(main)
