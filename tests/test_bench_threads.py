"""scripts/bench_threads.py: the thread-count comparison behind `--threads`'s default writes its
medians, the fastest count and the machine's load (no timing is asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from scripts.bench_threads import main
from tests.conftest import TINY_MSDNET


def test_every_count_is_timed_and_the_fastest_named(tmp_path):
    out = tmp_path / "threads.json"
    flags = " ".join(["--dataset", "digits", "--batch-size", "8", *TINY_MSDNET])
    threads = torch.get_num_threads()
    try:
        main(["--flags", flags, "--threads", "1", "2", "--steps", "1", "--warmup", "0", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    row = json.loads(out.read_text())["results"][0]
    assert set(row["ms_per_step"]) == {"1", "2"} and all(ms > 0 for ms in row["ms_per_step"].values())
    assert row["fastest_threads"] == min((ms, int(n)) for n, ms in row["ms_per_step"].items())[1]
    assert row["batch"] == 8 and "load_average_before" in row


def test_without_a_model_it_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--steps", "1"])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "give --recipes NAME... or --flags 'MODEL FLAGS'" in lines[0]
