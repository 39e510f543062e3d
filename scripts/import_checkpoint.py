"""Turn a checkpoint of the official BoostNet code or of MSDNet-PyTorch into one of our run directories.

    python scripts/import_checkpoint.py model_best.pth --out runs/imported \\
        --dataset cifar100 --arch msdnet_ge --nBlocks 7 --step 2 --base 4 --nChannels 16

Give the model flags of the run that wrote SRC, as the training scripts take them. The run
directory then evaluates (eval_*.py --evaluate-from), fine-tunes (train_*.py --init-from) and,
when the file's optimiser state fits these flags, resumes (--result_dir OUT --resume).
See docs/checkpoints.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from args import parse_import_args  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse SRC, --out and the model flags, import, and say what the run directory allows."""
    source, job = parse_import_args(argv, prog="import_checkpoint.py")
    from boostnet.interop import import_run  # torch: only once the flags are checked

    note = import_run(source, job)
    out = job.run.result_dir
    print(f"imported {source} ({note['format']}, {note['epochs_done']} epoch(s) done) into {out}")
    if note["resumable"]:
        print(f"resume the original run with: --result_dir {out} --resume and the same flags")
    else:
        print(f"not resumable ({note['not_resumable_because']}); fine-tune with --init-from {out}")


if __name__ == "__main__":
    run_cli(main)
