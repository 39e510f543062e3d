"""Test helper for torchrun: train, then save this rank's final weights to RANK_DIR/rank<N>.pt.

torchrun --standalone --nproc_per_node 2 tests/distributed_worker.py RANK_DIR <training flags>
"""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from args import parse_args  # noqa: E402
from boostnet.training.engine import run_training  # noqa: E402


def main() -> None:
    rank_dir, flags = Path(sys.argv[1]), sys.argv[2:]
    model = run_training(parse_args(flags, prog="distributed_worker.py"))
    torch.save(model.state_dict(), rank_dir / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main()
