"""Regenerate `utils/digits.npz` from scikit-learn's bundled handwritten digits (run once).

The file keeps the original 8x8 images (values 0..16) as uint8 plus labels, so it stays
small; `utils.data` upsamples them to 32x32x3 at load time.

    python -m utils.make_digits
"""
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

DIGITS_FILE = Path(__file__).with_name("digits.npz")


def main() -> None:
    """Write the 1,797 digits and their labels to DIGITS_FILE."""
    digits = load_digits()
    np.savez_compressed(DIGITS_FILE, images=digits.images.astype(np.uint8),
                        labels=digits.target.astype(np.uint8))
    print(f"wrote {DIGITS_FILE} ({DIGITS_FILE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
