"""The small datasets shipped in this folder, by file (torch-free, so the scripts that make them
answer --help at once)."""

from __future__ import annotations

from pathlib import Path

FASHION_MNIST_MINI_FILE = Path(__file__).with_name("fashion_mnist_mini.npz")
DIGITS_FILE = Path(__file__).with_name("digits.npz")
