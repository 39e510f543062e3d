"""A backbone and an objective that only this module knows (docs/extending.md, as a specification).

The toy backbone `toyconv_ext` (a conv stem, one conv stage per exit, pooled linear heads) and the
toy objective `rising_ext` (independent exits, exit n's loss weighted n/N) register themselves
here. Every other file of the project is unchanged: the public programs train them, resume them,
evaluate them in both modes at a budget with real early exit, and count their costs.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import eval_cifar100
import op_counter
import train_cifar100
from models.boosting import BoostedNetwork
from models.costs import msdnet_convention
from models.multi_exit import MultiExitNetwork
from models.objectives import Objective, register_objective
from models.registry import Backbone, ConfigError, InputSpec, create_model, register_backbone
from utils.flags import COUNT, Flag

ARCH, LOSS = "toyconv_ext", "rising_ext"


@dataclass(frozen=True)
class ToyConfig:
    """Width of every stage, the number of exits (one per stage), the classes predicted."""

    width: int = 8
    exits: int = 3
    num_classes: int = 10

    @property
    def num_exits(self) -> int:
        return self.exits


class ToyConv(MultiExitNetwork):
    """stem -> (conv stage, pooled linear head) x exits; each stage halves the map."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.num_exits = cfg.exits
        self.stem_conv = nn.Sequential(nn.Conv2d(3, cfg.width, 3, padding=1), nn.ReLU())
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cfg.width, cfg.width, 3, stride=2, padding=1), nn.ReLU())
            for _ in range(cfg.exits)
        )
        self.heads = nn.ModuleList(nn.Linear(cfg.width, cfg.num_classes) for _ in range(cfg.exits))

    def stem(self, x: Tensor) -> Tensor:
        return self.stem_conv(x)

    def advance(self, n: int, features: Tensor) -> Tensor:
        stage = self.stages[n]
        return stage(features)

    def classify(self, n: int, features: Tensor) -> Tensor:
        head = self.heads[n]
        return head(features.mean(dim=(2, 3)))

    def stage_modules(self, n: int) -> list[nn.Module]:
        return [self.stages[n], self.heads[n]] + ([self.stem_conv] if n == 0 else [])


def configure(values: dict[str, Any], inputs: InputSpec) -> ToyConfig:
    if inputs.image_size >> values["toy_exits"] < 1:
        raise ConfigError(
            f"--toy-exits {values['toy_exits']} halves a {inputs.image_size}px image below one pixel"
        )
    return ToyConfig(values["toy_width"], values["toy_exits"], inputs.num_classes)


class RisingLosses(nn.Module):
    """Per-exit cross-entropy, exit n (1-based) weighted n/N: later exits matter more."""

    def __init__(self, num_exits: int):
        super().__init__()
        self.register_buffer("weights", torch.arange(1, num_exits + 1) / num_exits)

    def forward(self, outputs: Sequence[Tensor], target: Tensor) -> tuple[Tensor, Tensor]:
        losses = torch.stack([F.cross_entropy(out, target) for out in outputs])
        return (losses * self.weights).sum(), losses.detach()


register_backbone(
    Backbone(
        ARCH,
        "a toy CNN (tests/test_extending.py)",
        (
            Flag(("--toy-width",), "channels of every stage", 8, int, range=COUNT),
            Flag(("--toy-exits",), "stages, one exit after each", 3, int, range=COUNT),
        ),
        configure,
        ToyConv,
        msdnet_convention,
    )
)
register_objective(
    Objective(
        LOSS,
        "independent exits, exit n's loss weighted n/N",
        lambda backbone, config, exits: BoostedNetwork(backbone, None),
        lambda config, exits: RisingLosses(exits),
    )
)

TRAIN = [
    "--dataset",
    "digits",
    "--arch",
    ARCH,
    "--toy-width",
    "8",
    "--toy-exits",
    "3",
    "--loss",
    LOSS,
    "--device",
    "cpu",
    "--workers",
    "0",
    "--batch-size",
    "64",
    "--lr",
    "0.05",
    "--lr_milestones",
    "2",
    "--use-valid",
    "--seed",
    "1",
]


def test_a_network_builds_in_three_lines_without_a_parser():
    spec = create_model(ARCH, InputSpec(image_size=32, num_classes=10), toy_width=4)
    network = spec.build()
    assert [tuple(out.shape) for out in network(torch.zeros(2, 3, 32, 32))] == [(2, 10)] * 3


def test_its_config_refuses_what_it_cannot_build():
    with pytest.raises(ConfigError, match="--toy-exits 6"):
        create_model(ARCH, InputSpec(image_size=32, num_classes=10), toy_exits=6)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """Two epochs, then resumed to three, through train_cifar100.py's main."""
    run = tmp_path_factory.mktemp("toy") / "run"
    train_cifar100.main([*TRAIN, "--epochs", "2", "--result_dir", str(run)])
    train_cifar100.main([*TRAIN, "--epochs", "3", "--result_dir", str(run), "--resume"])
    return run


def test_training_and_resume_record_the_new_backbone_and_objective(trained_run, one_thread):
    config = json.loads((trained_run / "config.json").read_text())
    checkpoint = torch.load(trained_run / "model_latest.pth", weights_only=True)
    assert (config["arch"], config["loss"], config["toy_width"]) == (ARCH, LOSS, 8)
    assert checkpoint["epoch"] == 3
    assert torch.equal(checkpoint["objective"]["weights"], torch.tensor([1 / 3, 2 / 3, 1.0]))


def test_costs_rise_exit_by_exit(trained_run, capsys):
    op_counter.main(["--run-dir", str(trained_run), "--json"])
    macs = json.loads(capsys.readouterr().out)["macs"]
    assert len(macs) == 3 and macs[0] < macs[1] < macs[2]


def test_both_evaluation_modes_and_real_early_exit_agree_with_the_simulation(trained_run, one_thread):
    spec = create_model(ARCH, InputSpec(image_size=32, num_classes=10), toy_width=8)
    macs = spec.backbone.cost(spec.build(), spec.inputs).macs
    eval_cifar100.main(
        [
            "--evaluate-from",
            str(trained_run),
            "--evalmode",
            "both",
            "--budget",
            str((macs[0] + macs[-1]) / 2),
            "--real-exit",
            "--eval-batch-size",
            "64",
        ]
    )
    anytime = json.loads((trained_run / "anytime.json").read_text())
    budgeted = json.loads((trained_run / "budgeted.json").read_text())
    real = json.loads((trained_run / "real_exit.json").read_text())
    assert (anytime["arch"], anytime["loss"], len(anytime["exits"])) == (ARCH, LOSS, 3)
    assert len(budgeted["levels"]) == 39
    assert real["exit_counts"] == real["simulated_exit_counts"]
    assert real["accuracy"] == real["simulated_accuracy"]


def test_no_other_file_of_the_project_knows_them(repo_root):
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=repo_root, capture_output=True, text=True, check=True
    ).stdout.split()
    mentions = [
        name
        for name in tracked
        if name != "tests/test_extending.py"
        and any(word in (repo_root / name).read_text(errors="ignore") for word in (ARCH, LOSS))
    ]
    assert mentions == []
