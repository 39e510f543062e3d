"""Flag parsing: recipes parse, bad combinations give one clear line and exit status 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

import torch

from args import build_parser, num_exits, parse_args, resolve_defaults
from models import build_model


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
    (["--grFactor", "1-2", "--bnFactor", "1-2"], "--grFactor"),
    (["--dataset", "imagenet", "--grFactor", "1-2-4", "--bnFactor", "1-2-4"], "--grFactor"),
    (["--arch", "ranet", "--scale-list", "1-2-3-4", "--grFactor", "4-2-1-1"], "--scale-list"),
    (["--num-classes", "2"], "--num-classes describes --dataset folder"),
    (["--dataset", "imagenet", "--image-size", "64"], "--image-size describes --dataset folder"),
    (["--dataset", "folder", "--image-size", "224"], "--dataset folder needs --num-classes"),
    (["--dataset", "folder", "--num-classes", "2"], "--dataset folder needs --image-size"),
    (["--dataset", "folder", "--num-classes", "2", "--image-size", "224", "--val-size", "1.5"],
     "--val-size"),
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
    proc = subprocess.run([sys.executable, "op_counter.py", "--nBlocks", "0"], cwd=repo_root,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--nBlocks" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_imagenet_defaults_are_the_imagenet_recipes_scales():
    assert parse_args(["--dataset", "imagenet"]).grFactor == [1, 2, 4, 4]
    ranet = parse_args(["--dataset", "imagenet", "--arch", "ranet"])
    assert ranet.scale_list == [1, 2, 3, 4] and ranet.grFactor == [4, 2, 2, 1]


SCALE_FLAGS = ([("msdnet_ge", ["--grFactor", f, "--bnFactor", f]) for f in ("1-2", "1-2-4", "1-2-4-4",
                                                                             "1-2-4-4-4")]
               + [("ranet", ["--scale-list", s, "--grFactor", f, "--bnFactor", f])
                  for s, f in (("1-2", "2-1"), ("1-2-3", "4-2-1"), ("1-2-3-4", "4-2-2-1"))])


@pytest.mark.parametrize("dataset, size", [("cifar100", 32), ("imagenet", 224)])
@pytest.mark.parametrize("arch, flags", SCALE_FLAGS)
def test_scale_counts_are_accepted_exactly_when_the_network_runs(arch, flags, dataset, size):
    argv = ["--dataset", dataset, "--arch", arch, "--nBlocks", "1", "--block-step", "1", "--step",
            "1", "--base", "1", "--nChannels", "4", "--growthRate", "4", *flags]
    images = torch.randn(2, 3, size, size)
    try:
        args = parse_args(argv)
    except SystemExit as rejected:
        assert rejected.code == 2
        model = build_model(resolve_defaults(build_parser().parse_args(argv))).eval()
        with pytest.raises(RuntimeError):
            model(images)
        return
    with torch.no_grad():
        outputs = build_model(args).eval()(images)
    assert [o.shape for o in outputs] == [(2, 1000 if dataset == "imagenet" else 100)] * num_exits(args)


def test_a_recipe_gives_its_flags_and_typed_flags_override_them():
    args = parse_args(["--recipe", "msdnet_cifar100_budgeted"])
    assert (args.dataset, args.arch, args.nBlocks, args.step, args.base, args.use_valid) == (
        "cifar100", "msdnet_ge", 6, 2, 4, True)
    assert (args.epochs, args.lr_milestones, args.ensemble_reweight) == (300, [150, 225], [0.5])
    mine = parse_args(["--nBlocks", "4", "--recipe", "msdnet_cifar100_budgeted", "--epochs", "2",
                       "--lr_milestones", "1"])
    assert (mine.nBlocks, mine.epochs, mine.step) == (4, 2, 2)
    imagenet = parse_args(["--recipe", "ranet_imagenet_budgeted_c32"], dataset="cifar100", epochs=7)
    assert (imagenet.dataset, imagenet.nChannels, imagenet.epochs) == ("imagenet", 32, 90)


@pytest.mark.parametrize("size, imagenet_style", [(224, True), (128, True), (32, False)])
def test_a_folder_dataset_gets_its_classes_and_the_stem_its_image_size_calls_for(size, imagenet_style):
    flags = ["--dataset", "folder", "--num-classes", "2", "--image-size", str(size)]
    if size == 128:
        flags += ["--grFactor", "1-2-4", "--bnFactor", "1-2-4"]  # 32x32 after the stem
    model = build_model(parse_args(flags + ["--nBlocks", "2", "--nChannels", "4"]))
    assert model.heads[0].linear.out_features == 2
    stem_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert stem_conv.kernel_size == ((7, 7) if imagenet_style else (3, 3))
    with torch.no_grad():
        assert [tuple(f.shape) for f in model.eval()(torch.zeros(1, 3, size, size))] == [(1, 2)] * 2


@pytest.mark.parametrize("script, flags, foreign", [
    ("eval_cifar100.py", ["--evaluate-from", "runs/x", "--lr", "0.1"], "--lr"),
    ("op_counter.py", ["--epochs", "3"], "--epochs"),
    ("train_cifar100.py", ["--budget", "1e6"], "--budget"),
    ("train_imagenet.py", ["--evalmode", "anytime"], "--evalmode"),
    ("scripts/import_checkpoint.py", ["x.pth", "--out", "y", "--real-exit"], "--real-exit"),
])
def test_each_program_refuses_another_programs_flags_in_one_line(repo_root, script, flags, foreign):
    done = subprocess.run([sys.executable, script, *flags], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "unrecognized arguments" in done.stderr and foreign in done.stderr


def test_every_flag_takes_both_separator_spellings_and_no_prefix():
    args = parse_args(["--lr-milestones", "2,3", "--result-dir", "x", "--lr-gamma", "0.5",
                       "--weight_decay", "0", "--max_steps_per_epoch", "3", "--epochs", "4"])
    assert (args.lr_milestones, args.result_dir, args.lr_gamma) == ([2, 3], "x", 0.5)
    assert (args.weight_decay, args.max_steps_per_epoch) == ([0.0], 3)
    with pytest.raises(SystemExit):
        parse_args(["--epoch", "5"])


@pytest.mark.parametrize("program", ["train", "evaluate", "costs", "import"])
def test_every_flag_has_a_help_line_with_its_default(program):
    parser = build_parser(program)
    flags = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    assert flags and all(action.help for action in flags)
    assert "(default: 0.1)" in parser.format_help() or program in ("costs", "evaluate")
