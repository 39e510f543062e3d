"""Train a BoostNet (or baseline) multi-exit network on ImageNet (DATA_ROOT/train, DATA_ROOT/val).

    torchrun --nproc_per_node 4 train_imagenet.py --data-root /data/imagenet --arch msdnet_ge \
        --nBlocks 5 --step 7 --base 7 --nChannels 32 --growthRate 16 --grFactor 1-2-4-4 \
        --bnFactor 1-2-4-4 --result_dir runs/msdnet_imagenet
"""

from fractions import Fraction
from typing import Optional, Sequence

from args import parse_args
from boostnet.training.settings import EpochFractions
from utils.errors import run_cli

IMAGENET_EPOCHS = 90
IMAGENET_SCHEDULE = EpochFractions((Fraction(1, 3), Fraction(2, 3)))  # 30, 60 of 90 epochs


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse the flags (ImageNet, 90 epochs decayed after 1/3 and 2/3 of them by default) and train."""
    job = parse_args(
        argv,
        prog="train_imagenet.py",
        dataset="imagenet",
        epochs=IMAGENET_EPOCHS,
        lr_milestones=IMAGENET_SCHEDULE,
    )
    from boostnet.training.engine import run_training  # torch: only once the flags are checked

    run_training(job)


if __name__ == "__main__":
    run_cli(main)
