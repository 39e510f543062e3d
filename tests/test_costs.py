"""The published per-exit MACs and params (docs/costs.md), through op_counter.py."""

from __future__ import annotations

import json
import subprocess
import sys

from args import parse_args

MSDNET_C100 = [
    "--arch",
    "msdnet_ge",
    "--nBlocks",
    "10",
    "--stepmode",
    "even",
    "--step",
    "2",
    "--base",
    "4",
    "--nChannels",
    "16",
]
MSDNET_IMAGENET = [
    "--dataset",
    "imagenet",
    "--arch",
    "msdnet_ge",
    "--nBlocks",
    "5",
    "--stepmode",
    "even",
    "--step",
    "7",
    "--base",
    "7",
    "--nChannels",
    "32",
    "--growthRate",
    "16",
    "--grFactor",
    "1-2-4-4",
    "--bnFactor",
    "1-2-4-4",
]


def test_msdnet_cifar100_golden_through_cli(repo_root):
    out = subprocess.run(
        [sys.executable, "op_counter.py", *MSDNET_C100, "--json"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs = json.loads(out)
    assert costs["macs"] == [
        15140452,
        25505992,
        37788460,
        52061840,
        62181620,
        74070872,
        87729596,
        100038944,
        110121860,
        121679336,
    ]
    assert costs["params"] == [
        433876,
        876792,
        1381628,
        1827836,
        2279536,
        2793444,
        3369560,
        3864948,
        4378040,
        4955644,
    ]


def costs_of(job):
    """The per-exit costs of the job's model, by its backbone's convention."""
    return job.model.backbone.cost(job.model.build(), job.model.inputs)


def test_msdnet_imagenet_golden():
    costs = costs_of(parse_args(MSDNET_IMAGENET))
    assert costs.macs == [615692968, 1436392016, 2283210200, 2967421456, 3253794488]
    assert costs.params == [8759240, 20154896, 31730040, 41860288, 62314472]
    assert costs.true_macs == costs.macs  # MSDNet has no interpolation


def test_counting_twice_gives_the_same_answer():
    job = parse_args(MSDNET_C100[:4] + ["--nBlocks", "2"])
    first, second = costs_of(job), costs_of(job)
    assert first == second
    assert first.macs[0] < first.macs[1]


def test_readable_table(repo_root):
    out = subprocess.run(
        [sys.executable, "op_counter.py", *MSDNET_C100],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.strip().splitlines()
    assert "MMac" in lines[0] and "true" in lines[0] and "params" in lines[0]
    assert len(lines) == 11
    assert lines[1].split()[:2] == ["1", "15.14"]
