"""Flag parsing: recipes parse, bad combinations give one clear line and exit status 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

from args import num_exits, parse_args


def test_defaults_resolve_per_arch():
    assert parse_args([]).grFactor == [1, 2, 4]
    ranet = parse_args(["--arch", "ranet", "--nBlocks", "2"])
    assert ranet.grFactor == [4, 2, 1, 1] and ranet.scale_list == [1, 2, 3, 3]
    assert num_exits(ranet) == 2 + 2 * 3


def test_reweight_list_of_every_exit_is_accepted():
    args = parse_args(["--nBlocks", "4", "--ensemble_reweight", "0.1,0.2,0.3,0.4"])
    assert args.ensemble_reweight == [0.1, 0.2, 0.3, 0.4]


BAD_FLAGS = [
    (["--grFactor", "1-2-4", "--bnFactor", "1-2"], "--bnFactor"),
    (["--nBlocks", "4", "--ensemble_reweight", "0.5,0.5,0.5"], "--ensemble_reweight"),
    (["--nBlocks", "0"], "--nBlocks"),
    (["--arch", "ranet", "--scale-list", "1-2-3", "--grFactor", "4-2-1-1"], "--scale-list"),
    (["--arch", "resnet"], "--arch"),
    (["--grFactor", "1-x-4"], "--grFactor"),
    (["--arch", "ranet", "--growthRate", "2", "--scale-list", "1-2-3", "--grFactor", "4-2-1"],
     "--compress-factor"),
]


@pytest.mark.parametrize("argv, flag", BAD_FLAGS)
def test_bad_flags_exit_2_with_one_line(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv, prog="train_cifar100.py")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err


def test_bad_flag_from_a_real_process_has_no_traceback(repo_root):
    proc = subprocess.run([sys.executable, "op_counter.py", "--nBlocks", "0"], cwd=repo_root,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--nBlocks" in proc.stderr
    assert proc.stderr.count("\n") == 1
