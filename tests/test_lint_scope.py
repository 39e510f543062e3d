"""The lint and format check (.ci/run) reads every tracked Python file: pyproject.toml's excludes
name only the top-level output folders, not library folders of the same name (boostnet/data,
boostnet/runs)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def ruff() -> str:
    """The ruff the test command installed beside this Python, else one on the PATH."""
    beside = Path(sys.executable).with_name("ruff")
    found = str(beside) if beside.is_file() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (scripts/setup_env.sh installs it)")
    return found


def test_ruff_reads_every_tracked_python_file():
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True)
    read = subprocess.run([ruff(), "check", "--show-files", "."], cwd=ROOT, capture_output=True, text=True)
    shown = {Path(line).resolve() for line in read.stdout.splitlines() if line.endswith(".py")}
    assert tracked.returncode == 0 and tracked.stdout, tracked.stderr
    unread = [name for name in tracked.stdout.split() if (ROOT / name).resolve() not in shown]
    assert unread == []
