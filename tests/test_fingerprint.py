"""scripts/fingerprint.py and utils/machine.py: a fingerprint says on what machine it was computed,
and a comparison across machines says why it may differ."""

from __future__ import annotations

import importlib.util
import platform
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from utils.errors import UserError
from utils.machine import cpu_name

spec = importlib.util.spec_from_file_location("fingerprint_script", ROOT / "scripts" / "fingerprint.py")
fingerprint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fingerprint)

HERE = {"cpu": "AMD EPYC", "cpu_capability": "AVX2", "python": "3.11.2", "torch": "2.14.1", "numpy": "2.4.6"}
THERE = {**HERE, "cpu": "Intel Xeon", "cpu_capability": "AVX512"}
RUNS = {"joint": {"model": {"w": "ab12"}, "epoch": 3}}
CHANGED = {"joint": {"model": {"w": "cd34"}, "epoch": 3}}


def test_cpu_name_is_the_model_name_of_proc_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n")
    assert cpu_name(cpuinfo) == "AMD EPYC 7B13"


def test_cpu_name_without_proc_cpuinfo_is_what_the_platform_reports(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "processor", lambda: "Apple M2")
    assert cpu_name(tmp_path / "absent") == "Apple M2"


def test_the_environment_names_the_cpu_and_the_kernels_torch_dispatches_to():
    found = fingerprint.environment()
    assert set(found) == set(HERE)
    assert found["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert found["torch"] == str(torch.__version__)


def test_identical_runs_compare_equal_whatever_the_machines():
    recorded = {"environment": THERE, "runs": RUNS}
    assert fingerprint.comparison(recorded, {"environment": HERE, "runs": RUNS}, "old.json") == []


def test_a_difference_on_the_same_machine_is_listed_without_a_note():
    recorded = {"environment": HERE, "runs": RUNS}
    lines = fingerprint.comparison(recorded, {"environment": HERE, "runs": CHANGED}, "old.json")
    assert lines == ["/joint/model/w: recorded 'ab12', found 'cd34'"]


def test_a_difference_across_machines_is_prefixed_by_both_machines_and_the_way_out():
    recorded = {"environment": THERE, "runs": RUNS}
    note, *rest = fingerprint.comparison(recorded, {"environment": HERE, "runs": CHANGED}, "old.json")
    assert note.startswith("note: old.json was computed on Intel Xeon (AVX512), Python 3.11.2")
    assert "this is AMD EPYC (AVX2)" in note and "--against COMMIT" in note
    assert rest == ["/joint/model/w: recorded 'ab12', found 'cd34'"]


def test_a_file_recorded_before_environments_were_kept_holds_the_runs_alone():
    note, *rest = fingerprint.comparison(RUNS, {"environment": HERE, "runs": CHANGED}, "old.json")
    assert "computed on an unrecorded machine" in note and len(rest) == 1
    assert fingerprint.comparison(RUNS, {"environment": HERE, "runs": RUNS}, "old.json") == []


def test_against_an_unknown_commit_is_one_line_and_leaves_no_worktree():
    before = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True)
    with pytest.raises(UserError, match=r"^--against no-such-commit: no worktree of it can be made \("):
        with fingerprint.worktree("no-such-commit"):
            pass
    after = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True)
    assert after.stdout == before.stdout


def test_check_of_a_missing_file_is_refused_before_any_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "scripts/fingerprint.py", "--check", str(tmp_path / "none.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == f"error: --check: no fingerprint file at {tmp_path / 'none.json'}\n"
