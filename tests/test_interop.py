"""Checkpoints of the official BoostNet code and of MSDNet-PyTorch: names, import, safe loading,
refusals, evaluation, fine-tuning and resuming of imported runs.

The foreign files are built here: our model's tensors under the original names (checked
against name lists read off files those codebases wrote, tests/foreign_keys/*.keys.tsv), in the
original nesting, with non-trivial batch-norm statistics.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import boostnet.evaluation.evaluator as evaluator
import utils.plots as plots
from args import parse_args, parse_evaluation_args
from boostnet.data.loaders import build_splits, eval_loader
from boostnet.evaluation.results import compute_logits
from boostnet.training.optim import parameter_groups
from models.foreign import original_names
from models.multi_exit import MultiExitNetwork, param_groups_by_stage
from tests.conftest import ROOT, TINY_MSDNET, TINY_RANET
from train_cifar100 import main as train_main
from utils.checkpoint import load_checkpoint
from utils.distributed import DistInfo
from utils.errors import UserError, run_cli

DATA = ROOT / "tests" / "foreign_keys"
RECORDED = {
    "msdnet_ge": "boostnet_msdnet_ge_cifar100",
    "ranet": "boostnet_ranet_cifar100",
    "imagenet": "msdnet_pytorch_imagenet",
}
DIGITS = ["--dataset", "digits", "--workers", "0", "--device", "cpu"]
SHORT = DIGITS + ["--max-steps-per-epoch", "3", "--batch-size", "16", "--log-interval", "3"]
SOURCE_EPOCH = 4  # 0-based index of the last finished epoch, as both originals store it

spec = importlib.util.spec_from_file_location("import_checkpoint", ROOT / "scripts" / "import_checkpoint.py")
import_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_script)


pytestmark = pytest.mark.usefixtures("one_thread")


def recorded(name: str) -> tuple[list[str], list[tuple[str, list[int]]]]:
    """(model flags, [(key, shape)] in the file's order) of one recorded foreign checkpoint."""
    lines = (DATA / f"{RECORDED[name]}.keys.tsv").read_text().splitlines()
    flags = lines[0].split("model flags (as this project spells them): ")[1].split()
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    return flags, [(key, json.loads(shape)) for key, shape in rows]


def randomised(model: MultiExitNetwork, seed: int = 1) -> MultiExitNetwork:
    """Every BN with random affine parameters and running statistics, so a misplaced one shows."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            shape = module.running_mean.shape
            module.weight.data = 1 + 0.2 * torch.randn(shape, generator=generator)
            module.bias.data = 0.1 * torch.randn(shape, generator=generator)
            module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
            module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=generator)))
    return model.eval()


def foreign_weights(
    model: MultiExitNetwork, order: list[str] | None = None, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """The model's tensors under the original names (in `order` when given)."""
    names = original_names(model)
    weights = {names[key]: tensor.clone() for key, tensor in model.state_dict().items()}
    order = order or list(weights)
    return {prefix + key: weights[key] for key in order}


def foreign_optimizer(
    model: MultiExitNetwork, weights: dict[str, torch.Tensor], per_exit: bool, prefix: str = ""
) -> tuple[dict, dict[str, torch.Tensor]]:
    """An SGD state dict numbered as the original's (per-exit groups with NumPy weight decays,
    or one group in module order), and its momentum buffers by original name."""
    names = original_names(model)
    parameter_name = {id(p): prefix + names[key] for key, p in model.named_parameters()}
    if per_exit:
        groups = [[parameter_name[id(p)] for p in stage] for stage in param_groups_by_stage(model)]
        decays = np.linspace(1e-4, 1e-4, len(groups))  # NumPy float64, as the original has them
    else:
        wanted = set(parameter_name.values())
        groups, decays = [[key for key in weights if key in wanted]], [1e-4]
    buffers = {name: torch.randn(weights[name].shape) for group in groups for name in group}
    ids = iter(range(len(buffers)))
    param_groups, state = [], {}
    for group, decay in zip(groups, decays):
        indices = [next(ids) for _ in group]
        state.update({i: {"momentum_buffer": buffers[name]} for i, name in zip(indices, group)})
        param_groups.append(
            {
                "lr": 0.1,
                "momentum": 0.9,
                "dampening": 0,
                "weight_decay": decay,
                "nesterov": False,
                "params": indices,
            }
        )
    return {"state": state, "param_groups": param_groups}, buffers


def save_boostnet(path: Path, weights: dict, optimizer: dict) -> Path:
    torch.save(
        {
            "epoch": SOURCE_EPOCH,
            "state_dict": {"model": weights},
            "optimizer": optimizer,
            "scheduler": {"milestones": {150: 1, 225: 1}, "last_epoch": SOURCE_EPOCH + 1},
        },
        path,
    )
    return path


def save_msdnet_pytorch(path: Path, weights: dict, optimizer: dict) -> Path:
    torch.save(
        {
            "epoch": SOURCE_EPOCH,
            "arch": "msdnet",
            "state_dict": weights,
            "best_prec1": 12.5,
            "optimizer": optimizer,
        },
        path,
    )
    return path


def build_model(flags: list[str]) -> MultiExitNetwork:
    """A freshly initialised model of the training flags `flags`."""
    return parse_args(flags).model.build()


def evaluator_main(argv) -> None:
    """What eval_cifar100.py runs (without its CIFAR-100 default): parse, then evaluate."""
    evaluator.evaluate(parse_evaluation_args(argv, prog="eval_cifar100.py"))


def run_import(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(import_script.main, list(argv))
    return exit_info.value.code


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def logits(model: MultiExitNetwork, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model.eval()(images)


@pytest.mark.parametrize("name", RECORDED)
def test_original_names_reproduce_the_recorded_files(name):
    flags, rows = recorded(name)
    model = build_model(flags)
    names = original_names(model)
    prefix = "module." if name == "imagenet" else ""
    ours = [(prefix + names[key], list(t.shape)) for key, t in model.state_dict().items()]
    assert sorted(ours) == sorted(rows)
    if name == "ranet":  # its file order differs from ours: pairing by position would fail
        assert ours != rows and rows[-1][0].startswith("FirstLayer.")
    else:
        assert ours == rows


CASES = {  # name: (recorded configuration, writer, per-exit optimiser groups, key prefix)
    "msdnet_ge-boostnet": ("msdnet_ge", save_boostnet, True, ""),
    "ranet-boostnet": ("ranet", save_boostnet, False, ""),
    "imagenet-msdnet_pytorch": ("imagenet", save_msdnet_pytorch, False, "module."),
    "imagenet-boostnet-ddp": ("imagenet", save_boostnet, True, "module."),
}


@pytest.mark.parametrize("case", CASES)
def test_import_gives_identical_logits_and_the_original_run_state(case, tmp_path):
    config, save, per_exit, prefix = CASES[case]
    flags, rows = recorded(config)
    source_model = randomised(build_model(flags))
    order = [key.removeprefix("module.") for key, _ in rows]
    weights = foreign_weights(source_model, order, prefix)
    optimizer, buffers = foreign_optimizer(source_model, weights, per_exit, prefix)
    source = save(tmp_path / "source.pth", weights, optimizer)
    out = tmp_path / "run"
    if per_exit:  # the official MSDNet's decays come as NumPy float64
        assert isinstance(optimizer["param_groups"][0]["weight_decay"], np.float64)
    assert run_import(str(source), "--out", str(out), *flags) == 0

    imported = build_model(flags)
    imported.load_state_dict(load_checkpoint(out / "model_best.pth")["model"])
    size = 224 if config == "imagenet" else 32
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    for ours, theirs in zip(logits(imported, images), logits(source_model, images), strict=True):
        assert torch.equal(ours, theirs)

    note = json.loads((out / "imported_from.json").read_text())
    assert note["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert note["epochs_done"] == SOURCE_EPOCH + 1 and note["resumable"]
    assert json.loads((out / "config.json").read_text())["arch"] == parse_args(flags).model.arch
    latest = load_checkpoint(out / "model_latest.pth")
    assert latest["epoch"] == SOURCE_EPOCH + 1
    assert latest["scheduler"]["last_epoch"] == SOURCE_EPOCH + 1
    names = original_names(imported)
    key_of = {id(p): key for key, p in imported.named_parameters()}
    job = parse_args(flags)
    groups = parameter_groups(imported, job.train.weight_decay, job.model.backbone.per_exit_weight_decay)
    ordered = [key_of[id(p)] for group in groups for p in group["params"]]
    state = latest["optimizer"]["state"]
    assert len(ordered) == len(state) == len(buffers)
    for i, key in enumerate(ordered):  # our optimiser numbers parameters group by group
        assert torch.equal(state[i]["momentum_buffer"], buffers[prefix + names[key]])


def tiny_source(
    tmp_path: Path, arch_flags: list[str], per_exit: bool, seed: int = 1
) -> tuple[Path, MultiExitNetwork, list[str]]:
    """A tiny digits model saved in the official BoostNet layout, its model and its flags."""
    flags = arch_flags + DIGITS
    model = randomised(build_model(flags), seed)
    weights = foreign_weights(model)
    optimizer, _ = foreign_optimizer(model, weights, per_exit)
    return save_boostnet(tmp_path / "source.pth", weights, optimizer), model, flags


class NumpyOnePickler(pickle._Pickler):
    """Pickles NumPy scalars under NumPy 1's module name, as files written with NumPy 1 have them."""

    def save_global(self, obj, name=None):
        if obj is np._core.multiarray.scalar:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


class NumpyOnePickle:
    Pickler = NumpyOnePickler
    Unpickler = pickle.Unpickler


def test_numpy_scalars_load_under_numpy_1_and_2_names(tmp_path):
    for name, module in (("numpy2.pth", pickle), ("numpy1.pth", NumpyOnePickle)):
        torch.save(
            {"model": {}, "decay": np.float64(1e-4), "step": np.int64(3)},
            tmp_path / name,
            pickle_module=module,
            _use_new_zipfile_serialization=True,
        )
        loaded = load_checkpoint(tmp_path / name)
        assert loaded["decay"] == 1e-4 and type(loaded["decay"]) is np.float64
        assert loaded["step"] == 3
    assert b"numpy.core.multiarray" in (tmp_path / "numpy1.pth").read_bytes()


class WritesMarker:
    """Unpickling this calls open(marker, 'w'): a stand-in for any code a pickle could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_file_whose_unpickling_runs_code_is_refused_and_the_code_does_not_run(tmp_path, capsys):
    marker = tmp_path / "marker"
    source = tmp_path / "evil.pth"
    torch.save(
        {"epoch": 0, "state_dict": {"model": {"w": torch.zeros(1)}}, "optimizer": WritesMarker(marker)},
        source,
    )
    assert not marker.exists()
    assert run_import(str(source), "--out", str(tmp_path / "run"), *TINY_MSDNET, *DIGITS) == 2
    message = one_line_error(capsys)
    assert str(source) in message and "open" in message and "refused" in message
    assert not marker.exists() and not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="open"):  # the evaluator refuses it the same way
        load_checkpoint(source, "--evaluate-from")
    assert not marker.exists()


@pytest.mark.parametrize(
    "wrong, fragment",
    [
        (["--growthRate", "4"], "has shape"),
        (
            ["--nChannels", "8"],
            "blocks.0.0.layers.0.net.0.weight has shape (4, 3, 3, 3) in the checkpoint but (8, 3, 3, 3)",
        ),
        (["--nBlocks", "4"], "blocks.3."),
        (
            ["--dataset", "cifar100"],
            "classifier.0.linear.weight has shape (10, 128) in the checkpoint but (100, 128)",
        ),
        (["--grFactor", "1-2-4", "--bnFactor", "1-2-4"], "has shape"),
    ],
)
def test_flags_that_do_not_fit_the_file_name_the_first_misfit(wrong, fragment, tmp_path, capsys):
    source, _, flags = tiny_source(tmp_path, TINY_MSDNET, per_exit=True)
    assert run_import(str(source), "--out", str(tmp_path / "run"), *flags, *wrong) == 2
    assert fragment in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_ranet_misfits_and_the_wrong_backbone(tmp_path, capsys):
    source, _, flags = tiny_source(tmp_path, TINY_RANET, per_exit=False)
    out = str(tmp_path / "run")
    for wrong in (
        ["--step", "1"],
        ["--block-step", "2"],
        ["--scale-list", "1-2-3-3", "--grFactor", "2-1-1-1", "--bnFactor", "2-1-1-1"],
    ):
        assert run_import(str(source), "--out", out, *flags, *wrong) == 2
        message = one_line_error(capsys)
        assert "does not fit the model these flags describe" in message
        assert re.search(r"layer (FirstLayer|scale_flows|classifier)\.\S+ (has shape|\()", message)
    assert run_import(str(source), "--out", out, *TINY_MSDNET, *DIGITS) == 2
    assert "holds a ranet (keys scale_flows.*, FirstLayer.*)" in one_line_error(capsys)
    msdnet_source, _, _ = tiny_source(tmp_path / "..", TINY_MSDNET, per_exit=True)
    assert run_import(str(msdnet_source), "--out", out, *flags) == 2
    assert "holds a msdnet (keys blocks.*, classifier.*) but --arch ranet" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_truncated_unknown_and_own_files_are_one_line_errors(tmp_path, capsys):
    source, _, flags = tiny_source(tmp_path, TINY_MSDNET, per_exit=True)
    out = str(tmp_path / "run")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(source.read_bytes()[:2000])
    assert run_import(str(truncated), "--out", out, *flags) == 2
    assert "truncated.pth is not a readable checkpoint" in one_line_error(capsys)

    unknown = tmp_path / "unknown.pth"
    torch.save({"weights": {"w": torch.zeros(1)}}, unknown)
    assert run_import(str(unknown), "--out", out, *flags) == 2
    message = one_line_error(capsys)
    assert "unknown.pth is in no checkpoint format" in message
    assert "official BoostNet" in message and "MSDNet-PyTorch" in message

    ours = tmp_path / "ours.pth"
    torch.save({"model": {"w": torch.zeros(1)}}, ours)
    assert run_import(str(ours), "--out", out, *flags) == 2
    assert "already a checkpoint of this project" in one_line_error(capsys)

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("earlier results")
    assert run_import(str(source), "--out", out, *flags) == 2
    assert "--out" in one_line_error(capsys)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["keep.txt"]


def test_evaluating_a_foreign_file_points_to_the_importer(tmp_path, capsys):
    source, _, _ = tiny_source(tmp_path, TINY_MSDNET, per_exit=True)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(evaluator_main, ["--evaluate-from", str(source), *TINY_MSDNET, *DIGITS])
    assert exit_info.value.code == 2
    message = one_line_error(capsys)
    assert "scripts/import_checkpoint.py" in message and "corrupt" not in message


@pytest.mark.parametrize("arch_flags", [TINY_MSDNET, TINY_RANET], ids=["msdnet_ge", "ranet"])
def test_an_imported_run_evaluates_to_the_source_models_logits(arch_flags, tmp_path):
    source, model, flags = tiny_source(tmp_path, arch_flags, per_exit=arch_flags is TINY_MSDNET)
    run = tmp_path / "run"
    assert run_import(str(source), "--out", str(run), *flags) == 0
    evaluator_main(
        [
            "--evaluate-from",
            str(run),
            "--evalmode",
            "anytime",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--eval-batch-size",
            "64",
        ]
    )
    cached = list((run / "cache").glob("logits_test_*.pt"))
    assert len(cached) == 1 and (run / "anytime.json").is_file()
    job = parse_args(flags)
    test_set = build_splits(job.data, job.train.use_valid, job.train.seed, None).test
    expected, targets = compute_logits(
        model, eval_loader(test_set, 64, 0, DistInfo(), torch.device("cpu")), torch.device("cpu"), "direct"
    )
    stored = torch.load(cached[0], weights_only=True)
    assert torch.equal(stored["logits"], expected) and torch.equal(stored["targets"], targets)


def test_an_imported_run_with_a_validation_split_gives_every_evaluation_mode(tmp_path):
    source, _, flags = tiny_source(tmp_path, TINY_MSDNET, per_exit=True)
    run = tmp_path / "run"
    assert run_import(str(source), "--out", str(run), *flags, "--use-valid") == 0
    job = parse_args(flags)
    costs = job.model.backbone.cost(job.model.build(), job.model.inputs).macs
    evaluator_main(
        [
            "--evaluate-from",
            str(run),
            "--evalmode",
            "both",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--eval-batch-size",
            "64",
            "--budget",
            str((costs[0] + costs[-1]) / 2),
            "--real-exit",
        ]
    )
    for name in ("split.json", "anytime.json", "budgeted.json", "budget.json", "real_exit.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "real_exit.json").read_text())["accuracy"] >= 0
    plots.main([str(run), "--out", str(tmp_path / "plots")])
    assert (tmp_path / "plots" / "anytime.png").is_file()
    assert (tmp_path / "plots" / "budgeted.png").is_file()


def train(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train_main, list(argv))
    return exit_info.value.code


def test_fine_tuning_from_an_imported_run_trains_and_resumes(tmp_path, capsys):
    source, model, flags = tiny_source(tmp_path, TINY_MSDNET, per_exit=True)
    imported = tmp_path / "imported"
    assert run_import(str(source), "--out", str(imported), *flags) == 0
    tuned = tmp_path / "tuned"
    # --lr must be positive; at 1e-30 one epoch moves no weight by more than 1e-25
    still = ["--lr", "1e-30", "--epochs", "1", "--result_dir", str(tuned), "--init-from", str(imported)]
    assert train(*TINY_MSDNET, *SHORT, *still) == 0
    after = load_checkpoint(tuned / "model_latest.pth")
    assert after["epoch"] == 1
    for key, parameter in model.named_parameters():  # the weights are the imported ones
        torch.testing.assert_close(after["model"][key], parameter.detach(), rtol=0, atol=1e-25)
    moving = ["--epochs", "2", "--result_dir", str(tuned), "--init-from", str(imported), "--resume"]
    assert train(*TINY_MSDNET, *SHORT, *moving) == 0
    assert "resuming after epoch 1" in (tuned / "log.txt").read_text()
    assert load_checkpoint(tuned / "model_latest.pth")["epoch"] == 2

    wrong = ["--epochs", "1", "--result_dir", str(tmp_path / "wrong"), "--init-from", str(imported)]
    capsys.readouterr()
    assert train(*TINY_MSDNET, *SHORT, "--nChannels", "8", *wrong) == 2
    message = one_line_error(capsys)
    assert "--init-from" in message and "stem_layer.scales.0.0.weight has shape (4, 3, 3, 3)" in message


def test_the_original_run_resumes_where_it_stopped(tmp_path):
    source, model, flags = tiny_source(tmp_path, TINY_RANET, per_exit=False)
    run = tmp_path / "run"
    recipe = ["--batch-size", "16", "--epochs", str(SOURCE_EPOCH + 2)]  # the run's own flags
    assert run_import(str(source), "--out", str(run), *flags, *recipe) == 0
    assert train(*TINY_RANET, *SHORT, *recipe, "--result_dir", str(run), "--resume") == 0
    assert f"resuming after epoch {SOURCE_EPOCH + 1}" in (run / "log.txt").read_text()
    assert load_checkpoint(run / "model_latest.pth")["epoch"] == SOURCE_EPOCH + 2


def test_without_optimiser_state_the_import_is_not_resumable(tmp_path, capsys):
    model = randomised(build_model(TINY_MSDNET + DIGITS))
    source = tmp_path / "weights_only.pth.tar"
    torch.save(
        {
            "epoch": 2,
            "arch": "msdnet",
            "state_dict": foreign_weights(model, prefix="module."),
            "best_prec1": torch.tensor(50.0),
        },
        source,
    )
    run = tmp_path / "run"
    assert run_import(str(source), "--out", str(run), *TINY_MSDNET, *DIGITS) == 0
    assert "not resumable (the file holds no optimiser state)" in capsys.readouterr().out
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "imported_from.json", "model_best.pth"]
    note = json.loads((run / "imported_from.json").read_text())
    assert note["source_best_prec1"] == 50.0 and note["format"] == "MSDNet-PyTorch"
