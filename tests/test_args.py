"""Flag parsing: recipes parse, bad combinations give one clear line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from args import build_parser, parse_args
from boostnet.data.datasets import dataset_info
from models.layers import dense_fields
from models.msdnet import MSDNetConfig
from models.ranet import RANetConfig
from models.registry import backbone


def test_defaults_resolve_per_arch():
    assert parse_args([]).model.config.grFactor == (1, 2, 4)
    ranet = parse_args(["--arch", "ranet", "--nBlocks", "2"]).model
    assert ranet.config.grFactor == (4, 2, 1, 1) and ranet.config.scale_list == (1, 2, 3, 3)
    assert ranet.num_exits == 2 + 2 * 3


def test_reweight_list_of_every_exit_is_accepted():
    job = parse_args(["--nBlocks", "4", "--ensemble_reweight", "0.1,0.2,0.3,0.4"])
    assert job.objective.reweight == (0.1, 0.2, 0.3, 0.4)


BAD_FLAGS = [
    (["--grFactor", "1-2-4", "--bnFactor", "1-2"], "--bnFactor"),
    (["--nBlocks", "4", "--ensemble_reweight", "0.5,0.5,0.5"], "--ensemble_reweight"),
    (["--nBlocks", "0"], "--nBlocks"),
    (["--arch", "ranet", "--scale-list", "1-2-3", "--grFactor", "4-2-1-1"], "--scale-list"),
    (["--arch", "resnet"], "--arch"),
    (["--grFactor", "1-x-4"], "--grFactor"),
    (
        ["--arch", "ranet", "--growthRate", "2", "--scale-list", "1-2-3", "--grFactor", "4-2-1"],
        "--compress-factor",
    ),
    (["--grFactor", "1-2", "--bnFactor", "1-2"], "--grFactor"),
    (["--dataset", "imagenet", "--grFactor", "1-2-4", "--bnFactor", "1-2-4"], "--grFactor"),
    (["--arch", "ranet", "--scale-list", "1-2-3-4", "--grFactor", "4-2-1-1"], "--scale-list"),
    (["--num-classes", "2"], "--num-classes describes --dataset folder"),
    (["--dataset", "imagenet", "--image-size", "64"], "--image-size describes --dataset folder"),
    (["--dataset", "folder", "--image-size", "224"], "--dataset folder needs --num-classes"),
    (["--dataset", "folder", "--num-classes", "2"], "--dataset folder needs --image-size"),
    (["--dataset", "folder", "--num-classes", "2", "--image-size", "224", "--val-size", "1.5"], "--val-size"),
    (["--dataset", "folder", "--num-classes", "2", "--image-size", "64"], "--grFactor"),
    (["--recipe", "msdnet_cifar100_fast"], "--recipe"),
]


@pytest.mark.parametrize("argv, flag", BAD_FLAGS)
def test_bad_flags_exit_2_with_one_line(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv, prog="train_cifar100.py")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err


def test_bad_flag_from_a_real_process_has_no_traceback(repo_root):
    proc = subprocess.run(
        [sys.executable, "op_counter.py", "--nBlocks", "0"], cwd=repo_root, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--nBlocks" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_imagenet_defaults_are_the_imagenet_recipes_scales():
    assert parse_args(["--dataset", "imagenet"]).model.config.grFactor == (1, 2, 4, 4)
    ranet = parse_args(["--dataset", "imagenet", "--arch", "ranet"]).model.config
    assert ranet.scale_list == (1, 2, 3, 4) and ranet.grFactor == (4, 2, 2, 1)


SCALE_FLAGS = [
    ("msdnet_ge", ["--base", "1", "--grFactor", f, "--bnFactor", f])
    for f in ("1-2", "1-2-4", "1-2-4-4", "1-2-4-4-4")
] + [
    ("ranet", ["--block-step", "1", "--scale-list", s, "--grFactor", f, "--bnFactor", f])
    for s, f in (("1-2", "2-1"), ("1-2-3", "4-2-1"), ("1-2-3-4", "4-2-2-1"))
]


def unchecked_model(argv: list[str], arch: str, dataset: str) -> torch.nn.Module:
    """The network `argv` describes, its config built straight from the parsed flag values,
    without the checks of the backbone's `configure`."""
    entry = backbone(arch)
    values = vars(build_parser("train", entry=entry).parse_args(argv))
    inputs = dataset_info(dataset).inputs
    factors = {"grFactor": tuple(values["grFactor"]), "bnFactor": tuple(values["bnFactor"])}
    if arch == "ranet":
        config = RANetConfig(
            **dense_fields(values, inputs),
            **factors,
            block_step=values["block_step"],
            scale_list=tuple(values["scale_list"]),
            compress_factor=values["compress_factor"],
        )
    else:
        config = MSDNetConfig(
            **dense_fields(values, inputs),
            **factors,
            base=values["base"],
            prune=values["prune"],
            gradient_rescale=arch == "msdnet_ge",
        )
    return entry.build(config)


