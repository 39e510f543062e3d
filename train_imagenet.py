"""Train a BoostNet (or baseline) multi-exit network on ImageNet (DATA_ROOT/train, DATA_ROOT/val).

    torchrun --nproc_per_node 4 train_imagenet.py --data-root /data/imagenet --arch msdnet_ge \
        --nBlocks 5 --step 7 --base 7 --nChannels 32 --growthRate 16 --grFactor 1-2-4-4 \
        --bnFactor 1-2-4-4 --result_dir runs/msdnet_imagenet
"""
from typing import Optional, Sequence

from args import parse_args
from utils.engine import run_training
from utils.errors import run_cli

IMAGENET_EPOCHS = 90
IMAGENET_LR_MILESTONES = [30, 60]


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse the flags (ImageNet, 90 epochs decayed at 30 and 60 by default) and train."""
    run_training(parse_args(argv, prog="train_imagenet.py", dataset="imagenet",
                            epochs=IMAGENET_EPOCHS, lr_milestones=IMAGENET_LR_MILESTONES))


if __name__ == "__main__":
    run_cli(main)
