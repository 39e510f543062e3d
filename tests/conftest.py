"""Shared test helpers: repo root on sys.path, tiny model flags, one thread per test process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY_MSDNET = [
    "--arch",
    "msdnet_ge",
    "--nBlocks",
    "3",
    "--base",
    "2",
    "--step",
    "1",
    "--nChannels",
    "4",
    "--growthRate",
    "2",
    "--grFactor",
    "1-2-2",
    "--bnFactor",
    "1-2-2",
]
TINY_RANET = [
    "--arch",
    "ranet",
    "--nBlocks",
    "2",
    "--block-step",
    "1",
    "--step",
    "2",
    "--nChannels",
    "4",
    "--growthRate",
    "4",
    "--scale-list",
    "1-2-3",
    "--grFactor",
    "2-1-1",
    "--bnFactor",
    "2-1-1",
]


@pytest.fixture
def one_thread():
    """One intra-op thread: bit-exact comparisons need a fixed count, and tiny models on a busy
    2-core machine lose a lot to more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def repo_root() -> Path:
    return ROOT