@pytest.mark.parametrize("dataset, size", [("cifar100", 32), ("imagenet", 224)])
@pytest.mark.parametrize("arch, flags", SCALE_FLAGS)
def test_scale_counts_are_accepted_exactly_when_the_network_runs(arch, flags, dataset, size):
    argv = [
        "--dataset",
        dataset,
        "--arch",
        arch,
        "--nBlocks",
        "1",
        "--step",
        "1",
        "--nChannels",
        "4",
        "--growthRate",
        "4",
        *flags,
    ]
    images = torch.randn(2, 3, size, size)
    try:
        job = parse_args(argv)
    except SystemExit as rejected:
        assert rejected.code == 2
        model = unchecked_model(argv, arch, dataset).eval()
        with pytest.raises(RuntimeError):
            model(images)
        return
    with torch.no_grad():
        outputs = job.model.build().eval()(images)
    assert [o.shape for o in outputs] == [(2, 1000 if dataset == "imagenet" else 100)] * job.model.num_exits


def test_a_recipe_gives_its_flags_and_typed_flags_override_them():
    job = parse_args(["--recipe", "msdnet_cifar100_budgeted"])
    config = job.model.config
    assert (
        job.data.dataset.name,
        job.model.arch,
        config.nBlocks,
        config.step,
        config.base,
        job.train.use_valid,
    ) == ("cifar100", "msdnet_ge", 6, 2, 4, True)
    assert (job.train.epochs, job.train.lr_milestones, job.objective.reweight) == (300, (150, 225), (0.5,))
    mine = parse_args(
        ["--nBlocks", "4", "--recipe", "msdnet_cifar100_budgeted", "--epochs", "2", "--lr_milestones", "1"]
    )
    assert (mine.model.config.nBlocks, mine.train.epochs, mine.model.config.step) == (4, 2, 2)
    imagenet = parse_args(["--recipe", "ranet_imagenet_budgeted_c32"], dataset="cifar100", epochs=7)
    assert (imagenet.data.dataset.name, imagenet.model.config.nChannels, imagenet.train.epochs) == (
        "imagenet",
        32,
        90,
    )


@pytest.mark.parametrize("size, imagenet_style", [(224, True), (128, True), (32, False)])
def test_a_folder_dataset_gets_its_classes_and_the_stem_its_image_size_calls_for(size, imagenet_style):
    flags = ["--dataset", "folder", "--num-classes", "2", "--image-size", str(size)]
    if size == 128:
        flags += ["--grFactor", "1-2-4", "--bnFactor", "1-2-4"]  # 32x32 after the stem
    model = parse_args(flags + ["--nBlocks", "2", "--nChannels", "4"]).model.build()
    assert model.heads[0].linear.out_features == 2
    stem_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert stem_conv.kernel_size == ((7, 7) if imagenet_style else (3, 3))
    with torch.no_grad():
        assert [tuple(f.shape) for f in model.eval()(torch.zeros(1, 3, size, size))] == [(1, 2)] * 2


@pytest.mark.parametrize(
    "script, flags, foreign",
    [
        ("eval_cifar100.py", ["--evaluate-from", "runs/x", "--lr", "0.1"], "--lr"),
        ("op_counter.py", ["--epochs", "3"], "--epochs"),
        ("train_cifar100.py", ["--budget", "1e6"], "--budget"),
        ("train_imagenet.py", ["--evalmode", "anytime"], "--evalmode"),
        ("scripts/import_checkpoint.py", ["x.pth", "--out", "y", "--real-exit"], "--real-exit"),
    ],
)
def test_each_program_refuses_another_programs_flags_in_one_line(repo_root, script, flags, foreign):
    done = subprocess.run(
        [sys.executable, script, *flags], cwd=repo_root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "unrecognized arguments" in done.stderr and foreign in done.stderr


def test_every_flag_takes_both_separator_spellings_and_no_prefix():
    job = parse_args(
        [
            "--lr-milestones",
            "2,3",
            "--result-dir",
            "x",
            "--lr-gamma",
            "0.5",
            "--weight_decay",
            "0",
            "--max_steps_per_epoch",
            "3",
            "--epochs",
            "4",
        ]
    )
    assert (job.train.lr_milestones, job.run.result_dir, job.train.lr_gamma) == ((2, 3), Path("x"), 0.5)
    assert (job.train.weight_decay, job.train.max_steps_per_epoch) == ((0.0,), 3)
    with pytest.raises(SystemExit):
        parse_args(["--epoch", "5"])


@pytest.mark.parametrize("program", ["train", "evaluate", "costs", "import"])
def test_every_flag_has_a_help_line_with_its_default(program):
    parser = build_parser(program)
    flags = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    assert flags and all(action.help for action in flags)
    assert "(default: 0.1)" in parser.format_help() or program in ("costs", "evaluate")
