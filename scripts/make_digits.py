"""Regenerate `boostnet/data/digits.npz` from scikit-learn's bundled handwritten digits (run once).

The file keeps the original 8x8 images (values 0..16) as uint8 plus labels, so it stays
small; `boostnet.data.loaders` upsamples them to 32x32x3 at load time.

    python scripts/make_digits.py

Only this maintainer's script needs scikit-learn, so it is in no requirements file (the
committed digits.npz is all that training reads); without it the script stops with a one-line
error saying `pip install scikit-learn`.
"""

import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also run as a file

from boostnet.data.embedded import DIGITS_FILE  # noqa: E402
from utils.cli import OneLineParser  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Write the 1,797 digits and their labels to DIGITS_FILE."""
    OneLineParser(
        prog="python scripts/make_digits.py",
        description=__doc__.splitlines()[0],
        epilog=f"Writes {DIGITS_FILE}; needs scikit-learn.",
    ).parse_args(argv)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError(
            "scripts/make_digits.py needs scikit-learn, which the project does not "
            "require: pip install scikit-learn"
        ) from None
    digits = load_digits()
    np.savez_compressed(
        DIGITS_FILE, images=digits.images.astype(np.uint8), labels=digits.target.astype(np.uint8)
    )
    print(f"wrote {DIGITS_FILE} ({DIGITS_FILE.stat().st_size} bytes)")


if __name__ == "__main__":
    run_cli(main)
